"""Writing processed bags: copied connections, our result messages, and the all-or-nothing output.

Why: a processed bag must replay like a live run (the node's topics, QoS and message contents, the
source image's header), copy every input message bit-exact with its definition, and never be left
half-written (it is built in a hidden directory beside the output and renamed into place).
"""

from __future__ import annotations

import tempfile
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import result_messages as messages
from .errors import BagError
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

    def make(self, name: str, **fields: Any) -> Any:
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


def make_tmp(out_path: Path) -> tuple[Path, list[Path]]:
    """A hidden temp dir beside the output (same filesystem, so the final rename is atomic), and the
    parent directories created for it (removed again on failure)."""
    parent = out_path.parent if str(out_path.parent) else Path(".")
    created: list[Path] = []
    for p in reversed([parent, *parent.parents]):
        if not p.exists():
            created.append(p)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", suffix=".partial", dir=parent))
    except OSError as exc:
        remove_dirs(created)
        raise BagError(f"cannot create output next to '{out_path}': {exc}") from None
    return tmp, created


def remove_dirs(created: list[Path]) -> None:
    """Remove directories `make_tmp` created, deepest first (only if empty)."""
    for d in reversed(created):
        with suppress(Exception):
            d.rmdir()
