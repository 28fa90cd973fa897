"""Encoding RGB arrays as ROS image messages' payloads: the inverse of core/image_codec.py.

Why a module of its own: only producers need it — tests, the demo drive and benchmarks make frames in
every encoding without a camera — while the nodes only decode.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from .image_codec import (
    _BAYER_TILES,
    _PAD_BYTE,
    _YUV422,
    ImageDecodeError,
    _as_int,
    _canonical_encoding,
    _check_size,
    _compression_of,
)


def _check_rgb(rgb: Any) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        desc = (
            f"{rgb.dtype} array of shape {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        )
        raise ImageDecodeError(f"expected an H×W×3 uint8 RGB array, got {desc}")
    _check_size(rgb.shape[0], rgb.shape[1])
    return np.ascontiguousarray(rgb)  # OpenCV rejects negative strides (e.g. rgb[:, ::-1])


def _rgb_to_yuv422(rgb: np.ndarray, uyvy: bool) -> np.ndarray:
    """RGB → packed 4:2:2 (H×W×2), by OpenCV when it can (recent versions), else numpy BT.601."""
    code_name = "COLOR_RGB2YUV_UYVY" if uyvy else "COLOR_RGB2YUV_YUY2"
    if hasattr(cv2, code_name):
        return cv2.cvtColor(rgb, getattr(cv2, code_name))
    return _rgb_to_yuv422_numpy(rgb, uyvy)


def _rgb_to_yuv422_numpy(rgb: np.ndarray, uyvy: bool) -> np.ndarray:
    """BT.601 limited range (what OpenCV's YUV2RGB_UYVY/YUY2 inverts); chroma averaged per pixel pair."""
    f = rgb.astype(np.float32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 16.0 + 0.256788 * r + 0.504129 * g + 0.097906 * b
    u = 128.0 - 0.148223 * r - 0.290993 * g + 0.439216 * b
    v = 128.0 + 0.439216 * r - 0.367788 * g - 0.071427 * b
    u = (u[:, 0::2] + u[:, 1::2]) * 0.5
    v = (v[:, 0::2] + v[:, 1::2]) * 0.5
    out = np.empty((*rgb.shape[:2], 2), np.uint8)
    luma, chroma = (1, 0) if uyvy else (0, 1)
    out[..., luma] = np.clip(np.rint(y), 0, 255)
    out[:, 0::2, chroma] = np.clip(np.rint(u), 0, 255)
    out[:, 1::2, chroma] = np.clip(np.rint(v), 0, 255)
    return out


def encode_raw(
    rgb: np.ndarray,
    encoding: str,
    *,
    step_padding: int = 0,
    is_bigendian: bool = False,
) -> tuple[bytes, int]:
    """Build the (data, step) of a sensor_msgs/Image in ``encoding`` from an H×W×3 uint8 RGB array.

    The inverse of decode_raw, so tests, the demo and benchmarks can produce frames in every encoding
    without a camera. ``step_padding`` extra bytes (filled with 0xA5) end each row, like drivers that
    align rows. mono16 is grey * 257 (255 → 65535), in the byte order ``is_bigendian`` asks for; Bayer
    mosaics keep, per pixel, the channel the tile puts there.
    """
    rgb = _check_rgb(rgb)
    enc = _canonical_encoding(encoding)
    step_padding = _as_int("step_padding", step_padding)
    if step_padding < 0:
        raise ImageDecodeError(f"step_padding must be >= 0, got {step_padding}")
    height, width = rgb.shape[:2]
    if enc in _YUV422 and width % 2:
        raise ImageDecodeError(f"{enc} needs an even width (two pixels share chroma), got width {width}")
    if enc == "rgb8":
        pixels = rgb
    elif enc == "bgr8":
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    elif enc == "rgba8":
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)
    elif enc == "bgra8":
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
    elif enc == "mono8":
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    elif enc == "mono16":
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(">u2" if is_bigendian else "<u2") * 257
        pixels = grey.view(np.uint8)
    elif enc in _YUV422:
        pixels = _rgb_to_yuv422(rgb, uyvy=enc == "yuv422")
    else:
        (c00, c01), (c10, c11) = _BAYER_TILES[enc]
        pixels = np.empty((height, width), np.uint8)
        pixels[0::2, 0::2] = rgb[0::2, 0::2, c00]
        pixels[0::2, 1::2] = rgb[0::2, 1::2, c01]
        pixels[1::2, 0::2] = rgb[1::2, 0::2, c10]
        pixels[1::2, 1::2] = rgb[1::2, 1::2, c11]
    rows = np.ascontiguousarray(pixels).reshape(height, -1)
    if step_padding == 0:
        return rows.tobytes(), rows.shape[1]
    step = rows.shape[1] + step_padding
    padded = np.full((height, step), _PAD_BYTE, np.uint8)
    padded[:, : rows.shape[1]] = rows
    return padded.tobytes(), step


def encode_compressed(rgb: np.ndarray, format: str = "jpeg", quality: int = 95) -> bytes:
    """Encode an H×W×3 uint8 RGB array as CompressedImage bytes ("jpeg"/"jpg" or "png").

    ROS-style formats ("rgb8; jpeg compressed bgr8") are accepted; the part after ';' picks the codec.
    ``quality`` (0..100) applies to JPEG only; PNG is lossless and uses OpenCV's default compression.
    """
    rgb = _check_rgb(rgb)
    fmt = _compression_of(format)
    words = fmt.split(";")[-1].lower().split()
    if "jpeg" in words or "jpg" in words:
        ext = ".jpg"
    elif "png" in words:
        ext = ".png"
    else:
        raise ImageDecodeError(f"unsupported compressed format '{format}' (use 'jpeg' or 'png')")
    quality = _as_int("quality", quality)
    if not 0 <= quality <= 100:
        raise ImageDecodeError(f"quality must be in 0..100, got {quality}")
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == ".jpg" else []
    ok, encoded = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ImageDecodeError(f"OpenCV could not encode a {rgb.shape[1]}x{rgb.shape[0]} image as {ext}")
    return encoded.tobytes()
