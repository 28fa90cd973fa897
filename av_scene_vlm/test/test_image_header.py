"""Sizes read from compressed headers (core.image_header) and the frame-size limits of the codec
(max_pixels, check_raw_fields, check_compressed): ROS-free, against real OpenCV and Pillow."""

from __future__ import annotations

import io
import time

import cv2
import numpy as np
import pytest
from av_scene_vlm.core.image_codec import (
    DEFAULT_MAX_FRAME_PIXELS,
    ImageDecodeError,
    check_compressed,
    check_raw_fields,
    decode_compressed,
    decode_raw,
)
from av_scene_vlm.core.image_encode import encode_compressed, encode_raw
from av_scene_vlm.core.image_header import MAX_JPEG_MARKERS, HeaderError, compressed_image_size
from hostile_frames import hostile_all, jpeg_claiming, png_claiming, proc_status_kib, reset_peak_rss


def _u8(data: bytes) -> np.ndarray:
    return np.frombuffer(data, np.uint8)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)


def _cv2_encode(rgb: np.ndarray, ext: str, params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params or [])
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("size", [(1, 1), (7, 300), (480, 640), (1080, 1920)])
@pytest.mark.parametrize(
    "kind",
    ["jpeg", "jpeg_progressive", "jpeg_grey", "png", "png_grey", "png16", "tiff", "webp", "bmp"],
)
def test_header_size_is_the_decoded_size(kind: str, size: tuple[int, int]) -> None:
    h, w = size
    rgb = _image(h, w, seed=h + w)
    if kind == "jpeg":
        data = _cv2_encode(rgb, ".jpg")
    elif kind == "jpeg_progressive":
        data = _cv2_encode(rgb, ".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    elif kind == "jpeg_grey":
        data = _cv2_encode(cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB), ".jpg")
    elif kind == "png_grey":
        data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))[1].tobytes()
    elif kind == "png16":
        data = cv2.imencode(".png", rgb.astype(np.uint16) * 257)[1].tobytes()
    else:
        data = _cv2_encode(rgb, "." + kind.replace("jpeg", "jpg"))
    fmt, width, height = compressed_image_size(_u8(data))
    assert fmt == kind.split("_")[0].replace("png16", "png") and (height, width) == (h, w)
    assert check_compressed("x", data) == (w, h)
    assert decode_compressed("x", data).shape == (h, w, 3)


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def test_jpeg_walk_tolerates_what_libjpeg_tolerates() -> None:
    """APPn/COM segments (EXIF with a thumbnail inside), 0xFF fill bytes and stray bytes before a
    marker: the size is still the frame header's, and OpenCV decodes the same frame."""
    rgb = _image(30, 50, seed=3)
    jpeg = _cv2_encode(rgb, ".jpg")
    thumb = _cv2_encode(_image(300, 200, seed=4), ".jpg")  # an embedded JPEG with another SOF
    extra = _segment(0xE1, b"Exif\x00\x00" + thumb[:60000]) + _segment(0xFE, b"comment") + b"\xff\xff\xff"
    first = 4 + int.from_bytes(jpeg[4:6], "big")  # end of the first segment (APP0)
    for data in (jpeg[:2] + extra + jpeg[2:], jpeg[:first] + b"\x00\x13\x37" + jpeg[first:]):
        assert compressed_image_size(_u8(data)) == ("jpeg", 50, 30)
        assert decode_compressed("jpeg", data).shape == (30, 50, 3)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xd8\xff\xd9", "no frame header"),
        (b"\xff\xd8\xff\xda\x00\x02", "scan data before its frame header"),
        (b"\xff\xd8\xff\xe0\x00", "ends inside a marker segment"),
        (b"\xff\xd8\xff\xe0\x00\x01", "invalid length 1"),
        (b"\xff\xd8\xff\xc0\x00\x11\x08\x00", "ends inside its frame header"),
        (b"\xff\xd8\xff" + b"\x00" * 1000, "ends before its frame header"),
        (b"\xff\xd8" + b"\xff" * 1000, "ends before its frame header"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHD", "ends before its IHDR"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIDAT" + bytes(8), "does not start with an IHDR"),
        (b"\x00" * 64, "not JPEG or PNG"),
    ],
)
def test_unreadable_headers(data: bytes, message: str) -> None:
    with pytest.raises(HeaderError, match=message):
        compressed_image_size(_u8(data))
    with pytest.raises(ImageDecodeError, match="corrupt or unsupported compressed image"):
        check_compressed("jpeg", data)


def test_jpeg_walk_is_bounded() -> None:
    """Thousands of empty segments before the frame header are refused after MAX_JPEG_MARKERS, and a
    megabyte of junk is skipped by numpy, not byte by byte: both take milliseconds."""
    many = b"\xff\xd8" + _segment(0xFE, b"") * (MAX_JPEG_MARKERS + 10) + _cv2_encode(_image(8, 8), ".jpg")[2:]
    junk = b"\xff\xd8\xff\xe0\x00\x02" + bytes(1 << 20)
    t0 = time.perf_counter()
    with pytest.raises(HeaderError, match=f"more than {MAX_JPEG_MARKERS} markers"):
        compressed_image_size(_u8(many))
    with pytest.raises(HeaderError, match="ends before"):
        compressed_image_size(_u8(junk))
    assert time.perf_counter() - t0 < 1.0


def test_pillow_decompression_bomb_is_refused() -> None:
    """A format Pillow reads (BMP) whose header claims 100 000 x 100 000 pixels."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "BMP")
    data = bytearray(buf.getvalue())
    data[18:22] = (100_000).to_bytes(4, "little")
    data[22:26] = (100_000).to_bytes(4, "little")
    with pytest.raises(ImageDecodeError, match="too many pixels"):
        decode_compressed("bmp", bytes(data))


def test_max_pixels_limits_every_decoder() -> None:
    rgb = _image(40, 50)
    data, step = encode_raw(rgb, "rgb8")
    assert decode_raw("rgb8", 40, 50, step, 0, data, max_pixels=2000).shape == (40, 50, 3)
    with pytest.raises(ImageDecodeError, match=r"50x40 = 2,000 pixels exceeds max_frame_pixels 1,999"):
        decode_raw("rgb8", 40, 50, step, 0, data, max_pixels=1999)
    for fmt in ("jpeg", "png"):
        comp = encode_compressed(rgb, fmt)
        assert check_compressed(fmt, comp, max_pixels=2000) == (50, 40)
        with pytest.raises(ImageDecodeError, match=rf"{fmt.upper()} header: image size 50x40 = 2,000 pixels"):
            decode_compressed(fmt, comp, max_pixels=1999)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ImageDecodeError, match="max_pixels"):
            decode_raw("rgb8", 40, 50, step, 0, data, max_pixels=bad)
    assert DEFAULT_MAX_FRAME_PIXELS >= 8192 * 4320  # 8K cameras pass by default


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ((30000, 30000, 90000, bytes(16)), "exceeds 16384 pixels per side"),
        ((16000, 16000, 48000, bytes(16)), "256,000,000 pixels exceeds max_frame_pixels"),
        ((1000, 1000, 2**31, bytes(16)), r"data has 16 bytes, expected at least 2147483648000"),
        ((4, 8, 7, bytes(100)), "step 7 < width 8"),
        ((0, 8, 24, b""), "zero or negative"),
        ((4, 8, 24, np.zeros(48, np.uint16)), "1-byte items"),
        ((4, 8, 24, "text"), "bytes-like"),
    ],
)
def test_check_raw_fields(fields: tuple, message: str) -> None:
    with pytest.raises(ImageDecodeError, match=message):
        check_raw_fields(*fields)


def test_check_raw_fields_accepts_what_decode_raw_decodes() -> None:
    """Encoding-free, so frames of encodings only cv_bridge knows pass it; decode_raw checks the rest."""
    import array

    data, step = encode_raw(_image(6, 10), "bgr8", step_padding=3)
    for container in (data, bytearray(data), memoryview(data), array.array("B", data), _u8(data), list(data)):
        check_raw_fields(6, 10, step, container)
    check_raw_fields(6, 10, 10 * 6, bytes(6 * 60))  # e.g. rgb16: not known to decode_raw, fine here


def test_hostile_frames_allocate_nothing_large() -> None:
    """Every hostile frame is refused, and this process's peak RSS stays where it was (main decoded
    the 30,000 x 30,000 JPEG into 2.7 GB before refusing it)."""
    frames = hostile_all()
    for h in frames:  # warm up whatever the first call loads
        with pytest.raises(ImageDecodeError):
            decode_compressed(h.format, h.data) if h.compressed else decode_raw(
                h.encoding, h.height, h.width, h.step, 0, h.data
            )
    reset_peak_rss()
    before = proc_status_kib("self", "VmHWM")
    for _ in range(20):
        for h in frames:
            with pytest.raises(ImageDecodeError):
                if h.compressed:
                    decode_compressed(h.format, h.data)
                else:
                    decode_raw(h.encoding, h.height, h.width, h.step, 0, h.data)
    assert (proc_status_kib("self", "VmHWM") - before) / 1024 < 50


def test_claiming_helpers_make_what_they_say() -> None:
    assert compressed_image_size(_u8(jpeg_claiming(30000, 20000))) == ("jpeg", 30000, 20000)
    assert compressed_image_size(_u8(png_claiming(30000, 20000))) == ("png", 30000, 20000)
    # the PNG's CRC is right, so only the size stops a decoder
    assert cv2.imdecode(_u8(png_claiming(16, 16)), cv2.IMREAD_COLOR).shape == (16, 16, 3)
