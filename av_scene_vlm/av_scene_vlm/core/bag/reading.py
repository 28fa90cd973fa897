"""Reading bags: open (sqlite3 or mcap), pick the image topics, decode frames to RGB.

Why one place: processing, search and the fleet index all read bags the same way, so every one of
them reports an unreadable bag, an unknown storage or a missing topic with the same message, and
chooses the same topic when a camera is recorded both raw and compressed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..image_codec import DEFAULT_MAX_FRAME_PIXELS, ImageDecodeError, decode_compressed, decode_raw
from ..naming import output_namespace
from .errors import BagError, InputError, reason
from .typestore import COMPRESSED_IMAGE, IMAGE, IMAGE_TYPES, STORAGES

if TYPE_CHECKING:
    from rosbags.interfaces import Connection
    from rosbags.rosbag2 import Reader
    from rosbags.typesys.store import Typestore


def open_reader(path: Path) -> Reader:
    """An opened rosbags Reader, or BagError saying why the bag cannot be read."""
    from rosbags.rosbag2 import Reader

    if not path.exists():
        raise InputError(f"input bag '{path}' does not exist")
    try:
        reader = Reader(path)
        reader.open()
    except FileNotFoundError:
        raise InputError(
            f"'{path}' is not a rosbag2 bag: no metadata.yaml (a bag cut short can be repaired "
            "with `ros2 bag reindex`)"
        ) from None
    except Exception as exc:
        why = reason(exc)
        if why.startswith("Storage plugin"):  # rosbags' wording asks users to report an issue
            found = why.split("'")[1] if why.count("'") >= 2 else "?"
            why = f"unknown storage '{found}' (supported: {', '.join(STORAGES)})"
        raise InputError(f"cannot read bag '{path}': {why}") from None
    return reader


@contextmanager
def opened(path: Path) -> Iterator[Reader]:
    """`open_reader` as a context manager that always closes the reader."""
    reader = open_reader(path)
    try:
        yield reader
    finally:
        with suppress(Exception):
            reader.close()


def storage_of(reader: Reader, path: Path) -> str:
    """ "sqlite3" or "mcap": the storage plugin the reader uses."""
    from rosbags.rosbag2.storage_mcap import McapReader
    from rosbags.rosbag2.storage_sqlite3 import Sqlite3Reader

    inner = reader.storage
    subs = getattr(inner, "storages", None)
    obj = subs[0] if subs else inner
    if isinstance(obj, McapReader):
        return "mcap"
    if isinstance(obj, Sqlite3Reader):
        return "sqlite3"
    return "mcap" if path.suffix == ".mcap" else "sqlite3"


def messages(
    reader: Reader, path: Path, connections: Sequence[Connection] = (), start: int | None = None
) -> Iterator[tuple[Connection, int, bytes]]:
    """reader.messages, with read failures (a corrupt chunk, a truncated file) as BagError."""
    try:
        it = reader.messages(connections, start=start) if connections else reader.messages()
        yield from it
    except BagError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read bag '{path}': {reason(exc)}") from None


def topic_list(reader: Reader) -> str:
    """ "topic [type], ..." of every connection, for error messages."""
    pairs = sorted({(c.topic, c.msgtype) for c in reader.connections})
    return ", ".join(f"{t} [{m}]" for t, m in pairs) or "none"


def image_connections(
    reader: Reader, path: Path, topics: Sequence[str] | None, *, missing_ok: bool = False
) -> list[Connection]:
    """The image connections to use: all of them, or those of `topics`.

    A named topic that is not in the bag is an error unless `missing_ok` (a fleet of bags where
    not every drive recorded every camera); a named non-image topic is always an error.
    """
    conns = [c for c in reader.connections if c.msgtype in IMAGE_TYPES]
    if topics:
        wanted = list(dict.fromkeys(topics))
        known = {c.topic for c in reader.connections}
        for t in wanted:
            if t not in known:
                if missing_ok:
                    continue
                raise BagError(f"topic '{t}' is not in bag '{path}' (topics: {topic_list(reader)})")
            if not any(c.topic == t for c in conns):
                types = sorted({c.msgtype for c in reader.connections if c.topic == t})
                raise BagError(f"topic '{t}' is {', '.join(types)}, not an image topic")
        conns = [c for c in conns if c.topic in wanted]
    if not conns:
        what = "none of the topics " + ", ".join(topics) if topics else "no image topics"
        raise BagError(f"{what} in bag '{path}' (topics: {topic_list(reader)})")
    return conns


def group_by_namespace(
    conns: Sequence[Connection], explicit: bool
) -> tuple[dict[str, list[Connection]], list[str]]:
    """Image topics per output namespace; when two topics share one (`image_raw` and its
    `/compressed`), keep raw over compressed, then the one with more messages, unless the user
    named both explicitly (then it is an error: their results would interleave on one topic)."""
    groups: dict[str, dict[str, list[Connection]]] = {}
    for c in conns:
        groups.setdefault(output_namespace(c.topic), {}).setdefault(c.topic, []).append(c)
    chosen: dict[str, list[Connection]] = {}
    skipped: list[str] = []
    for ns, by_topic in groups.items():
        if len(by_topic) > 1 and explicit:
            raise BagError(
                f"topics {', '.join(sorted(by_topic))} would all write to '{ns}'; process them separately"
            )

        def rank(topic: str, by_topic=by_topic) -> tuple:
            cs = by_topic[topic]
            return (cs[0].msgtype != IMAGE, -sum(c.msgcount for c in cs), topic)

        best = min(by_topic, key=rank)
        chosen[ns] = by_topic[best]
        skipped.extend(sorted(t for t in by_topic if t != best))
    return chosen, skipped


@dataclass
class Decoded:
    """One decoded frame: RGB pixels and the source header's fields."""

    rgb: np.ndarray
    header: Any
    sec: int
    nanosec: int
    frame_id: str

    @property
    def stamp_ns(self) -> int:
        return self.sec * 1_000_000_000 + self.nanosec


def decode(store: Typestore, msgtype: str, raw: bytes, max_pixels: int = DEFAULT_MAX_FRAME_PIXELS) -> Decoded:
    """Deserialize an image message and decode it to RGB; any failure is ImageDecodeError, and so is
    a frame of more than `max_pixels` pixels (refused before it is decoded)."""
    try:
        msg = store.deserialize_cdr(raw, msgtype)
    except Exception as exc:
        raise ImageDecodeError(f"cannot deserialize {msgtype}: {reason(exc)}") from None
    if msgtype == COMPRESSED_IMAGE:
        rgb = decode_compressed(msg.format, msg.data, max_pixels=max_pixels)
    else:
        rgb = decode_raw(
            msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data, max_pixels=max_pixels
        )
    stamp = msg.header.stamp
    return Decoded(rgb, msg.header, int(stamp.sec), int(stamp.nanosec), str(msg.header.frame_id))


def frames(
    reader: Reader,
    path: Path,
    store: Typestore,
    conns: Sequence[Connection],
    max_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
) -> Iterator[tuple[Connection, int, Decoded | None]]:
    """(connection, bag time, frame) of every message of `conns` in bag order; None = undecodable
    (or larger than `max_pixels`)."""
    for conn, ts, raw in messages(reader, path, conns):
        try:
            yield conn, ts, decode(store, conn.msgtype, raw, max_pixels)
        except ImageDecodeError:
            yield conn, ts, None


def read_frame(path: Path, store: Typestore, topic: str, ts: int, stamp: tuple[int, int], frame_id: str):
    """Re-read one frame's RGB: the image at the same record time, else any with the same header."""
    with opened(path) as reader:
        mine = [c for c in reader.connections if c.topic == topic and c.msgtype in IMAGE_TYPES]
        try:
            for start, stop in ((ts, ts + 1), (None, None)):
                for conn, _, raw in reader.messages(mine, start=start, stop=stop):
                    try:
                        frame = decode(store, conn.msgtype, raw)
                    except ImageDecodeError:
                        continue
                    if (frame.sec, frame.nanosec) == stamp and frame.frame_id == frame_id:
                        return frame.rgb
        except Exception as exc:
            raise InputError(f"cannot read bag '{path}': {reason(exc)}") from None
    raise BagError(f"frame {stamp[0]}.{stamp[1]:09d} of '{topic}' is not in bag '{path}'")
