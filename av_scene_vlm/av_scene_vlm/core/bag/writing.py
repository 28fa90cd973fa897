"""Writing processed bags: copied connections, our result messages, and the all-or-nothing output.

Why: a processed bag must replay like a live run (the node's topics, QoS and message contents, the
source image's header), copy every input message bit-exact with its definition, and never be left
half-written (it is built in a hidden directory beside the output and renamed into place: `Staging`).
"""

from __future__ import annotations

import errno
import fcntl
import glob
import os
import shutil
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import result_messages as messages
from .errors import OutputError
from .typestore import MSG_PACKAGE

if TYPE_CHECKING:
    from rosbags.interfaces import Connection
    from rosbags.rosbag2 import Reader, Writer
    from rosbags.typesys.store import Typestore

    from ..engine import FrameResult, ZeroShotEngine

UNKNOWN_HASH = "RIHS01_" + "0" * 64


def qos(durability: str, depth: int) -> list:
    """Offered QoS of a result topic: reliable, keep-last `depth`, VOLATILE or TRANSIENT_LOCAL."""
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )

    zero = QosTime(0, 0)
    return [
        Qos(
            QosHistory.KEEP_LAST,
            depth,
            QosReliability.RELIABLE,
            QosDurability[durability],
            zero,
            zero,
            QosLiveliness.AUTOMATIC,
            zero,
            False,
        )
    ]


def definition(conn: Connection, store: Typestore) -> tuple[str, str]:
    """(msgdef, rihs01) to copy a connection: the bag's own when recorded, else derived.

    Humble-era bags record neither; then the hash comes from the bag's definition if any, else the
    typestore; a custom type known nowhere keeps an all-zero hash (data is still copied bit-exact).
    """
    from rosbags.interfaces import MessageDefinitionFormat

    msgdef = conn.msgdef.data if conn.msgdef.format != MessageDefinitionFormat.NONE else ""
    digest = conn.digest or ""
    if not digest and msgdef and conn.msgdef.format == MessageDefinitionFormat.MSG:
        try:
            from rosbags.typesys import Stores, get_types_from_msg, get_typestore

            scratch = get_typestore(Stores.EMPTY)
            scratch.register(get_types_from_msg(msgdef, conn.msgtype))
            digest = scratch.hash_rihs01(conn.msgtype)
        except Exception:
            digest = ""
    if conn.msgtype in store.fielddefs:
        if not msgdef:
            msgdef = store.generate_msgdef(conn.msgtype, ros_version=2)[0]
        if not digest:
            digest = store.hash_rihs01(conn.msgtype)
    return msgdef, digest or UNKNOWN_HASH


def copy_connections(reader: Reader, writer: Writer, store: Typestore) -> dict[int, Connection]:
    """Add every input connection to the output (once per topic/type/QoS); input id -> output conn."""
    conn_map: dict[int, Connection] = {}
    by_key: dict[tuple, Connection] = {}
    for c in reader.connections:
        key = (c.topic, c.msgtype, repr(c.ext))
        if key not in by_key:
            msgdef, digest = definition(c, store)
            by_key[key] = writer.add_connection(
                c.topic,
                c.msgtype,
                msgdef=msgdef,
                rihs01=digest,
                serialization_format=c.ext.serialization_format,
                offered_qos_profiles=c.ext.offered_qos_profiles,
            )
        conn_map[c.id] = by_key[key]
    return conn_map


class ResultWriter:
    """Builds and writes our result messages next to the copied ones, with the one result-to-message
    mapping the live nodes use (`core.result_messages`), so the bag replays like a live run."""

    def __init__(self, writer: Writer, store: Typestore, engine: ZeroShotEngine) -> None:
        self.writer = writer
        self.store = store
        self.engine = engine
        self.types = store.types

    def make(self, name: str, /, **fields: Any) -> Any:
        """The builder of `core.result_messages`: a message of our package from this typestore."""
        return self.types[f"{MSG_PACKAGE}/msg/{name}"](**fields)

    def add(self, topic: str, msgtype: str, durability: str = "VOLATILE", depth: int = 10) -> Connection:
        return self.writer.add_connection(
            topic, msgtype, typestore=self.store, offered_qos_profiles=qos(durability, depth)
        )

    def write(self, conn: Connection, timestamp: int, msg: Any) -> None:
        self.writer.write(conn, timestamp, self.store.serialize_cdr(msg, conn.msgtype))

    def classification(self, header: Any, result: FrameResult) -> Any:
        return messages.classification_array(self.make, header, result, self.engine.model_id)

    def similarity(self, header: Any, result: FrameResult) -> Any:
        engine = self.engine
        return messages.similarity(
            self.make, header, result, engine.model_id, engine.logit_scale, embedding=True
        )

    def caption(self, header: Any, res: Any) -> Any:
        return messages.caption(
            self.make, header, res.text, res.prompt, res.model_id, res.latency, res.num_tokens
        )

    def label_info(self, header: Any) -> Any:
        hdr = self.types["std_msgs/msg/Header"](stamp=header.stamp, frame_id="")
        engine = self.engine
        return messages.label_info(self.make, hdr, engine.tasks, engine.templates, engine.model_id)


def abort(writer: Writer) -> None:
    """Drop a writer's half-written storage (the caller removes the directory)."""
    with suppress(Exception):
        if writer.storage is not None:
            writer.abort()


class Staging:
    """A hidden directory beside the output where it is built, locked by this process while it exists.

    Why: the output must appear whole or not at all. It is written here and renamed into place (same
    filesystem: atomic); on failure the directory goes. A run that is killed cannot remove it, so
    each new run for the same output removes those no live process holds the lock of (flock(2): the
    kernel releases it when its process dies, SIGKILL included).
    """

    SUFFIX = ".partial"

    def __init__(self, out_path: Path) -> None:
        self.out_path = out_path
        parent = out_path.parent if str(out_path.parent) else Path(".")
        self.created = [p for p in reversed([parent, *parent.parents]) if not p.exists()]
        self.dir: Path | None = None
        self._lock: int | None = None
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.remove_stale(parent, out_path.name)
            # Locked under another name, then renamed: no other run ever sees it unlocked.
            self.dir = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", suffix=".new", dir=parent))
            self._lock = os.open(self.dir, os.O_RDONLY)
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            staged = self.dir.with_suffix(self.SUFFIX)
            os.rename(self.dir, staged)
            self.dir = staged
        except OSError as exc:
            self.discard()
            raise OutputError(f"cannot create output next to '{out_path}': {exc}") from None

    @classmethod
    def remove_stale(cls, parent: Path, name: str) -> None:
        """Remove staging directories of `name` left by runs that died (not locked by a live one)."""
        for d in parent.glob(f".{glob.escape(name)}.*{cls.SUFFIX}"):
            try:
                fd = os.open(d, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live run is building it
            else:
                shutil.rmtree(d, ignore_errors=True)
            finally:
                os.close(fd)

    def discard(self) -> None:
        """Remove the staging directory and the parent directories made for it (if empty)."""
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
        for d in reversed(self.created):
            with suppress(OSError):
                d.rmdir()


def place(src: Path, dst: Path) -> None:
    """Move a finished file to `dst` so that `dst` is never seen half-written: a rename, or across
    filesystems a copy to a hidden file beside `dst` renamed into place. OSError when it fails."""
    try:
        os.rename(src, dst)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    tmp = dst.with_name(f".{dst.name}{Staging.SUFFIX}")
    try:
        shutil.copyfile(src, tmp)
        os.rename(tmp, dst)
    finally:
        with suppress(OSError):
            tmp.unlink()


def publish_output(tmp: Path, out_path: Path, summary: Path | None) -> None:
    """Move the finished bag (and summary) from the staging directory into place: the summary
    first, so that a bag in place always has its summary (a killed run leaves at most a summary,
    which the next run refuses to overwrite)."""
    if summary is not None:
        try:
            summary.parent.mkdir(parents=True, exist_ok=True)
            place(tmp / "summary", summary)
        except OSError as exc:
            raise OutputError(f"cannot write summary '{summary}': {exc}") from None
    try:
        place(tmp / out_path.name, out_path)
    except OSError as exc:
        if summary is not None:
            summary.unlink(missing_ok=True)
        raise OutputError(f"cannot move the output into place at '{out_path}': {exc}") from None
