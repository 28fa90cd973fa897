"""Hostile frames (issue 18): a few bytes whose size fields or compressed header claim gigabytes,
and a 1 × 100,000 frame. Message-type neutral (plain fields), so the node test publishes them as
sensor_msgs and the bag/index tests write them into bags with rosbags."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from av_scene_vlm.core.image_encode import encode_compressed


@dataclass(frozen=True)
class Hostile:
    """One frame: raw Image fields (`encoding` set) or CompressedImage fields (`format` set)."""

    name: str
    data: bytes
    encoding: str = ""
    height: int = 0
    width: int = 0
    step: int = 0
    format: str = ""

    @property
    def compressed(self) -> bool:
        return bool(self.format)


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real 16×16 JPEG whose frame header (SOF0) is rewritten to say width × height."""
    data = bytearray(encode_compressed(np.full((16, 16, 3), 90, np.uint8), "jpeg"))
    sof = data.find(b"\xff\xc0")  # Lf(2) P(1) Y(2) X(2) follow the marker
    assert sof > 0
    data[sof + 5 : sof + 7] = height.to_bytes(2, "big")
    data[sof + 7 : sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


def png_claiming(width: int, height: int) -> bytes:
    """A real 16×16 PNG whose IHDR says width × height, with its CRC recomputed (as an attacker would)."""
    data = bytearray(encode_compressed(np.full((16, 16, 3), 90, np.uint8), "png"))
    data[16:20] = width.to_bytes(4, "big")
    data[20:24] = height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # CRC over type + IHDR data
    return bytes(data)


def hostile_raw() -> list[Hostile]:
    few = bytes(range(16))
    return [
        # 30,000 × 30,000 rgb8: 2.7 GB claimed, 16 bytes sent
        Hostile("raw 30000x30000", few, "rgb8", 30000, 30000, 90000),
        # sides within 16,384 but 256 M pixels (768 MB), 16 bytes sent
        Hostile("raw 16000x16000", few, "rgb8", 16000, 16000, 48000),
        # a small frame whose step claims 2 GiB per row
        Hostile("raw step 2 GiB", few, "bgr8", 1000, 1000, 2**31),
        # extreme aspect ratio, data complete: resizing its short side to 224 would be 224 × 22,400,000
        Hostile("raw 1x100000", bytes(300_000), "rgb8", 1, 100_000, 300_000),
    ]


def hostile_compressed() -> list[Hostile]:
    return [
        Hostile("jpeg 30000x30000", jpeg_claiming(30000, 30000), format="jpeg"),
        Hostile("png 30000x30000", png_claiming(30000, 30000), format="png"),
        # within the per-side limit, above the default max_frame_pixels (54 M pixels, 162 MB decoded)
        Hostile("jpeg 9000x6000", jpeg_claiming(9000, 6000), format="jpeg"),
    ]


def hostile_all() -> list[Hostile]:
    return hostile_raw() + hostile_compressed()


def proc_status_kib(pid: int | str, field: str) -> int:
    """A /proc/<pid>/status size in KiB: VmRSS (resident now) or VmHWM (peak resident)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss(pid: int | str = "self") -> bool:
    """Reset a process's peak RSS (VmHWM) to its current RSS: Linux >= 4.0, writing 5 to clear_refs
    (proc(5)). False where that is not allowed; VmHWM then still holds the peak since the start."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def refused(h: Hostile) -> bool:
    """Whether the codec refuses the frame under its default limits. The 1 x 100,000 frame is refused
    today (more than 16,384 pixels per side); should the codec accept such frames, the tests expect
    them classified in bounded memory instead."""
    from av_scene_vlm.core.image_codec import ImageDecodeError, decode_compressed, decode_raw

    try:
        if h.compressed:
            decode_compressed(h.format, h.data)
        else:
            decode_raw(h.encoding, h.height, h.width, h.step, 0, h.data)
    except ImageDecodeError:
        return True
    return False
