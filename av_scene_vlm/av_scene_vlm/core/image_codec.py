"""Decode ROS image payloads (sensor_msgs/Image, CompressedImage fields) into H×W×3 uint8 RGB arrays.

Why it exists, and why it is ROS-free: the nodes, the bag tool and the benchmarks all need the same
decoder, and cv_bridge is not installable everywhere (nor needed: OpenCV does the colour maths). The
functions take the raw message *fields* (encoding, height, width, step, is_bigendian, data) instead of a
message object, so the node, rosbags-based tools and tests share one tested code path without rclpy.

Conventions (ros-perception/vision_opencv cv_bridge, sensor_msgs image_encodings):
- ``step`` is the byte length of one row and may exceed ``width * bytes_per_pixel`` (row padding, which
  is dropped); ``len(data)`` must be at least ``height * step``. Extra bytes past ``height * step`` are
  ignored (some drivers over-allocate); cv_bridge would reject them, we prefer to show the frame.
- ``yuv422`` is UYVY byte order, ``yuv422_yuy2`` is YUYV.
- Bayer names describe the sensor's 2×2 tile from the top-left pixel (``bayer_rggb8``: row 0 is R G,
  row 1 is G B). OpenCV's legacy ``COLOR_Bayer??2RGB`` names are shifted by one pixel, so cv_bridge maps
  ``bayer_rggb8`` → ``COLOR_BayerBG2RGB``, ``bayer_bggr8`` → ``COLOR_BayerRG2RGB``, ``bayer_gbrg8`` →
  ``COLOR_BayerGR2RGB`` and ``bayer_grbg8`` → ``COLOR_BayerGB2RGB`` (cv_bridge/src/cv_bridge.cpp,
  ``getConversionCodes``). OpenCV ≥ 4.x also has the self-describing aliases (``COLOR_BayerRGGB2RGB`` ==
  ``COLOR_BayerBG2RGB``); the legacy names are used because they exist in every supported OpenCV.

Every bad input raises ``ImageDecodeError`` (a ``ValueError``) whose message says what is wrong, so a
node can log it and drop the frame without catching broad exception types.

Hostile frames (a few bytes whose fields or header claim gigabytes) are refused before any large
allocation: every decoder checks ``width * height`` against ``max_pixels`` (default
``DEFAULT_MAX_FRAME_PIXELS``, 8K with headroom) and, for compressed data, reads the size from the
header first (``image_header``). ``check_raw_fields`` / ``check_compressed`` make the same size checks
in O(1) / O(header) without decoding, for a subscription callback that must stay cheap.
"""

from __future__ import annotations

import array
import operator
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from .image_header import DEFAULT_MAX_FRAME_PIXELS, HeaderError, compressed_image_size

__all__ = [
    "DEFAULT_MAX_FRAME_PIXELS",
    "SUPPORTED_ENCODINGS",
    "ImageDecodeError",
    "check_compressed",
    "check_max_pixels",
    "check_raw_fields",
    "decode_compressed",
    "decode_raw",
]

_ByteData = bytes | bytearray | memoryview | np.ndarray | array.array | Sequence[int]

# Larger sides are almost certainly a corrupt header; refusing them avoids multi-GiB allocations.
_MAX_SIDE = 16384
# Filler for row padding written by encode_raw: non-zero, so a decoder that leaks padding into the
# image is caught by the tests.
_PAD_BYTE = 0xA5


class ImageDecodeError(ValueError):
    """The image fields or bytes are invalid or unsupported; the message says what is wrong."""


# encoding -> (bytes per pixel, OpenCV conversion to RGB or None for "already RGB" / special-cased)
_LAYOUT: dict[str, tuple[int, int | None]] = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
    "mono16": (2, None),
    "yuv422": (2, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": (2, cv2.COLOR_YUV2RGB_YUY2),
    # cv_bridge's mapping (see module docstring): the OpenCV legacy name is shifted by one pixel.
    "bayer_rggb8": (1, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": (1, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": (1, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": (1, cv2.COLOR_BayerGB2RGB),
}

SUPPORTED_ENCODINGS: frozenset[str] = frozenset(_LAYOUT)
"""Canonical sensor_msgs encodings decode_raw/encode_raw accept (case-sensitive, like ROS).

Aliases cv_bridge users meet are accepted too: "8UC1" (mono8), "8UC3" (bgr8, OpenCV's default order),
"8UC4" (bgra8), "16UC1" (mono16), "uyvy" (yuv422) and "yuyv" (yuv422_yuy2).
"""

_ALIASES: dict[str, str] = {
    "8UC1": "mono8",
    "8UC3": "bgr8",
    "8UC4": "bgra8",
    "16UC1": "mono16",
    "uyvy": "yuv422",
    "yuyv": "yuv422_yuy2",
}

_YUV422 = frozenset({"yuv422", "yuv422_yuy2"})

# Bayer tile layout: which RGB channel sits at (row % 2, col % 2) for each encoding.
_BAYER_TILES: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "bayer_rggb8": ((0, 1), (1, 2)),
    "bayer_bggr8": ((2, 1), (1, 0)),
    "bayer_gbrg8": ((1, 2), (0, 1)),
    "bayer_grbg8": ((1, 0), (2, 1)),
}


def _canonical_encoding(encoding: Any) -> str:
    """Map an encoding string (or alias) to its canonical name, or explain why it is not supported."""
    if not isinstance(encoding, str):
        raise ImageDecodeError(f"encoding must be a string, got {type(encoding).__name__}")
    name = encoding.strip()
    if not name:
        raise ImageDecodeError("encoding is empty")
    name = _ALIASES.get(name, name)
    if name in _LAYOUT:
        return name
    hint = ""
    lowered = name.lower()
    if lowered in _LAYOUT or lowered in _ALIASES:
        hint = f"; encodings are case-sensitive, did you mean '{_ALIASES.get(lowered, lowered)}'?"
    raise ImageDecodeError(
        f"unknown encoding '{encoding}' (supported: {', '.join(sorted(_LAYOUT))}; "
        f"aliases: {', '.join(sorted(_ALIASES))}){hint}"
    )


def _as_int(name: str, value: Any) -> int:
    """Accept Python/numpy integers only: a float or bool size means the caller mixed up fields."""
    if isinstance(value, bool | np.bool_):
        raise ImageDecodeError(f"{name} must be an integer, got bool")
    try:
        return operator.index(value)
    except TypeError:
        raise ImageDecodeError(f"{name} must be an integer, got {type(value).__name__}") from None


def _check_size(height: int, width: int, max_pixels: int | None = None) -> None:
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"width/height is zero or negative (height {height}, width {width})")
    if height > _MAX_SIDE or width > _MAX_SIDE:
        raise ImageDecodeError(
            f"image size {width}x{height} exceeds {_MAX_SIDE} pixels per side (corrupt header?)"
        )
    if max_pixels is not None and height * width > max_pixels:
        raise ImageDecodeError(
            f"image size {width}x{height} = {height * width:,} pixels exceeds max_frame_pixels "
            f"{max_pixels:,} (corrupt header, or raise the limit)"
        )


def check_max_pixels(max_pixels: Any) -> int:
    """``max_pixels`` as a positive int, or ImageDecodeError (a ValueError) saying why not."""
    value = _as_int("max_pixels", max_pixels)
    if value < 1:
        raise ImageDecodeError(f"max_pixels must be >= 1, got {value}")
    return value


def _byte_length(data: Any) -> int:
    """len(data) in bytes without copying or converting it (O(1) for buffers), with the checks of
    ``_as_bytes`` that need no pass over the values (1-byte items, bytes-like)."""
    if data is None or isinstance(data, str):
        raise ImageDecodeError(f"data must be bytes-like, got {type(data).__name__}")
    if isinstance(data, list | tuple):
        return len(data)
    if isinstance(data, np.ndarray):
        itemsize = data.dtype.itemsize
        size = data.size
    else:
        try:
            view = memoryview(data)
        except TypeError as exc:
            raise ImageDecodeError(f"data must be bytes-like, got {type(data).__name__}: {exc}") from None
        itemsize, size = view.itemsize, view.nbytes // max(1, view.itemsize)
    if itemsize != 1:
        raise ImageDecodeError("data must be a byte buffer (1-byte items); view it as uint8 first")
    return size


def check_raw_fields(
    height: int, width: int, step: int, data: _ByteData, *, max_pixels: int = DEFAULT_MAX_FRAME_PIXELS
) -> None:
    """The size checks of ``decode_raw`` that need no encoding, in O(1): sides and pixel count within
    limits, at least one byte per pixel in a row, and ``height * step`` bytes present.

    Why encoding-free: a subscription callback runs this on every message to drop hostile frames
    before they take a camera's slot, and cv_bridge (where installed) decodes encodings this codec
    does not know; ``decode_raw`` makes the full checks when the frame is decoded.
    """
    height, width, step = _as_int("height", height), _as_int("width", width), _as_int("step", step)
    _check_size(height, width, check_max_pixels(max_pixels))
    if step < width:
        raise ImageDecodeError(f"step {step} < width {width}")
    size = _byte_length(data)
    if size < height * step:
        raise ImageDecodeError(
            f"data has {size} bytes, expected at least {height * step} (height {height} * step {step})"
        )


def _as_bytes(data: Any) -> np.ndarray:
    """View ``data`` as a 1-D uint8 array without copying when it already is a contiguous byte buffer.

    Buffers (bytes, bytearray, memoryview, array.array, numpy arrays) must have 1-byte items, so a
    uint16 array is never silently reinterpreted; lists/tuples are taken as byte values 0..255.
    """
    if data is None or isinstance(data, str):
        raise ImageDecodeError(f"data must be bytes-like, got {type(data).__name__}")
    if isinstance(data, np.ndarray):
        arr = data
    elif isinstance(data, list | tuple):
        try:
            arr = np.asarray(data)
        except (ValueError, TypeError) as exc:
            raise ImageDecodeError(f"data list is not a flat list of byte values: {exc}") from None
        if arr.size == 0:
            return np.empty(0, np.uint8)
        if arr.dtype.kind not in "iu" or arr.ndim != 1:
            raise ImageDecodeError(f"data list must hold integers 0..255, got dtype {arr.dtype}")
        if int(arr.min()) < 0 or int(arr.max()) > 255:
            raise ImageDecodeError("data list holds values outside 0..255")
        return arr.astype(np.uint8)
    else:
        try:
            arr = np.asarray(memoryview(data))
        except (TypeError, ValueError) as exc:
            raise ImageDecodeError(f"data must be bytes-like, got {type(data).__name__}: {exc}") from None
    if arr.dtype.itemsize != 1 or arr.dtype.kind not in "uiS":
        raise ImageDecodeError(
            f"data must be a byte buffer (1-byte items), got dtype {arr.dtype}; view it as uint8 first"
        )
    arr = arr.reshape(-1)  # copies only for non-contiguous input
    return arr if arr.dtype == np.uint8 else arr.view(np.uint8)


def decode_raw(
    encoding: str,
    height: int,
    width: int,
    step: int,
    is_bigendian: bool | int,
    data: _ByteData,
    *,
    max_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
) -> np.ndarray:
    """Decode sensor_msgs/Image fields into a new C-contiguous H×W×3 uint8 RGB array.

    One OpenCV conversion reads straight from a strided view of ``data`` (row padding is skipped by the
    view, not copied), so the cost is one pass over the pixels. The result never aliases ``data``.
    ``data`` longer than ``height * step`` is accepted and its tail ignored; shorter data is an error.

    mono16 is reduced to 8 bit by taking the high byte (value >> 8): cv_bridge's 16→8 bit conversion
    scales by 255/65535 (≈1/256, within one grey level), and cv2.imdecode reduces 16-bit PNGs by >> 8,
    so raw and compressed 16-bit frames look the same. ``is_bigendian`` only matters for mono16; the
    high byte is picked by position (byte 0 for big-endian, byte 1 for little-endian), which is the
    byte swap done without a swap and is independent of the host's byte order.

    Every size is checked before anything is allocated: a frame of more than ``max_pixels`` pixels, or
    whose data is shorter than ``height * step``, raises ImageDecodeError.
    """
    enc = _canonical_encoding(encoding)
    height = _as_int("height", height)
    width = _as_int("width", width)
    step = _as_int("step", step)
    if not isinstance(is_bigendian, bool | int | np.integer | np.bool_):
        raise ImageDecodeError(f"is_bigendian must be a bool or int, got {type(is_bigendian).__name__}")
    _check_size(height, width, check_max_pixels(max_pixels))
    bpp, code = _LAYOUT[enc]
    if enc in _YUV422 and width % 2:
        raise ImageDecodeError(f"{enc} needs an even width (two pixels share chroma), got width {width}")
    row_bytes = width * bpp
    if step < row_bytes:
        raise ImageDecodeError(
            f"step {step} < width*bytes_per_pixel {row_bytes} (width {width} * {bpp} for {enc})"
        )
    buf = _as_bytes(data)
    needed = height * step
    if buf.size < needed:
        raise ImageDecodeError(
            f"data has {buf.size} bytes, expected at least {needed} (height {height} * step {step})"
        )
    rows = buf[:needed].reshape(height, step)[:, :row_bytes]
    pixels = rows if bpp == 1 else rows.reshape(height, width, bpp)
    try:
        if enc == "rgb8":
            out = pixels.copy()
        elif enc == "mono16":
            high = cv2.extractChannel(pixels, 0 if is_bigendian else 1)
            out = cv2.cvtColor(high, cv2.COLOR_GRAY2RGB)
        else:
            out = cv2.cvtColor(pixels, code)
    except cv2.error as exc:  # defensive: sizes are validated above, so this should not happen
        raise ImageDecodeError(f"OpenCV could not convert {enc} {width}x{height}: {exc}") from None
    return np.ascontiguousarray(out)


def _compression_of(format: Any) -> str:
    """Return the stripped CompressedImage format, rejecting depth formats (not colour images)."""
    if not isinstance(format, str):
        raise ImageDecodeError(f"format must be a string, got {type(format).__name__}")
    fmt = format.strip()
    if "compresseddepth" in fmt.lower():
        raise ImageDecodeError(f"compressedDepth is not a colour image (format '{format}')")
    return fmt


def check_compressed(
    format: str, data: _ByteData, *, max_pixels: int = DEFAULT_MAX_FRAME_PIXELS
) -> tuple[int, int]:
    """(width, height) of CompressedImage bytes read from the header only, checked against the side
    and ``max_pixels`` limits; ImageDecodeError when too large or no size can be read. Cost: the
    header (a few markers), never the pixels."""
    return _compressed_size(_compression_of(format), _as_bytes(data), check_max_pixels(max_pixels))


def _compressed_size(fmt: str, buf: np.ndarray, max_pixels: int) -> tuple[int, int]:
    if buf.size == 0:
        raise ImageDecodeError(f"compressed image data is empty (format '{fmt}')")
    try:
        kind, width, height = compressed_image_size(buf)
    except HeaderError as exc:
        raise ImageDecodeError(f"corrupt or unsupported compressed image (format '{fmt}'): {exc}") from None
    try:
        _check_size(height, width, max_pixels)
    except ImageDecodeError as exc:
        raise ImageDecodeError(f"{kind.upper()} header: {exc}") from None
    return width, height


def decode_compressed(
    format: str, data: _ByteData, *, max_pixels: int = DEFAULT_MAX_FRAME_PIXELS
) -> np.ndarray:
    """Decode sensor_msgs/CompressedImage bytes (JPEG, PNG; other formats whose size Pillow reads from
    their header) to H×W×3 RGB.

    The bytes are a standard JPEG/PNG whatever the format's first part says ("rgb8; jpeg compressed
    bgr8" is still an ordinary JPEG), so decoding goes by content and ``format`` is only validated and
    quoted in errors. Grey and 16-bit images become 8-bit RGB (16-bit by >> 8), alpha is dropped.
    The size is read from the header and checked (``check_compressed``) before OpenCV, which would
    allocate whatever the header claims, sees the data.
    """
    fmt = _compression_of(format)
    buf = _as_bytes(data)
    _compressed_size(fmt, buf, check_max_pixels(max_pixels))
    try:
        if hasattr(cv2, "IMREAD_COLOR_RGB"):  # recent OpenCV decodes straight to RGB, saving a pass
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR_RGB)
        else:
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
            if img is not None:
                img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    except cv2.error:
        img = None
    if img is None or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ImageDecodeError(f"corrupt or unsupported compressed image (format '{fmt}')")
    _check_size(img.shape[0], img.shape[1], max_pixels)
    return np.ascontiguousarray(img)
