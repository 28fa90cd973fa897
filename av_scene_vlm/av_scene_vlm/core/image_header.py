"""The size a compressed image will decode to, read from its header without decoding it.

Why: ``cv2.imdecode`` allocates the whole image its header announces before it reads a single
pixel, so a 300-byte JPEG whose header says 30,000 × 30,000 costs 2.7 GB. Reading the size first
lets every caller (nodes, bag and index tools) refuse such frames before any large allocation.

JPEG and PNG — the formats ROS's compressed image transport produces — are parsed here (a few dozen
lines, following the specifications); any other content is left to Pillow, whose ``Image.open``
reads only the header until pixels are asked for. The JPEG walk copies libjpeg's tolerance
(``jdmarker.c``: stray bytes before a marker and 0xFF fill bytes are skipped), so a frame that
libjpeg decodes is never refused here for its header's layout.
"""

from __future__ import annotations

import io
import warnings

import numpy as np

__all__ = ["DEFAULT_MAX_FRAME_PIXELS", "HeaderError", "compressed_image_size"]

DEFAULT_MAX_FRAME_PIXELS = 50_000_000
"""Largest frame decoded by default: 8K (7680 x 4320 = 33.2 MP; DCI 8192 x 4320 = 35.4 MP) with headroom.
An RGB copy of such a frame is 150 MB, the most one frame may cost. (Here, not in image_codec, so the
CLIs show it without importing OpenCV.)"""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"  # SOI + the 0xFF of the next marker: what OpenCV sniffs for
# ITU-T T.81 (ISO/IEC 10918-1) Table B.1: SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0..RST7: markers without a length
_SOI, _EOI, _SOS = 0xD8, 0xD9, 0xDA
# Encoders write a handful of segments before the frame header; thousands of tiny ones are an attack
# on the time this walk takes (it runs in the subscription callback), not a camera.
MAX_JPEG_MARKERS = 4096


class HeaderError(ValueError):
    """The payload's header is missing, truncated or unreadable; the message says which."""


def compressed_image_size(data: np.ndarray) -> tuple[str, int, int]:
    """(format, width, height) of a compressed image (1-D uint8 array), from its header only.

    The format is "jpeg", "png" or Pillow's name for anything else. Raises HeaderError when no
    size can be read: OpenCV would fail on such data too, or (other formats) it is one whose size
    Pillow cannot read, which is refused rather than decoded blind.
    """
    head = bytes(data[:8])
    if head.startswith(PNG_SIGNATURE):
        return ("png", *_png_size(data))
    if head.startswith(JPEG_SIGNATURE):
        return ("jpeg", *_jpeg_size(data))
    return _pillow_size(data)


def _png_size(data: np.ndarray) -> tuple[int, int]:
    """PNG (ISO/IEC 15948, W3C PNG §5.2–5.3, §11.2.1): the signature, then the IHDR chunk first —
    length 13, type "IHDR", width and height as big-endian 32-bit integers."""
    if data.size < 24:
        raise HeaderError("PNG ends before its IHDR header")
    length = int.from_bytes(bytes(data[8:12]), "big")
    if bytes(data[12:16]) != b"IHDR" or length != 13:
        raise HeaderError("PNG does not start with an IHDR chunk")
    return int.from_bytes(bytes(data[16:20]), "big"), int.from_bytes(bytes(data[20:24]), "big")


def _jpeg_size(data: np.ndarray) -> tuple[int, int]:
    """JPEG (ITU-T T.81 Annex B): walk the marker segments after SOI up to the frame header SOFn,
    whose payload is Lf(2) P(1) Y(2) X(2) — height Y and width X, big-endian."""
    mv = memoryview(data)
    n = data.size
    pos = 2  # after SOI
    for _ in range(MAX_JPEG_MARKERS):
        code, pos = _next_marker(data, mv, pos)
        if code in _SOF:
            if pos + 7 > n:
                raise HeaderError("JPEG ends inside its frame header")
            return (mv[pos + 5] << 8) | mv[pos + 6], (mv[pos + 3] << 8) | mv[pos + 4]
        if code == _SOS:
            raise HeaderError("JPEG has scan data before its frame header")
        if code in (_SOI, _EOI):
            raise HeaderError("JPEG has no frame header")
        if code in _STANDALONE:
            continue
        if pos + 2 > n:
            raise HeaderError("JPEG ends inside a marker segment")
        length = (mv[pos] << 8) | mv[pos + 1]
        if length < 2:
            raise HeaderError(f"JPEG marker 0xFF{code:02X} has an invalid length {length}")
        pos += length
    raise HeaderError(f"JPEG has more than {MAX_JPEG_MARKERS} markers before its frame header")


def _next_marker(data: np.ndarray, mv: memoryview, pos: int) -> tuple[int, int]:
    """(marker code, position after it) of the next marker at or after `pos`, as libjpeg finds it:
    bytes other than 0xFF are skipped, then 0xFF fill bytes (T.81 B.1.1.2); FF00 is no marker.
    Runs of bytes are skipped by numpy, so junk costs no Python loop per byte."""
    n = data.size
    while True:
        if pos < n and mv[pos] != 0xFF:
            hits = np.flatnonzero(data[pos:] == 0xFF)
            if not hits.size:
                break
            pos += int(hits[0])
        if pos + 1 < n and mv[pos + 1] == 0xFF:  # fill bytes: move to the last 0xFF of the run
            rest = np.flatnonzero(data[pos + 1 :] != 0xFF)
            if not rest.size:
                break
            pos += int(rest[0])
        if pos + 1 >= n:
            break
        code, pos = mv[pos + 1], pos + 2
        if code != 0:
            return code, pos
    raise HeaderError("JPEG ends before its frame header")


def _pillow_size(data: np.ndarray) -> tuple[str, int, int]:
    """Other formats (TIFF, WebP, BMP, ...): Pillow's lazy open reads the header only."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data.tobytes())) as img:
                width, height = img.size
                return str(img.format or "unknown").lower(), int(width), int(height)
    except Image.DecompressionBombError as exc:
        raise HeaderError(f"the header claims too many pixels ({exc})") from None
    except Exception:
        raise HeaderError(
            "not JPEG or PNG, and not a format whose size Pillow reads from its header"
        ) from None
