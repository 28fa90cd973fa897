"""Bags for the tests, written with rosbags: image messages of the typestore (`header`, `raw_image`,
`jpeg_image`); drives for `bag` (`write_drive`: raw encodings with padding, jpeg, a String topic to
copy through) and for the fleet index (`write_bag`: a front camera in raw rgb8 and a rear one in
lossless PNG, so the frames the index sees are exactly the arrays written here); a fake captioner."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from av_scene_vlm.core import bag as B
from av_scene_vlm.core.image_codec import decode_compressed, decode_raw
from av_scene_vlm.core.image_encode import encode_compressed, encode_raw
from rosbags.rosbag2 import StoragePlugin, Writer

FRONT = "/front/image_raw"
REAR = "/rear/image_raw/compressed"
CHATTER = "/chatter"
STRING = "std_msgs/msg/String"
ENCODINGS = ("rgb8", "bgr8", "mono8", "yuv422")
T0 = 1_700_000_000


def header(store, sec: int, nanosec: int, frame_id: str):
    t = store.types
    return t["std_msgs/msg/Header"](
        stamp=t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=frame_id
    )


def raw_image(store, rgb: np.ndarray, encoding: str, hdr, padding: int = 0):
    data, step = encode_raw(rgb, encoding, step_padding=padding)
    h, w = rgb.shape[:2]
    msg = store.types[B.IMAGE](
        header=hdr,
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=0,
        step=step,
        data=np.frombuffer(data, np.uint8),
    )
    return msg, decode_raw(encoding, h, w, step, 0, data)


def jpeg_image(store, rgb: np.ndarray, hdr):
    data = encode_compressed(rgb, "jpeg")
    msg = store.types[B.COMPRESSED_IMAGE](header=hdr, format="jpeg", data=np.frombuffer(data, np.uint8))
    return msg, decode_compressed("jpeg", data)


@dataclass
class Frame:
    bag: Path
    topic: str
    stamp: int  # ns
    frame_id: str
    rgb: np.ndarray


def write_bag(path: Path, storage: str, seed: int, n: int = 3) -> list[Frame]:
    """n frames per camera, 0.5 s apart; returns the frames as written."""
    store = B.bag_typestore()
    t = store.types
    rng = np.random.default_rng(seed)
    out: list[Frame] = []
    with Writer(path, version=9, storage_plugin=StoragePlugin[storage.upper()]) as w:
        front = w.add_connection(FRONT, B.IMAGE, typestore=store)
        rear = w.add_connection(REAR, B.COMPRESSED_IMAGE, typestore=store)
        for i in range(n):
            ns = (T0 + seed * 100) * 10**9 + i * 500_000_000
            for conn, frame_id, shape in ((front, "front_cam", (40, 64, 3)), (rear, "rear_cam", (48, 32, 3))):
                rgb = rng.integers(0, 256, shape, np.uint8)
                hdr = t["std_msgs/msg/Header"](
                    stamp=t["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9),
                    frame_id=frame_id,
                )
                if conn is front:
                    msg = t[B.IMAGE](
                        header=hdr,
                        height=shape[0],
                        width=shape[1],
                        encoding="rgb8",
                        is_bigendian=0,
                        step=shape[1] * 3,
                        data=rgb.reshape(-1).copy(),
                    )
                else:
                    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                    assert ok
                    msg = t[B.COMPRESSED_IMAGE](header=hdr, format="png", data=png.reshape(-1))
                w.write(conn, ns + (0 if conn is front else 1000), store.serialize_cdr(msg, conn.msgtype))
                out.append(Frame(path, conn.topic, ns, frame_id, rgb))
    return out


def write_corrupt(path: Path) -> None:
    """A real mcap bag whose data file is then overwritten with junk (metadata.yaml left intact)."""
    write_bag(path, "mcap", 99, n=1)
    (data,) = path.glob("*.mcap")
    data.write_bytes(np.random.default_rng(7).integers(0, 256, data.stat().st_size, np.uint8).tobytes())


def write_drive(path: Path, store, storage: str, rng, n: int = 4, bad: bool = False) -> list[dict]:
    """Two cameras × n frames 1 s apart (front: raw encodings with padding, rear: jpeg) and a String
    topic. Returns the image records in bag order with their decoded frames (None = undecodable)."""
    frames = []
    with Writer(path, version=9, storage_plugin=StoragePlugin[storage.upper()]) as w:
        front = w.add_connection(FRONT, B.IMAGE, typestore=store)
        rear = w.add_connection(REAR, B.COMPRESSED_IMAGE, typestore=store)
        chatter = w.add_connection(CHATTER, STRING, typestore=store)
        for i in range(n):
            ts = (T0 + i) * 10**9
            hdr = header(store, T0 + i, 1000 + i, "front_cam")
            msg, rgb = raw_image(store, rng.integers(0, 256, (40, 64, 3), np.uint8), ENCODINGS[i % 4], hdr, 3)
            if bad and i == 1:  # rows shorter than width * 3: undecodable
                msg = store.types[B.IMAGE](
                    header=hdr, height=40, width=64, encoding="rgb8", is_bigendian=0, step=10, data=msg.data
                )
                rgb = None
            w.write(front, ts, store.serialize_cdr(msg, B.IMAGE))
            frames.append(dict(topic=FRONT, ts=ts, stamp=(T0 + i, 1000 + i), frame_id="front_cam", rgb=rgb))
            hdr = header(store, T0 + i, 2000 + i, "rear_cam")
            msg, rgb = jpeg_image(store, rng.integers(0, 256, (48, 32, 3), np.uint8), hdr)
            if bad and i == 2:
                msg = store.types[B.COMPRESSED_IMAGE](header=hdr, format="jpeg", data=np.zeros(50, np.uint8))
                rgb = None
            w.write(rear, ts + 500, store.serialize_cdr(msg, B.COMPRESSED_IMAGE))
            frames.append(
                dict(topic=REAR, ts=ts + 500, stamp=(T0 + i, 2000 + i), frame_id="rear_cam", rgb=rgb)
            )
            w.write(chatter, ts + 700, store.serialize_cdr(store.types[STRING](data=f"msg {i}"), STRING))
    return frames


class FakeCaptioner:
    """Anything with `.caption(rgb)` returning text/prompt/num_tokens/latency/model_id works."""

    def __init__(self) -> None:
        self.shapes: list[tuple] = []

    def caption(self, rgb: np.ndarray):
        from types import SimpleNamespace

        self.shapes.append(rgb.shape)
        n = len(self.shapes)
        return SimpleNamespace(
            text=f"scene {n}", prompt="describe", num_tokens=n, latency=0.01, model_id="fake"
        )
