"""Offline processing of recorded drives (ROS 2 bags) and text search over them, without ROS.

Why: a vehicle records hours of camera data; labelling or searching it must not need a live graph,
nor real time. `process_bag` reads a rosbag2 bag (sqlite3 or mcap) with the pure-Python `rosbags`
library, classifies every frame as fast as the hardware allows (batched), and writes a NEW bag with
every original message plus the results the live node would have published, on the same topics
(`core.naming`) and with the source image's header — so replaying the processed bag looks exactly
like a live run. `search_bag` ranks frames by CLIP similarity with a sentence, using the stored
embeddings of a processed bag when it has them.

Conventions:
- Output topics per camera `<ns>/scene/`: `classification` (ClassificationArray, one per frame),
  `similarity` (Similarity with `image_embedding`), `caption` (Caption, only with a captioner) and
  `labels` (LabelInfo, once per camera at its first frame, offered transient-local like the node's).
- Each result's record (bag) timestamp is its source image's record timestamp; results are written
  right after their image, so the output keeps the input's order.
- Output bags are rosbag2 version 8 (readable by Humble through Kilted; version 9 only changes the
  QoS encoding) in the input's storage format unless `storage` says otherwise.
- Nothing partial is left behind: the bag is written under a hidden temporary directory next to the
  output and renamed into place on success; on any failure the temporary directory is removed.
- The summary file (`summary_path`, `.csv` or `.json`) has one row per classified frame; none is
  written when `summary_path` is None (the CLI defaults it to `<OUT_BAG>.csv`).
"""

from __future__ import annotations

import csv
import heapq
import io
import json
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, suppress
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .image_codec import ImageDecodeError, decode_compressed, decode_raw
from .naming import output_namespace

if TYPE_CHECKING:
    from rosbags.interfaces import Connection
    from rosbags.rosbag2 import Reader, Writer
    from rosbags.typesys.store import Typestore

    from .engine import FrameResult, ZeroShotEngine

__all__ = [
    "CAPTION",
    "CLASSIFICATION_ARRAY",
    "COMPRESSED_IMAGE",
    "IMAGE",
    "IMAGE_TYPES",
    "LABEL_INFO",
    "MSGS_DIR_ENV",
    "SIMILARITY",
    "BagError",
    "BagSummary",
    "Match",
    "bag_typestore",
    "find_msg_dir",
    "process_bag",
    "search_bag",
]

MSG_PACKAGE = "av_scene_vlm_msgs"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
CLASSIFICATION = f"{MSG_PACKAGE}/msg/Classification"
CLASSIFICATION_ARRAY = f"{MSG_PACKAGE}/msg/ClassificationArray"
SIMILARITY = f"{MSG_PACKAGE}/msg/Similarity"
CAPTION = f"{MSG_PACKAGE}/msg/Caption"
LABEL_INFO = f"{MSG_PACKAGE}/msg/LabelInfo"
TASK_INFO = f"{MSG_PACKAGE}/msg/TaskInfo"

# Leaf names under `<ns>/scene/`, as the live node publishes them.
LEAVES = {"classification": CLASSIFICATION_ARRAY, "similarity": SIMILARITY, "caption": CAPTION}
LABELS_LEAF = "labels"

MSGS_DIR_ENV = "AV_SCENE_VLM_MSGS_DIR"
"""Environment variable naming the directory with our .msg files (overrides the search)."""

BAG_VERSION = 8
STORAGES = ("sqlite3", "mcap")
# Preference for the base typestore (standard message definitions and RIHS01 hashes): the project's
# distro first; rosbags versions without it fall back to older ones.
_STORE_PREFERENCE = ("ROS2_KILTED", "ROS2_JAZZY", "ROS2_HUMBLE")
_UNKNOWN_HASH = "RIHS01_" + "0" * 64


class BagError(Exception):
    """The bag cannot be processed or searched; the message says which file and why."""


# ---- message definitions -----------------------------------------------------------------------------
def find_msg_dir(explicit: str | Path | None = None) -> Path:
    """Locate the `av_scene_vlm_msgs/msg` directory holding our .msg files.

    Order: `explicit`, `$AV_SCENE_VLM_MSGS_DIR`, the source tree (`<repo>/av_scene_vlm_msgs/msg`
    next to this package), the ament index (an installed workspace), `<sys.prefix>/share/...`
    (the venv build). The .msg files are located, never copied, so they cannot drift.
    """
    tried: list[str] = []

    def ok(p: Path) -> bool:
        tried.append(str(p))
        return p.is_dir() and (p / "ClassificationArray.msg").is_file()

    if explicit is not None:
        p = Path(explicit)
        if ok(p):
            return p
        raise BagError(f"message directory '{p}' does not contain {MSG_PACKAGE}'s .msg files")
    env = os.environ.get(MSGS_DIR_ENV)
    if env and ok(Path(env)):
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        if ok(parent / MSG_PACKAGE / "msg"):
            return parent / MSG_PACKAGE / "msg"
    try:  # an installed ROS workspace; optional, so imported lazily
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory(MSG_PACKAGE)) / "msg"
        if ok(share):
            return share
    except Exception:  # not installed, not on AMENT_PREFIX_PATH, or no ament_index_python
        pass
    for prefix in dict.fromkeys([sys.prefix, *os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)]):
        if prefix and ok(Path(prefix) / "share" / MSG_PACKAGE / "msg"):
            return Path(prefix) / "share" / MSG_PACKAGE / "msg"
    raise BagError(
        f"cannot find the {MSG_PACKAGE} message definitions (looked in: {', '.join(tried)}); "
        f"build/install {MSG_PACKAGE} or set {MSGS_DIR_ENV} to its msg/ directory"
    )


@lru_cache(maxsize=4)
def _typestore_for(msg_dir: str) -> Typestore:
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    name = next((n for n in _STORE_PREFERENCE if hasattr(Stores, n)), "LATEST")
    store = get_typestore(getattr(Stores, name))
    types: dict = {}
    for path in sorted(Path(msg_dir).glob("*.msg")):
        try:
            types.update(get_types_from_msg(path.read_text(), f"{MSG_PACKAGE}/msg/{path.stem}"))
        except Exception as exc:
            raise BagError(f"cannot parse message definition '{path}': {exc}") from None
    store.register(types)
    return store


def bag_typestore(msg_dir: str | Path | None = None) -> Typestore:
    """A rosbags typestore with the standard ROS 2 types plus ours (cached per msg directory)."""
    return _typestore_for(str(find_msg_dir(msg_dir).resolve()))


# ---- reading ------------------------------------------------------------------------------------------
def _open_reader(path: Path) -> Reader:
    from rosbags.rosbag2 import Reader

    if not path.exists():
        raise BagError(f"input bag '{path}' does not exist")
    try:
        reader = Reader(path)
        reader.open()
    except FileNotFoundError:
        raise BagError(
            f"'{path}' is not a rosbag2 bag: no metadata.yaml (a bag cut short can be repaired "
            "with `ros2 bag reindex`)"
        ) from None
    except Exception as exc:
        reason = _reason(exc)
        if reason.startswith("Storage plugin"):  # rosbags' wording asks users to report an issue
            found = reason.split("'")[1] if reason.count("'") >= 2 else "?"
            reason = f"unknown storage '{found}' (supported: {', '.join(STORAGES)})"
        raise BagError(f"cannot read bag '{path}': {reason}") from None
    return reader


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _storage_of(reader: Reader, path: Path) -> str:
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


def _messages(
    reader: Reader, path: Path, connections: Sequence[Connection] = (), start: int | None = None
) -> Iterator[tuple[Connection, int, bytes]]:
    """reader.messages, with read failures (a corrupt chunk, a truncated file) as BagError."""
    try:
        it = reader.messages(connections, start=start) if connections else reader.messages()
        yield from it
    except BagError:
        raise
    except Exception as exc:
        raise BagError(f"cannot read bag '{path}': {_reason(exc)}") from None


def _image_connections(reader: Reader, path: Path, topics: Sequence[str] | None) -> list[Connection]:
    """The image connections to use: all of them, or those of `topics` (unknown topic = error)."""
    conns = [c for c in reader.connections if c.msgtype in IMAGE_TYPES]
    if topics:
        wanted = list(dict.fromkeys(topics))
        known = {c.topic for c in reader.connections}
        for t in wanted:
            if t not in known:
                raise BagError(f"topic '{t}' is not in bag '{path}' (topics: {_topic_list(reader)})")
            if not any(c.topic == t for c in conns):
                types = sorted({c.msgtype for c in reader.connections if c.topic == t})
                raise BagError(f"topic '{t}' is {', '.join(types)}, not an image topic")
        conns = [c for c in conns if c.topic in wanted]
    if not conns:
        raise BagError(f"no image topics in bag '{path}' (topics: {_topic_list(reader)})")
    return conns


def _topic_list(reader: Reader) -> str:
    pairs = sorted({(c.topic, c.msgtype) for c in reader.connections})
    return ", ".join(f"{t} [{m}]" for t, m in pairs) or "none"


def _group_by_namespace(
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
class _Decoded:
    rgb: np.ndarray
    header: Any
    sec: int
    nanosec: int
    frame_id: str


def _decode(store: Typestore, msgtype: str, raw: bytes) -> _Decoded:
    """Deserialize an image message and decode it to RGB; any failure is ImageDecodeError."""
    try:
        msg = store.deserialize_cdr(raw, msgtype)
    except Exception as exc:
        raise ImageDecodeError(f"cannot deserialize {msgtype}: {_reason(exc)}") from None
    if msgtype == COMPRESSED_IMAGE:
        rgb = decode_compressed(msg.format, msg.data)
    else:
        rgb = decode_raw(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data)
    stamp = msg.header.stamp
    return _Decoded(rgb, msg.header, int(stamp.sec), int(stamp.nanosec), str(msg.header.frame_id))


def _prefetch(items: Iterable[Any], depth: int) -> Iterator[Any]:
    """Run `items` (reading + decoding) on a thread, `depth` items ahead of the consumer.

    Decoding (OpenCV) and inference (torch) both release the GIL, so the next batch is decoded while
    the current one is classified. Exceptions of the producer are re-raised in the consumer.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((None, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((None, done))
        except BaseException as exc:
            q.put((exc, None))

    thread = threading.Thread(target=produce, name="bag-reader", daemon=True)
    thread.start()
    try:
        while True:
            exc, item = q.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


# ---- processing -------------------------------------------------------------------------------------
@dataclass
class BagSummary:
    """What `process_bag` did; `fps` counts classified frames over the whole wall time."""

    input: Path
    output: Path
    storage: str
    frames: int
    bad_frames: int
    topics: dict[str, int]  # image topic -> frames classified
    bad_by_topic: dict[str, int]
    namespaces: dict[str, str]  # image topic -> output namespace
    skipped_topics: list[str]  # image topics not processed (another topic already feeds their namespace)
    captions: int
    messages: int  # messages copied from the input
    seconds: float
    fps: float
    summary_path: Path | None = None
    model_id: str = ""


@dataclass
class _Record:
    conn: Connection  # output connection
    timestamp: int
    raw: bytes
    frame: _Decoded | None = None
    camera: _Camera | None = None
    caption: bool = False
    result: FrameResult | None = None


@dataclass(eq=False)
class _Camera:
    topic: str
    namespace: str
    out: dict[str, Connection] = field(default_factory=dict)
    labels_written: bool = False
    last_caption: int | None = None
    frames: int = 0
    bad: int = 0


def _qos(durability: str, depth: int) -> list:
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


def _definition(conn: Connection, store: Typestore) -> tuple[str, str]:
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
    return msgdef, digest or _UNKNOWN_HASH


class _BagWriter:
    """Builds and writes our result messages next to the copied ones."""

    def __init__(self, writer: Writer, store: Typestore, engine: ZeroShotEngine) -> None:
        self.writer = writer
        self.store = store
        self.engine = engine
        self.types = store.types

    def add(self, topic: str, msgtype: str, durability: str = "VOLATILE", depth: int = 10) -> Connection:
        return self.writer.add_connection(
            topic, msgtype, typestore=self.store, offered_qos_profiles=_qos(durability, depth)
        )

    def write(self, conn: Connection, timestamp: int, msg: Any) -> None:
        self.writer.write(conn, timestamp, self.store.serialize_cdr(msg, conn.msgtype))

    def classification(self, header: Any, result: FrameResult) -> Any:
        cls, arr = self.types[CLASSIFICATION], self.types[CLASSIFICATION_ARRAY]
        items = [
            cls(
                header=header,
                task=t.task,
                labels=list(t.labels),
                probabilities=np.asarray(t.probabilities, dtype=np.float64),
                top_label=t.label,
                top_probability=t.probability,
                model_id=self.engine.model_id,
                inference_latency=float(result.latency),
            )
            for t in result.tasks
        ]
        return arr(header=header, results=items)

    def similarity(self, header: Any, result: FrameResult) -> Any:
        texts = [label for t in result.tasks for label in t.labels]
        tasks = [t.task for t in result.tasks for _ in t.labels]
        cosine = np.concatenate([np.asarray(t.cosine, np.float32) for t in result.tasks])
        return self.types[SIMILARITY](
            header=header,
            texts=texts,
            tasks=tasks,
            cosine=cosine.astype(np.float32),
            logit_scale=float(self.engine.logit_scale),
            image_embedding=np.asarray(result.image_embedding, dtype=np.float32),
            model_id=self.engine.model_id,
        )

    def caption(self, header: Any, res: Any) -> Any:
        return self.types[CAPTION](
            header=header,
            text=str(res.text),
            prompt=str(res.prompt),
            model_id=str(res.model_id),
            latency=float(res.latency),
            num_tokens=int(res.num_tokens),
        )

    def label_info(self, header: Any) -> Any:
        task_info = self.types[TASK_INFO]
        infos = []
        for task in self.engine.tasks:
            prompts, index = [], []
            for i, label_prompts in enumerate(self.engine.prompts(task)):
                prompts.extend(label_prompts)
                index.extend([i] * len(label_prompts))
            infos.append(
                task_info(
                    task=task.name,
                    labels=task.label_names,
                    prompts=prompts,
                    prompt_label_index=np.asarray(index, dtype=np.uint32),
                )
            )
        hdr = self.types["std_msgs/msg/Header"](stamp=header.stamp, frame_id="")
        return self.types[LABEL_INFO](header=hdr, tasks=infos, model_id=self.engine.model_id)


def _summary_format(path: Path | None) -> str | None:
    if path is None:
        return None
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("csv", "json"):
        raise BagError(f"summary file '{path}' must end in .csv or .json")
    return fmt


def _write_summary(path: Path, fmt: str, rows: list[dict], tasks: list[str], meta: dict) -> None:
    if fmt == "json":
        text = json.dumps({**meta, "frames": rows}, indent=1, ensure_ascii=False)
    else:
        buf = io.StringIO()
        cols = ["topic", "sec", "nanosec", "frame_id", "bag_time_ns"]
        cols += [c for t in tasks for c in (f"{t}.label", f"{t}.probability")]
        cols.append("caption")
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            row = [r["topic"], r["sec"], r["nanosec"], r["frame_id"], r["bag_time_ns"]]
            for t in tasks:
                row += [r["tasks"][t]["label"], f"{r['tasks'][t]['probability']:.6f}"]
            row.append(r.get("caption", ""))
            w.writerow(row)
        text = buf.getvalue()
    path.write_text(text, encoding="utf-8")


def process_bag(
    in_bag: str | Path,
    out_bag: str | Path,
    engine: ZeroShotEngine,
    *,
    topics: Sequence[str] | None = None,
    batch_size: int = 8,
    captioner: Any | None = None,
    caption_every: float = 0.0,
    progress: bool = True,
    summary_path: str | Path | None = None,
    storage: str | None = None,
    msg_dir: str | Path | None = None,
) -> BagSummary:
    """Classify every frame of `in_bag` and write `out_bag` = all input messages + results.

    `topics` restricts the image topics (default: every sensor_msgs Image/CompressedImage topic;
    when a camera has both raw and `/compressed`, raw is used). Frames that cannot be decoded are
    counted in `bad_frames`, copied unchanged and get no results. With a `captioner` (an object
    with `.caption(rgb)` returning `.text/.prompt/.num_tokens/.latency/.model_id`), each camera
    gets a caption every `caption_every` seconds of bag time (<= 0: every frame). `storage` is
    "sqlite3" or "mcap" (default: the input's). Raises BagError; never leaves partial output.
    """
    t0 = time.perf_counter()
    in_path, out_path = Path(in_bag), Path(out_bag)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BagError(f"batch_size must be a positive integer, got {batch_size!r}")
    if storage is not None and storage not in STORAGES:
        raise BagError(f"unknown storage '{storage}' (use {' or '.join(STORAGES)})")
    summary = Path(summary_path) if summary_path is not None else None
    summary_fmt = _summary_format(summary)
    if not engine.tasks:
        raise BagError("the engine has no tasks: give labels or a tasks config")
    if not in_path.exists():
        raise BagError(f"input bag '{in_path}' does not exist")
    if out_path.exists() or out_path.is_symlink():
        raise BagError(f"output '{out_path}' exists already; remove it or choose another name")
    if summary is not None and summary.exists():
        raise BagError(f"summary file '{summary}' exists already; remove it or choose another name")
    store = bag_typestore(msg_dir)

    reader = _open_reader(in_path)
    try:
        conns = _image_connections(reader, in_path, topics)
        chosen, skipped = _group_by_namespace(conns, explicit=bool(topics))
        fmt = storage or _storage_of(reader, in_path)
        existing = {c.topic for c in reader.connections}
        for ns in chosen:
            for leaf in [*LEAVES, LABELS_LEAF]:
                if f"{ns}/{leaf}" in existing:
                    raise BagError(
                        f"input bag already has '{ns}/{leaf}' (already processed?); "
                        "choose other --topics or process the original bag"
                    )
        tmp, created = _make_tmp(out_path)
        try:
            result = _process(
                reader,
                in_path,
                tmp / out_path.name,
                fmt,
                store,
                engine,
                chosen,
                skipped,
                batch_size=batch_size,
                captioner=captioner,
                caption_every=caption_every,
                progress=progress,
            )
            rows, result_summary = result
            tmp_summary = tmp / "summary"
            if summary is not None and summary_fmt is not None:
                meta = {"input": str(in_path), "output": str(out_path), "model_id": engine.model_id}
                _write_summary(tmp_summary, summary_fmt, rows, [t.name for t in engine.tasks], meta)
            try:
                os.rename(tmp / out_path.name, out_path)
            except OSError as exc:
                raise BagError(f"cannot move the output into place at '{out_path}': {exc}") from None
            if summary is not None:
                try:
                    summary.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(tmp_summary), str(summary))
                except OSError as exc:
                    shutil.rmtree(out_path, ignore_errors=True)
                    raise BagError(f"cannot write summary '{summary}': {exc}") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            for d in reversed(created):
                with suppress(Exception):
                    d.rmdir()
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    finally:
        with suppress(Exception):
            reader.close()
    result_summary.output = out_path
    result_summary.summary_path = summary
    result_summary.seconds = time.perf_counter() - t0
    result_summary.fps = result_summary.frames / result_summary.seconds if result_summary.seconds else 0.0
    return result_summary


def _make_tmp(out_path: Path) -> tuple[Path, list[Path]]:
    """A hidden temp dir beside the output (same filesystem, so the final rename is atomic)."""
    parent = out_path.parent if str(out_path.parent) else Path(".")
    created: list[Path] = []
    for p in reversed([parent, *parent.parents]):
        if not p.exists():
            created.append(p)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", suffix=".partial", dir=parent))
    except OSError as exc:
        for d in reversed(created):
            with suppress(Exception):
                d.rmdir()
        raise BagError(f"cannot create output next to '{out_path}': {exc}") from None
    return tmp, created


def _process(
    reader: Reader,
    in_path: Path,
    bag_path: Path,
    fmt: str,
    store: Typestore,
    engine: ZeroShotEngine,
    chosen: dict[str, list[Connection]],
    skipped: list[str],
    *,
    batch_size: int,
    captioner: Any | None,
    caption_every: float,
    progress: bool,
) -> tuple[list[dict], BagSummary]:
    from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
    from tqdm import tqdm

    cameras: dict[int, _Camera] = {}
    for ns, cs in chosen.items():
        cam = _Camera(cs[0].topic, ns)
        for c in cs:
            cameras[c.id] = cam
    period_ns = round(max(0.0, float(caption_every)) * 1e9)
    rows: list[dict] = []
    counts = {"frames": 0, "bad": 0, "captions": 0, "copied": 0}

    writer = Writer(bag_path, version=BAG_VERSION, storage_plugin=StoragePlugin[fmt.upper()])
    try:
        writer.open()
        out = _BagWriter(writer, store, engine)
        conn_map: dict[int, Connection] = {}
        by_key: dict[tuple, Connection] = {}
        for c in reader.connections:
            key = (c.topic, c.msgtype, repr(c.ext))
            if key not in by_key:
                msgdef, digest = _definition(c, store)
                by_key[key] = writer.add_connection(
                    c.topic,
                    c.msgtype,
                    msgdef=msgdef,
                    rihs01=digest,
                    serialization_format=c.ext.serialization_format,
                    offered_qos_profiles=c.ext.offered_qos_profiles,
                )
            conn_map[c.id] = by_key[key]
        for cam in dict.fromkeys(cameras.values()):
            for leaf, msgtype in LEAVES.items():
                if leaf == "caption" and captioner is None:
                    continue
                cam.out[leaf] = out.add(f"{cam.namespace}/{leaf}", msgtype)
            cam.out[LABELS_LEAF] = out.add(f"{cam.namespace}/{LABELS_LEAF}", LABEL_INFO, "TRANSIENT_LOCAL", 1)

        total = sum(c.msgcount for c in reader.connections if c.id in cameras)
        bar = tqdm(
            total=total or None,
            unit="frame",
            desc=in_path.name,
            disable=not progress,
            file=sys.stderr,
            dynamic_ncols=True,
            leave=True,
        )

        def produce() -> Iterator[_Record]:
            for conn, ts, raw in _messages(reader, in_path):
                rec = _Record(conn_map[conn.id], ts, raw)
                cam = cameras.get(conn.id)
                if cam is not None:
                    rec.camera = cam
                    try:
                        rec.frame = _decode(store, conn.msgtype, raw)
                    except ImageDecodeError:
                        rec.frame = None
                yield rec

        pending: list[_Record] = []
        batch: list[_Record] = []

        def flush() -> None:
            if batch:
                results = engine.classify([r.frame.rgb for r in batch])  # type: ignore[union-attr]
                for r, res in zip(batch, results, strict=True):
                    r.result = res
            for r in pending:
                writer.write(r.conn, r.timestamp, r.raw)
                counts["copied"] += 1
                if r.result is not None:
                    _write_results(out, r, captioner, rows, counts)
            bar.update(len(batch))
            batch.clear()
            pending.clear()

        with bar, closing(_prefetch(produce(), depth=2 * batch_size + 8)) as records:
            for rec in records:
                cam = rec.camera
                if cam is not None and rec.frame is None:
                    cam.bad += 1
                    counts["bad"] += 1
                    bar.update(1)
                elif cam is not None:
                    cam.frames += 1
                    counts["frames"] += 1
                    if captioner is not None and (
                        cam.last_caption is None or rec.timestamp - cam.last_caption >= period_ns
                    ):
                        rec.caption = True
                        cam.last_caption = rec.timestamp
                    batch.append(rec)
                if not batch and not pending:
                    writer.write(rec.conn, rec.timestamp, rec.raw)
                    counts["copied"] += 1
                    continue
                pending.append(rec)
                if len(batch) >= batch_size:
                    flush()
            flush()
        writer.close()
    except BagError:
        _abort(writer)
        raise
    except WriterError as exc:
        _abort(writer)
        raise BagError(f"cannot write output bag: {_reason(exc)}") from None
    except OSError as exc:
        _abort(writer)
        raise BagError(f"cannot write output bag: {exc}") from None
    except BaseException:
        _abort(writer)
        raise

    cams = list(dict.fromkeys(cameras.values()))
    summary = BagSummary(
        input=in_path,
        output=bag_path,
        storage=fmt,
        frames=counts["frames"],
        bad_frames=counts["bad"],
        topics={c.topic: c.frames for c in cams},
        bad_by_topic={c.topic: c.bad for c in cams if c.bad},
        namespaces={c.topic: c.namespace for c in cams},
        skipped_topics=skipped,
        captions=counts["captions"],
        messages=counts["copied"],
        seconds=0.0,
        fps=0.0,
        model_id=engine.model_id,
    )
    return rows, summary


def _abort(writer: Writer) -> None:
    with suppress(Exception):
        if writer.storage is not None:
            writer.abort()


def _write_results(out: _BagWriter, r: _Record, captioner: Any, rows: list[dict], counts: dict) -> None:
    cam, frame, res = r.camera, r.frame, r.result
    assert cam is not None and frame is not None and res is not None
    if not cam.labels_written:
        out.write(cam.out[LABELS_LEAF], r.timestamp, out.label_info(frame.header))
        cam.labels_written = True
    out.write(cam.out["classification"], r.timestamp, out.classification(frame.header, res))
    out.write(cam.out["similarity"], r.timestamp, out.similarity(frame.header, res))
    row = {
        "topic": cam.topic,
        "sec": frame.sec,
        "nanosec": frame.nanosec,
        "frame_id": frame.frame_id,
        "bag_time_ns": r.timestamp,
        "tasks": {t.task: {"label": t.label, "probability": round(t.probability, 6)} for t in res.tasks},
    }
    if r.caption and captioner is not None:
        cap = captioner.caption(frame.rgb)
        out.write(cam.out["caption"], r.timestamp, out.caption(frame.header, cap))
        counts["captions"] += 1
        row["caption"] = str(cap.text)
    rows.append(row)
    r.frame = None  # release the pixels early


# ---- search -------------------------------------------------------------------------------------------
@dataclass
class Match:
    """One search hit. `image()` returns the frame's RGB (kept from the scan, or re-read lazily)."""

    topic: str  # the image topic (or the similarity topic when the bag has no images for it)
    stamp: tuple[int, int]  # header stamp (sec, nanosec)
    frame_id: str
    score: float  # cosine of image and query embeddings
    timestamp: int  # bag record time, ns
    source: str  # "embedding" (stored Similarity) or "image" (encoded now)
    _rgb: np.ndarray | None = field(default=None, repr=False, compare=False)
    _loader: Callable[[], np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def stamp_str(self) -> str:
        return f"{self.stamp[0]}.{self.stamp[1]:09d}"

    def image(self) -> np.ndarray:
        """H×W×3 uint8 RGB of the frame (BagError if the bag does not hold it)."""
        if self._rgb is None:
            if self._loader is None:
                raise BagError(f"frame {self.stamp_str} of '{self.topic}' is not in the bag")
            self._rgb = self._loader()
        return self._rgb


def _rank_key(score: float, timestamp: int, topic: str, stamp: tuple[int, int]) -> tuple:
    return (-score, timestamp, topic, stamp)


def search_bag(
    bag: str | Path,
    query: str,
    engine: ZeroShotEngine,
    *,
    top_k: int = 10,
    topics: Sequence[str] | None = None,
    batch_size: int = 16,
    use_embeddings: bool | None = None,
    msg_dir: str | Path | None = None,
) -> list[Match]:
    """The `top_k` frames most similar to `query`, best first (ties: earlier bag time first).

    A processed bag's Similarity embeddings are used when they come from the engine's model
    (`use_embeddings`: None = when available, True = required, False = always encode the images);
    cameras without usable embeddings have their images decoded and encoded in batches.
    `topics` restricts image topics (or similarity topics) to search.
    """
    path = Path(bag)
    if not isinstance(query, str) or not query.strip():
        raise BagError("the search query is empty")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise BagError(f"top_k must be a positive integer, got {top_k!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BagError(f"batch_size must be a positive integer, got {batch_size!r}")
    store = bag_typestore(msg_dir)
    text = engine.encode_texts([query.strip()])[0].astype(np.float64)

    reader = _open_reader(path)
    try:
        wanted = set(topics or ())
        all_images = [c for c in reader.connections if c.msgtype in IMAGE_TYPES]
        known = {c.topic for c in reader.connections}
        for t in wanted:
            if t not in known:
                raise BagError(f"topic '{t}' is not in bag '{path}' (topics: {_topic_list(reader)})")
        images = [c for c in all_images if not wanted or c.topic in wanted]
        wanted_ns = {output_namespace(t) for t in wanted if t in {c.topic for c in all_images}}
        sims = [
            c
            for c in reader.connections
            if c.msgtype == SIMILARITY
            and (not wanted or c.topic in wanted or c.topic.rsplit("/", 1)[0] in wanted_ns)
        ]
        if not images and not sims:
            raise BagError(
                f"no image or similarity topics to search in '{path}' (topics: {_topic_list(reader)})"
            )
        # Image topic that each namespace's results came from (for thumbnails and the printed topic).
        source_of, _ = _group_by_namespace(all_images, explicit=False) if all_images else ({}, [])

        heap: list[tuple] = []  # min-heap of (-rank_key...) keeping the best top_k
        counter = 0

        def push(match: Match) -> None:
            nonlocal counter
            key = _rank_key(match.score, match.timestamp, match.topic, match.stamp)
            inv = (_Inverse(key), counter, match)
            counter += 1
            if len(heap) < top_k:
                heapq.heappush(heap, inv)
            elif inv[0] > heap[0][0]:
                heapq.heapreplace(heap, inv)

        covered: set[str] = set()
        why_not: list[str] = []
        if use_embeddings is not False and sims:
            covered, why_not = _search_embeddings(reader, path, store, engine, text, sims, source_of, push)
        if use_embeddings and not covered:
            why_not = why_not or ["the bag has no Similarity messages (process it with `av-scene-vlm bag`)"]
            raise BagError(f"no usable stored embeddings in '{path}': {'; '.join(why_not)}")
        todo = [c for c in images if output_namespace(c.topic) not in covered]
        if todo:
            chosen, _ = _group_by_namespace(todo, explicit=False)
            conns = [c for cs in chosen.values() for c in cs]
            _search_images(reader, path, store, engine, text, conns, batch_size, push)
        elif not covered:
            raise BagError(f"nothing to search in '{path}': {'; '.join(why_not)}")
    finally:
        with suppress(Exception):
            reader.close()
    ranked = sorted(heap, key=lambda x: x[0].key)
    return [m for _, _, m in ranked]


class _Inverse:
    """Orders rank keys in reverse, so a min-heap holds the best entries and drops the worst."""

    __slots__ = ("key",)

    def __init__(self, key: tuple) -> None:
        self.key = key

    def __lt__(self, other: _Inverse) -> bool:
        return self.key > other.key

    def __gt__(self, other: _Inverse) -> bool:
        return self.key < other.key


def _search_embeddings(
    reader: Reader,
    path: Path,
    store: Typestore,
    engine: ZeroShotEngine,
    text: np.ndarray,
    sims: list[Connection],
    source_of: dict[str, list[Connection]],
    push: Callable[[Match], None],
) -> tuple[set[str], list[str]]:
    """Score stored image embeddings; returns the namespaces covered and why others were not."""
    dim = text.shape[0]
    per_topic: dict[str, list[tuple[int, Any]]] = {}
    for conn, ts, raw in _messages(reader, path, sims):
        try:
            msg = store.deserialize_cdr(raw, SIMILARITY)
        except Exception:
            continue
        per_topic.setdefault(conn.topic, []).append((ts, msg))
    covered: set[str] = set()
    why_not: list[str] = []
    for topic, items in per_topic.items():
        models = {m.model_id for _, m in items}
        usable = [
            (ts, m) for ts, m in items if len(m.image_embedding) == dim and m.model_id == engine.model_id
        ]
        if not usable:
            sizes = sorted({len(m.image_embedding) for _, m in items})
            why_not.append(
                f"{topic}: embeddings of {', '.join(sorted(models))} (sizes {sizes}), "
                f"query model {engine.model_id} ({dim})"
            )
            continue
        ns = topic.rsplit("/", 1)[0]
        covered.add(ns)
        src = source_of.get(ns)
        emb = np.stack([np.asarray(m.image_embedding, np.float64) for _, m in usable])
        scores = emb @ text
        for (ts, m), score in zip(usable, scores, strict=True):
            stamp = (int(m.header.stamp.sec), int(m.header.stamp.nanosec))
            frame_id = str(m.header.frame_id)
            loader = _lazy_frame(path, store, src, ts, stamp, frame_id) if src else None
            push(
                Match(
                    topic=src[0].topic if src else topic,
                    stamp=stamp,
                    frame_id=frame_id,
                    score=float(score),
                    timestamp=ts,
                    source="embedding",
                    _loader=loader,
                )
            )
    return covered, why_not


def _lazy_frame(
    path: Path, store: Typestore, conns: list[Connection], ts: int, stamp: tuple[int, int], frame_id: str
) -> Callable[[], np.ndarray]:
    """Re-read one frame: the image at the same record time, else any with the same header."""
    topic = conns[0].topic

    def load() -> np.ndarray:
        reader = _open_reader(path)
        try:
            mine = [c for c in reader.connections if c.topic == topic and c.msgtype in IMAGE_TYPES]
            for start, stop in ((ts, ts + 1), (None, None)):
                it = reader.messages(mine, start=start, stop=stop)
                for conn, _, raw in it:
                    try:
                        frame = _decode(store, conn.msgtype, raw)
                    except ImageDecodeError:
                        continue
                    if (frame.sec, frame.nanosec) == stamp and frame.frame_id == frame_id:
                        return frame.rgb
        except BagError:
            raise
        except Exception as exc:
            raise BagError(f"cannot read bag '{path}': {_reason(exc)}") from None
        finally:
            with suppress(Exception):
                reader.close()
        raise BagError(f"frame {stamp[0]}.{stamp[1]:09d} of '{topic}' is not in bag '{path}'")

    return load


def _search_images(
    reader: Reader,
    path: Path,
    store: Typestore,
    engine: ZeroShotEngine,
    text: np.ndarray,
    conns: list[Connection],
    batch_size: int,
    push: Callable[[Match], None],
) -> None:
    """Decode and encode the images of `conns` in batches, scoring each against the query."""

    def produce() -> Iterator[tuple[Connection, int, _Decoded | None]]:
        for conn, ts, raw in _messages(reader, path, conns):
            try:
                yield conn, ts, _decode(store, conn.msgtype, raw)
            except ImageDecodeError:
                yield conn, ts, None

    batch: list[tuple[Connection, int, _Decoded]] = []

    def flush() -> None:
        if not batch:
            return
        emb = engine.encode_images([f.rgb for _, _, f in batch]).astype(np.float64)
        for (conn, ts, f), score in zip(batch, emb @ text, strict=True):
            push(
                Match(
                    topic=conn.topic,
                    stamp=(f.sec, f.nanosec),
                    frame_id=f.frame_id,
                    score=float(score),
                    timestamp=ts,
                    source="image",
                    _rgb=f.rgb,
                )
            )
        batch.clear()

    with closing(_prefetch(produce(), depth=2 * batch_size + 8)) as items:
        for conn, ts, frame in items:
            if frame is not None:
                batch.append((conn, ts, frame))
                if len(batch) >= batch_size:
                    flush()
    flush()
