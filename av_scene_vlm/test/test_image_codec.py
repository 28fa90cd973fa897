"""Tests for core.image_codec against real OpenCV conversions (no mocks).

The reference decoder below is written independently of the module: contiguous copies, explicit
byte order, and OpenCV's cvtColor with the conversion codes that ROS's cv_bridge uses (its
getConversionCodes() table, transcribed here). cv_bridge itself is not installable in this
environment, so it is never run: "cv_bridge" below names the convention, OpenCV does the work.
"""

from __future__ import annotations

import array
import subprocess
import sys

import cv2
import numpy as np
import pytest
from av_scene_vlm.core.image_codec import (
    SUPPORTED_ENCODINGS,
    ImageDecodeError,
    decode_compressed,
    decode_raw,
)
from av_scene_vlm.core.image_encode import encode_compressed, encode_raw

ENCODINGS = sorted(SUPPORTED_ENCODINGS)
BYTES_PER_PIXEL = {
    "rgb8": 3,
    "bgr8": 3,
    "rgba8": 4,
    "bgra8": 4,
    "mono8": 1,
    "mono16": 2,
    "yuv422": 2,
    "yuv422_yuy2": 2,
    "bayer_rggb8": 1,
    "bayer_bggr8": 1,
    "bayer_gbrg8": 1,
    "bayer_grbg8": 1,
}
ALIASES = {"8UC1": "mono8", "8UC3": "bgr8", "8UC4": "bgra8", "16UC1": "mono16", "uyvy": "yuv422"}
ALIASES["yuyv"] = "yuv422_yuy2"
# cv_bridge/src/cv_bridge.cpp getConversionCodes(): ROS Bayer names map to OpenCV's shifted names.
CV_BRIDGE_BAYER = {
    "bayer_rggb8": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
}
OTHER_CODES = {
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
    "yuv422": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2,
}
# (height, width): odd sizes, single rows/columns; even widths where yuv422 needs them.
SIZES = [(7, 300), (5, 2), (1, 4), (3, 1), (16, 10)]


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _smooth(height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([40 + 150 * xx / width, 60 + 120 * yy / height, 200 - 100 * xx / width], axis=-1)
    return np.rint(img).astype(np.uint8)


def _reference(encoding: str, data: bytes, height: int, width: int, step: int, big: bool) -> np.ndarray:
    """OpenCV's own conversion of the same bytes, from contiguous copies of the unpadded rows."""
    bpp = BYTES_PER_PIXEL[encoding]
    rows = np.frombuffer(data, np.uint8)[: height * step].reshape(height, step)[:, : width * bpp].copy()
    if encoding == "rgb8":
        return rows.reshape(height, width, 3)
    if encoding == "mono16":
        values = rows.view(">u2" if big else "<u2").astype(np.uint16)
        return cv2.cvtColor((values >> 8).astype(np.uint8), cv2.COLOR_GRAY2RGB)
    if encoding in CV_BRIDGE_BAYER:
        return cv2.cvtColor(rows, CV_BRIDGE_BAYER[encoding])
    pixels = rows if bpp == 1 else rows.reshape(height, width, bpp)
    return cv2.cvtColor(pixels, OTHER_CODES[encoding])


def _grey3(rgb: np.ndarray) -> np.ndarray:
    return np.repeat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)


# --------------------------------------------------------------------------------------- decode_raw


@pytest.mark.parametrize("padding", [0, 7, 1])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_decode_raw_matches_opencv_on_same_bytes(encoding: str, size: tuple[int, int], padding: int) -> None:
    height, width = size
    if encoding.startswith("yuv422") and width % 2:
        width += 1  # two pixels share chroma; odd widths are tested as errors
    rgb = _image(height, width, seed=height * 1000 + width)
    data, step = encode_raw(rgb, encoding, step_padding=padding)
    assert step == width * BYTES_PER_PIXEL[encoding] + padding
    assert len(data) == height * step

    out = decode_raw(encoding, height, width, step, False, data)

    assert out.shape == (height, width, 3)
    assert out.dtype == np.uint8
    assert out.flags.c_contiguous and out.flags.writeable
    np.testing.assert_array_equal(out, _reference(encoding, data, height, width, step, False))


@pytest.mark.parametrize("padding", [0, 5])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_encodings_roundtrip_exactly(encoding: str, padding: int) -> None:
    rgb = _image(7, 300, seed=1)
    data, step = encode_raw(rgb, encoding, step_padding=padding)
    np.testing.assert_array_equal(decode_raw(encoding, 7, 300, step, 0, data), rgb)


def test_bgr8_is_channel_swapped_rgb() -> None:
    rgb = _image(4, 6, seed=2)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    out = decode_raw("bgr8", 4, 6, 18, False, bgr.tobytes())
    np.testing.assert_array_equal(out, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("encoding", ["mono8", "mono16"])
def test_mono_decodes_to_grey_rgb(encoding: str) -> None:
    rgb = _image(7, 300, seed=3)
    data, step = encode_raw(rgb, encoding, step_padding=3)
    np.testing.assert_array_equal(decode_raw(encoding, 7, 300, step, False, data), _grey3(rgb))


@pytest.mark.parametrize("padding", [0, 1, 7])
def test_mono16_big_and_little_endian_give_same_image(padding: int) -> None:
    height, width = 7, 301
    # encode_raw's grey * 257 has equal high and low bytes, so it cannot tell the orders apart:
    # use arbitrary 16-bit values, laid out by hand in both byte orders with odd/even row padding.
    values = np.random.default_rng(4).integers(0, 65536, (height, width)).astype(np.uint16)
    step = 2 * width + padding
    frames = {}
    for big, dtype in ((False, "<u2"), (True, ">u2")):
        rows = np.full((height, step), 0xA5, np.uint8)
        rows[:, : 2 * width] = values.astype(dtype).view(np.uint8).reshape(height, 2 * width)
        frames[big] = rows.tobytes()
    assert frames[False] != frames[True]
    out_l = decode_raw("mono16", height, width, step, False, frames[False])
    out_b = decode_raw("mono16", height, width, step, True, frames[True])
    np.testing.assert_array_equal(out_l, out_b)
    np.testing.assert_array_equal(out_l[:, :, 0], (values >> 8).astype(np.uint8))
    # rclpy hands is_bigendian over as an int
    np.testing.assert_array_equal(decode_raw("mono16", height, width, step, 1, frames[True]), out_b)
    # encode_raw honours the flag too (round trip through both orders)
    rgb = _image(height, width, seed=4)
    for big in (False, True):
        data, step = encode_raw(rgb, "mono16", step_padding=padding, is_bigendian=big)
        np.testing.assert_array_equal(decode_raw("mono16", height, width, step, big, data), _grey3(rgb))


def test_mono16_takes_high_byte_of_the_declared_byte_order() -> None:
    values = np.array([[0x1234, 0xFF01, 0x00FF, 0x8000]], dtype=np.uint16)
    big = decode_raw("mono16", 1, 4, 8, True, values.astype(">u2").tobytes())
    little = decode_raw("mono16", 1, 4, 8, False, values.astype("<u2").tobytes())
    np.testing.assert_array_equal(big[0, :, 0], [0x12, 0xFF, 0x00, 0x80])
    np.testing.assert_array_equal(little, big)
    # Within one grey level of cv_bridge's 16->8 bit scaling (255/65535).
    every = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    out = decode_raw("16UC1", 256, 256, 512, False, every.astype("<u2").tobytes())[:, :, 0]
    assert np.abs(out.astype(int) - np.rint(every * (255 / 65535))).max() <= 1


@pytest.mark.parametrize("encoding", sorted(CV_BRIDGE_BAYER))
def test_bayer_mapping_follows_cv_bridge_and_opencv_aliases(encoding: str) -> None:
    """The reference's cv_bridge codes mean the pattern the ROS name spells: on a flat-colour mosaic
    laid out by hand, OpenCV decodes them to that colour; and they equal OpenCV's self-describing
    names (present in every OpenCV this project pins; a missing name fails, it is not skipped)."""
    alias = {
        "bayer_rggb8": "COLOR_BayerRGGB2RGB",
        "bayer_bggr8": "COLOR_BayerBGGR2RGB",
        "bayer_gbrg8": "COLOR_BayerGBRG2RGB",
        "bayer_grbg8": "COLOR_BayerGRBG2RGB",
    }[encoding]
    colour = {"r": 200, "g": 100, "b": 30}
    mosaic = np.empty((8, 10), np.uint8)
    for i, letter in enumerate(encoding[len("bayer_") : len("bayer_") + 4]):
        mosaic[i // 2 :: 2, i % 2 :: 2] = colour[letter]
    out = cv2.cvtColor(mosaic, CV_BRIDGE_BAYER[encoding])
    np.testing.assert_array_equal(out[2:-2, 2:-2], np.broadcast_to([200, 100, 30], (4, 6, 3)))
    assert hasattr(cv2, alias), f"OpenCV {cv2.__version__} has no {alias}"
    assert getattr(cv2, alias) == CV_BRIDGE_BAYER[encoding]


@pytest.mark.parametrize("encoding", sorted(CV_BRIDGE_BAYER))
def test_bayer_tile_letters_mean_what_they_say(encoding: str) -> None:
    """A hand-made mosaic of a flat colour, laid out as the encoding's letters say, decodes to it."""
    colour = {"r": 200, "g": 100, "b": 30}
    tile = encoding[len("bayer_") : len("bayer_") + 4]
    height, width = 9, 12
    mosaic = np.empty((height, width), np.uint8)
    for i, letter in enumerate(tile):
        mosaic[i // 2 :: 2, i % 2 :: 2] = colour[letter]
    out = decode_raw(encoding, height, width, width, False, mosaic.tobytes())
    np.testing.assert_array_equal(out[2:-2, 2:-2], np.broadcast_to([200, 100, 30], (5, 8, 3)))
    # encode_raw builds the same mosaic
    flat = np.broadcast_to(np.array([200, 100, 30], np.uint8), (height, width, 3))
    assert encode_raw(flat, encoding)[0] == mosaic.tobytes()


@pytest.mark.parametrize("encoding", sorted(CV_BRIDGE_BAYER))
def test_bayer_of_smooth_image_is_close(encoding: str) -> None:
    rgb = _smooth(32, 48)
    data, step = encode_raw(rgb, encoding, step_padding=7)
    out = decode_raw(encoding, 32, 48, step, False, data)
    assert np.abs(out[2:-2, 2:-2].astype(int) - rgb[2:-2, 2:-2]).max() <= 4


def test_yuv422_byte_orders() -> None:
    # One pixel pair: white (Y=235) then black (Y=16), neutral chroma (128).
    uyvy = decode_raw("yuv422", 1, 2, 4, False, bytes([128, 235, 128, 16]))
    yuyv = decode_raw("yuv422_yuy2", 1, 2, 4, False, bytes([235, 128, 16, 128]))
    np.testing.assert_array_equal(uyvy, [[[255, 255, 255], [0, 0, 0]]])
    np.testing.assert_array_equal(yuyv, uyvy)
    # The same bytes read in the other order are not white/black.
    assert not np.array_equal(decode_raw("yuv422_yuy2", 1, 2, 4, False, bytes([128, 235, 128, 16])), uyvy)


@pytest.mark.parametrize("encoding", ["yuv422", "yuv422_yuy2"])
def test_yuv422_of_smooth_image_is_close(encoding: str) -> None:
    rgb = _smooth(7, 300)
    data, step = encode_raw(rgb, encoding, step_padding=7)
    out = decode_raw(encoding, 7, 300, step, False, data)
    assert np.abs(out.astype(int) - rgb).max() <= 4


@pytest.mark.parametrize("uyvy", [True, False])
def test_numpy_yuv422_fallback_agrees_with_opencv(uyvy: bool) -> None:
    """The numpy encoder used on older OpenCV (ROS Humble) decodes like OpenCV's own encoder."""
    from av_scene_vlm.core.image_encode import _rgb_to_yuv422_numpy

    rgb = _smooth(7, 300)
    code = cv2.COLOR_YUV2RGB_UYVY if uyvy else cv2.COLOR_YUV2RGB_YUY2
    ours = cv2.cvtColor(_rgb_to_yuv422_numpy(rgb, uyvy), code)
    assert np.abs(ours.astype(int) - rgb).max() <= 3
    forward = "COLOR_RGB2YUV_UYVY" if uyvy else "COLOR_RGB2YUV_YUY2"
    # OpenCV >= 4.9 has the forward conversion (the pinned one does): a missing name fails here.
    assert hasattr(cv2, forward), f"OpenCV {cv2.__version__} has no {forward}"
    theirs = cv2.cvtColor(cv2.cvtColor(rgb, getattr(cv2, forward)), code)
    assert np.abs(ours.astype(int) - theirs).max() <= 2


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_encoding_aliases_decode_like_opencv(alias: str) -> None:
    """OpenCV type names (8UC3 = BGR, as cv_bridge reads them) and FourCC names (uyvy, yuyv): random
    bytes under the alias decode exactly as OpenCV converts them under the canonical encoding."""
    height, width, step = 5, 8, 8 * BYTES_PER_PIXEL[ALIASES[alias]] + 2
    data = np.random.default_rng(5).integers(0, 256, height * step, dtype=np.uint8).tobytes()
    out = decode_raw(alias, height, width, step, False, data)
    np.testing.assert_array_equal(out, _reference(ALIASES[alias], data, height, width, step, False))
    rgb = _image(height, width, seed=5)  # the encoder accepts the alias as the same encoding
    assert encode_raw(rgb, alias, step_padding=2) == encode_raw(rgb, ALIASES[alias], step_padding=2)


def test_encoding_whitespace_tolerated_but_case_sensitive() -> None:
    rgb = _image(2, 3)
    out = decode_raw(" rgb8\n", 2, 3, 9, False, rgb.tobytes())
    np.testing.assert_array_equal(out, rgb)
    with pytest.raises(ImageDecodeError, match=r"unknown encoding 'RGB8'.*did you mean 'rgb8'"):
        decode_raw("RGB8", 2, 3, 9, False, rgb.tobytes())


def test_accepts_every_byte_container() -> None:
    rgb = _image(3, 4, seed=6)
    raw = rgb.tobytes()
    padded = np.zeros((3, 2 * 12), np.uint8)  # non-contiguous source: every other byte
    padded[:, ::2] = rgb.reshape(3, 12)
    containers = [
        raw,
        bytearray(raw),
        memoryview(raw),
        array.array("B", raw),
        np.frombuffer(raw, np.uint8),
        rgb,  # any-shape uint8 ndarray is read as its bytes
        rgb.view(np.int8),
        list(raw),
        tuple(raw),
        memoryview(padded[:, ::2]),  # strided memoryview
        padded[:, ::2],  # strided ndarray
    ]
    for data in containers:
        out = decode_raw("rgb8", 3, 4, 12, False, data)
        np.testing.assert_array_equal(out, rgb, err_msg=type(data).__name__)


def test_result_never_aliases_the_input() -> None:
    rgb = _image(3, 4, seed=7)
    out = decode_raw("rgb8", 3, 4, 12, False, rgb)
    assert not np.shares_memory(out, rgb)
    out[:] = 0  # writable, and the caller's buffer is untouched
    assert rgb.any()


def test_longer_data_tail_is_ignored() -> None:
    rgb = _image(3, 4, seed=8)
    out = decode_raw("rgb8", 3, 4, 12, False, rgb.tobytes() + b"\x01" * 50)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step": 100, "width": 100}, r"step 100 < width\*bytes_per_pixel 300"),
        ({"data": bytes(10)}, r"data has 10 bytes, expected at least 900 \(height 3 \* step 300\)"),
        ({"encoding": "foo"}, r"unknown encoding 'foo'"),
        ({"encoding": ""}, r"encoding is empty"),
        ({"encoding": "rgb16"}, r"unknown encoding 'rgb16'"),
        ({"encoding": None}, r"encoding must be a string"),
        ({"height": 0}, r"width/height is zero"),
        ({"width": 0, "step": 0}, r"width/height is zero"),
        ({"height": -3}, r"width/height is zero or negative"),
        ({"height": 20000, "data": bytes(20000 * 300)}, r"exceeds 16384"),
        ({"height": 3.0}, r"height must be an integer, got float"),
        ({"width": True}, r"width must be an integer, got bool"),
        ({"step": "300"}, r"step must be an integer, got str"),
        ({"is_bigendian": "no"}, r"is_bigendian must be a bool or int"),
        ({"encoding": "yuv422", "width": 99, "step": 198}, r"yuv422 needs an even width"),
        ({"data": "x" * 900}, r"data must be bytes-like, got str"),
        ({"data": None}, r"data must be bytes-like, got NoneType"),
        ({"data": 900}, r"data must be bytes-like, got int"),
        ({"data": np.zeros(450, np.uint16)}, r"1-byte items\), got dtype uint16"),
        ({"data": array.array("H", bytes(900))}, r"1-byte items"),
        ({"data": [300] * 900}, r"outside 0\.\.255"),
        ({"data": [0.5] * 900}, r"integers 0\.\.255"),
    ],
)
def test_decode_raw_errors(kwargs: dict, message: str) -> None:
    args = {"encoding": "rgb8", "height": 3, "width": 100, "step": 300, "is_bigendian": False}
    args["data"] = bytes(900)
    args.update(kwargs)
    with pytest.raises(ImageDecodeError, match=message):
        decode_raw(**args)


def test_image_decode_error_is_value_error() -> None:
    assert issubclass(ImageDecodeError, ValueError)


def test_fuzz_raw_only_image_decode_error() -> None:
    rng = np.random.default_rng(1234)
    names = [*ENCODINGS, *ALIASES, "foo", "RGB8", "", " mono8 ", "32FC1"]
    outcomes = {"ok": 0, "error": 0}
    for _ in range(300):
        name = names[rng.integers(len(names))]
        height = int(rng.integers(-2, 12))
        width = int(rng.integers(-2, 12))
        canonical = ALIASES.get(name.strip(), name.strip())
        bpp = BYTES_PER_PIXEL.get(canonical, 3)
        step = max(width, 0) * bpp + int(rng.integers(-3, 5))
        length = max(height, 0) * step + int(rng.integers(-4, 6))
        data = rng.integers(0, 256, max(length, 0), dtype=np.uint8).tobytes()
        big = bool(rng.integers(2))
        valid = (
            canonical in BYTES_PER_PIXEL
            and height > 0
            and width > 0
            and not (canonical.startswith("yuv422") and width % 2)
            and step >= width * bpp
            and len(data) >= height * step
        )
        try:
            out = decode_raw(name, height, width, step, big, data)
        except ImageDecodeError:
            assert not valid, (name, height, width, step, len(data))
            outcomes["error"] += 1
        else:
            assert valid, (name, height, width, step, len(data))
            assert out.shape == (height, width, 3) and out.dtype == np.uint8
            np.testing.assert_array_equal(out, _reference(canonical, data, height, width, step, big))
            outcomes["ok"] += 1
    assert outcomes["ok"] > 30 and outcomes["error"] > 30  # both branches really exercised


# -------------------------------------------------------------------------------------- compressed


def _imdecode_rgb(data: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_decode_compressed_matches_imdecode(fmt: str) -> None:
    rgb = _image(7, 301, seed=9)
    data = encode_compressed(rgb, fmt, quality=90)
    out = decode_compressed(fmt, data)
    assert out.shape == (7, 301, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, _imdecode_rgb(data))
    if fmt == "png":
        np.testing.assert_array_equal(out, rgb)  # lossless, and colours not swapped


def test_jpeg_colours_not_swapped() -> None:
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 220  # red
    out = decode_compressed("jpeg", encode_compressed(rgb, "jpeg", quality=100))
    assert np.abs(out.astype(int) - rgb).max() <= 3


@pytest.mark.parametrize(
    "fmt", ["jpeg", "bgr8; jpeg compressed bgr8", "rgb8; jpeg compressed bgr8", " JPEG ", "", "png"]
)
def test_decode_compressed_goes_by_content_not_format(fmt: str) -> None:
    data = encode_compressed(_image(8, 8, seed=10), "jpeg")
    np.testing.assert_array_equal(decode_compressed(fmt, data), _imdecode_rgb(data))


def test_decode_compressed_accepts_byte_containers() -> None:
    data = encode_compressed(_image(8, 8, seed=11), "png")
    expected = decode_compressed("png", data)
    for container in (
        bytearray(data),
        memoryview(data),
        array.array("B", data),
        np.frombuffer(data, np.uint8),
    ):
        np.testing.assert_array_equal(decode_compressed("png", container), expected)


def test_grey_png_becomes_rgb() -> None:
    grey = _image(5, 6, seed=12)[:, :, 0]
    ok, png = cv2.imencode(".png", grey)
    assert ok
    out = decode_compressed("mono8; png compressed mono8", png.tobytes())
    np.testing.assert_array_equal(out, np.repeat(grey[:, :, None], 3, axis=2))


def test_16bit_png_becomes_8bit_high_byte() -> None:
    values = np.random.default_rng(13).integers(0, 65536, (5, 6)).astype(np.uint16)
    ok, png = cv2.imencode(".png", values)
    assert ok
    out = decode_compressed("mono16; png compressed mono16", png.tobytes())
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 0], (values >> 8).astype(np.uint8))
    # same rule as decode_raw's mono16, so raw and compressed 16-bit frames agree
    np.testing.assert_array_equal(out, decode_raw("mono16", 5, 6, 12, False, values.astype("<u2").tobytes()))


def test_png_alpha_dropped() -> None:
    bgra = np.random.default_rng(14).integers(0, 256, (5, 6, 4), dtype=np.uint8)
    ok, png = cv2.imencode(".png", bgra)
    assert ok
    np.testing.assert_array_equal(decode_compressed("png", png.tobytes()), bgra[:, :, 2::-1])


@pytest.mark.parametrize(
    ("fmt", "data", "message"),
    [
        ("jpeg", b"", r"compressed image data is empty \(format 'jpeg'\)"),
        ("jpeg", b"\x00" * 100, r"corrupt or unsupported compressed image \(format 'jpeg'\)"),
        ("png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, r"corrupt or unsupported compressed image"),
        ("jpeg", b"\xff\xd8\xff", r"corrupt or unsupported compressed image"),
        ("16UC1; compressedDepth png", b"\x00" * 20, r"compressedDepth is not a colour image"),
        (None, b"\x00", r"format must be a string"),
        ("jpeg", "not bytes", r"data must be bytes-like"),
    ],
)
def test_decode_compressed_errors(fmt: object, data: object, message: str) -> None:
    with pytest.raises(ImageDecodeError, match=message):
        decode_compressed(fmt, data)  # type: ignore[arg-type]


def test_fuzz_compressed_only_image_decode_error() -> None:
    """Junk, truncated and valid-with-trailing-junk payloads: each one either decodes to what
    cv2.imdecode gives or raises ImageDecodeError where imdecode fails; both outcomes must occur."""
    rng = np.random.default_rng(99)
    jpeg = encode_compressed(_image(6, 7, seed=15), "jpeg")
    png = encode_compressed(_image(5, 9, seed=16), "png")
    prefixes = [b"", b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", jpeg[:40], jpeg, png]
    outcomes = {"ok": 0, "error": 0}
    for i in range(120):
        payload = (
            prefixes[i % len(prefixes)] + rng.integers(0, 256, int(rng.integers(0, 200)), np.uint8).tobytes()
        )
        theirs = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR) if payload else None
        try:
            out = decode_compressed("jpeg", payload)
        except ImageDecodeError:
            assert theirs is None, f"payload {i}: OpenCV decodes it, decode_compressed refused"
            outcomes["error"] += 1
            continue
        assert theirs is not None, f"payload {i}: decoded although OpenCV cannot"
        np.testing.assert_array_equal(out, cv2.cvtColor(theirs, cv2.COLOR_BGR2RGB))
        outcomes["ok"] += 1
    assert outcomes["ok"] >= 30 and outcomes["error"] >= 30, outcomes  # both branches really exercised


def test_decode_compressed_without_imread_color_rgb(monkeypatch: pytest.MonkeyPatch) -> None:
    """Older OpenCV (e.g. ROS Humble's 4.5) has no IMREAD_COLOR_RGB: the BGR path gives the same image."""
    data = encode_compressed(_image(7, 9, seed=18), "jpeg")
    expected = decode_compressed("jpeg", data)
    monkeypatch.delattr(cv2, "IMREAD_COLOR_RGB", raising=False)
    np.testing.assert_array_equal(decode_compressed("jpeg", data), expected)
    with pytest.raises(ImageDecodeError, match="corrupt"):
        decode_compressed("jpeg", b"\xff\xd8\xff\x00")


@pytest.mark.parametrize("encoding", ["yuv422", "yuv422_yuy2"])
def test_encode_yuv422_without_opencv_forward_conversion(
    encoding: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Older OpenCV cannot convert RGB to packed 4:2:2: encode_raw falls back to numpy."""
    monkeypatch.delattr(cv2, "COLOR_RGB2YUV_UYVY", raising=False)
    monkeypatch.delattr(cv2, "COLOR_RGB2YUV_YUY2", raising=False)
    rgb = _smooth(6, 300)  # gentle gradient: 4:2:2 chroma subsampling costs little
    data, step = encode_raw(rgb, encoding, step_padding=3)
    out = decode_raw(encoding, 6, 300, step, False, data)
    assert np.abs(out.astype(int) - rgb).max() <= 3


def test_encode_compressed_quality_and_formats() -> None:
    rgb = _image(32, 32, seed=16)
    small, large = encode_compressed(rgb, "jpeg", quality=10), encode_compressed(rgb, "jpg", quality=100)
    assert small[:2] == b"\xff\xd8" and len(small) < len(large)
    assert encode_compressed(rgb, "bgr8; png compressed bgr8")[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ImageDecodeError, match="unsupported compressed format 'tiff'"):
        encode_compressed(rgb, "tiff")
    with pytest.raises(ImageDecodeError, match=r"quality must be in 0\.\.100"):
        encode_compressed(rgb, "jpeg", quality=101)
    with pytest.raises(ImageDecodeError, match="compressedDepth"):
        encode_compressed(rgb, "16UC1; compressedDepth")


# -------------------------------------------------------------------------------------- encode_raw


def test_encode_raw_padding_and_validation() -> None:
    rgb = _image(3, 4, seed=17)
    data, step = encode_raw(rgb, "rgb8", step_padding=5)
    rows = np.frombuffer(data, np.uint8).reshape(3, step)
    assert step == 17
    np.testing.assert_array_equal(rows[:, :12].reshape(3, 4, 3), rgb)
    assert (rows[:, 12:] != 0).all()  # non-zero filler, so leaked padding would show in decoded images
    # non-contiguous input is fine
    flipped = rgb[:, ::-1]
    np.testing.assert_array_equal(
        decode_raw("bgr8", 3, 4, 12, False, encode_raw(flipped, "bgr8")[0]), flipped
    )
    with pytest.raises(ImageDecodeError, match="needs an even width"):
        encode_raw(_image(2, 3), "yuv422")
    with pytest.raises(ImageDecodeError, match="needs an even width"):
        encode_raw(_image(2, 3), "yuyv")
    with pytest.raises(ImageDecodeError, match="step_padding must be >= 0"):
        encode_raw(rgb, "rgb8", step_padding=-1)
    with pytest.raises(ImageDecodeError, match="H×W×3 uint8"):
        encode_raw(rgb.astype(np.float32), "rgb8")
    with pytest.raises(ImageDecodeError, match="H×W×3 uint8"):
        encode_raw(rgb[:, :, 0], "mono8")
    with pytest.raises(ImageDecodeError, match="unknown encoding"):
        encode_raw(rgb, "nv12")


def test_mono16_encoding_scales_by_257() -> None:
    rgb = np.full((1, 2, 3), 255, np.uint8)
    rgb[0, 1] = 1
    data, step = encode_raw(rgb, "mono16", is_bigendian=True)
    assert step == 4
    assert np.frombuffer(data, ">u2").tolist() == [65535, 257]


# --------------------------------------------------------------------------------------- ROS-free


def test_module_imports_no_ros() -> None:
    code = (
        "import sys, av_scene_vlm.core.image_codec\n"
        "ros = ('rclpy', 'sensor_msgs', 'cv_bridge', 'rosidl_runtime_py')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ros]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
