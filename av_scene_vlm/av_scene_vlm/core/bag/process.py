"""`process_bag`: classify every frame of a bag and write a new bag = every input message + results.

The work is a pipeline of stages: plan the cameras, open the output (copied connections + result
topics), read and decode ahead on a thread, group records into batches that keep bag order,
classify a batch, write the batch's messages followed by each frame's results. Nothing partial is
left behind: output goes to a hidden directory beside the target and is renamed on success
(`writing.Staging`); a failure to write it (disk full, read-only directory) is OutputError.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..image_codec import DEFAULT_MAX_FRAME_PIXELS, ImageDecodeError, check_max_pixels
from ..progress import progress_bar
from .captions import CaptionSchedule
from .errors import BagError, InputError, OutputError, check_positive, reason
from .events import BagEvents
from .prefetch import prefetch
from .reading import Decoded, decode, group_by_namespace, image_connections, messages, opened, storage_of
from .summary import frame_row, summary_format, write_summary
from .typestore import BAG_VERSION, LABEL_INFO, LABELS_LEAF, LEAVES, STORAGES, bag_typestore
from .writing import ResultWriter, Staging, abort, copy_connections, publish_output

if TYPE_CHECKING:
    from rosbags.interfaces import Connection
    from rosbags.rosbag2 import Reader
    from rosbags.typesys.store import Typestore

    from ..engine import FrameResult, ZeroShotEngine
    from ..events import EventDef


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
    events: list[dict] = field(default_factory=list)  # event intervals (end None: open at the bag's end)


@dataclass(eq=False)
class _Camera:
    topic: str
    namespace: str
    out: dict[str, Connection] = field(default_factory=dict)
    labels_written: bool = False
    frames: int = 0
    bad: int = 0


@dataclass
class _Record:
    conn: Connection  # output connection
    timestamp: int
    raw: bytes
    frame: Decoded | None = None
    camera: _Camera | None = None
    caption: bool = False
    result: FrameResult | None = None


@dataclass
class _Counts:
    frames: int = 0
    bad: int = 0
    captions: int = 0
    copied: int = 0
    rows: list[dict] = field(default_factory=list)
    events: BagEvents | None = None


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
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
    events: Sequence[EventDef] = (),
) -> BagSummary:
    """Classify every frame of `in_bag` and write `out_bag` = all input messages + results.

    `topics` restricts the image topics (default: every sensor_msgs Image/CompressedImage topic;
    when a camera has both raw and `/compressed`, raw is used). Frames that cannot be decoded are
    counted in `bad_frames`, copied unchanged and get no results. With a `captioner` (an object
    with `.caption(rgb)` returning `.text/.prompt/.num_tokens/.latency/.model_id`), each camera
    gets a caption every `caption_every` seconds of bag time (<= 0: every frame). `storage` is
    "sqlite3" or "mcap" (default: the input's). Frames of more than `max_frame_pixels` pixels
    (fields or compressed header) are bad frames, refused before they are decoded. `events`: scene
    events detected per camera (`<ns>/events`, `<ns>/active_events`, intervals in the summary).
    Raises BagError (OutputError when the output cannot be written); never leaves partial output.
    """
    t0 = time.perf_counter()
    in_path, out_path = Path(in_bag), Path(out_bag)
    check_positive("batch_size", batch_size)
    try:
        check_max_pixels(max_frame_pixels)
    except ValueError as exc:
        raise BagError(str(exc).replace("max_pixels", "max_frame_pixels")) from None
    if storage is not None and storage not in STORAGES:
        raise BagError(f"unknown storage '{storage}' (use {' or '.join(STORAGES)})")
    summary = Path(summary_path) if summary_path is not None else None
    summary_fmt = summary_format(summary)
    if not engine.tasks:
        raise BagError("the engine has no tasks: give labels or a tasks config")
    if not in_path.exists():
        raise InputError(f"input bag '{in_path}' does not exist")
    if out_path.exists() or out_path.is_symlink():
        raise BagError(f"output '{out_path}' exists already; remove it or choose another name")
    if summary is not None and summary.exists():
        raise BagError(f"summary file '{summary}' exists already; remove it or choose another name")
    store = bag_typestore(msg_dir)
    counts = _Counts(events=BagEvents(events, engine.tasks) if events else None)

    with opened(in_path) as reader:
        chosen, skipped = group_by_namespace(image_connections(reader, in_path, topics), bool(topics))
        _check_unprocessed(reader, chosen)
        fmt = storage or storage_of(reader, in_path)
        staging = Staging(out_path)
        tmp = staging.dir
        assert tmp is not None
        try:
            cameras = _process(
                reader,
                in_path,
                tmp / out_path.name,
                fmt,
                store,
                engine,
                chosen,
                batch_size=batch_size,
                captioner=captioner,
                caption_every=caption_every,
                progress=progress,
                max_frame_pixels=max_frame_pixels,
                counts=counts,
            )
            if summary is not None and summary_fmt is not None:
                meta = {"input": str(in_path), "output": str(out_path), "model_id": engine.model_id}
                if counts.events is not None:
                    meta["events"] = counts.events.intervals
                tasks = [t.name for t in engine.tasks]
                try:
                    write_summary(tmp / "summary", summary_fmt, counts.rows, tasks, meta)
                except OSError as exc:
                    raise OutputError(f"cannot write summary '{summary}': {exc}") from None
            publish_output(tmp, out_path, summary)
        except BaseException:
            staging.discard()
            raise
        staging.created = []  # they hold the output now
        staging.discard()
    seconds = time.perf_counter() - t0
    return BagSummary(
        input=in_path,
        output=out_path,
        storage=fmt,
        frames=counts.frames,
        bad_frames=counts.bad,
        topics={c.topic: c.frames for c in cameras},
        bad_by_topic={c.topic: c.bad for c in cameras if c.bad},
        namespaces={c.topic: c.namespace for c in cameras},
        skipped_topics=skipped,
        captions=counts.captions,
        messages=counts.copied,
        seconds=seconds,
        fps=counts.frames / seconds if seconds else 0.0,
        summary_path=summary,
        model_id=engine.model_id,
        events=counts.events.intervals if counts.events is not None else [],
    )


def _check_unprocessed(reader: Reader, chosen: dict[str, list[Connection]]) -> None:
    """Refuse a bag that already carries results for a chosen camera (they would be duplicated)."""
    existing = {c.topic for c in reader.connections}
    for ns in chosen:
        for leaf in [*LEAVES, LABELS_LEAF]:
            if f"{ns}/{leaf}" in existing:
                raise BagError(
                    f"input bag already has '{ns}/{leaf}' (already processed?); "
                    "choose other --topics or process the original bag"
                )


def _process(
    reader: Reader,
    in_path: Path,
    bag_path: Path,
    fmt: str,
    store: Typestore,
    engine: ZeroShotEngine,
    chosen: dict[str, list[Connection]],
    *,
    batch_size: int,
    captioner: Any | None,
    caption_every: float,
    progress: bool,
    max_frame_pixels: int,
    counts: _Counts,
) -> list[_Camera]:
    """Run the stages, counting in `counts`; returns the cameras (with their per-topic counts)."""
    from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

    cameras = _plan_cameras(chosen)
    schedule = CaptionSchedule(caption_every) if captioner is not None else None
    writer = Writer(bag_path, version=BAG_VERSION, storage_plugin=StoragePlugin[fmt.upper()])
    try:
        writer.open()
        out = ResultWriter(writer, store, engine)
        conn_map = copy_connections(reader, writer, store)
        _add_result_topics(out, cameras, captioner is not None, counts.events)
        total = sum(c.msgcount for c in reader.connections if c.id in cameras)
        read = _read(reader, in_path, store, conn_map, cameras, max_frame_pixels)
        records = prefetch(read, depth=2 * batch_size + 8)
        with progress_bar(total, in_path.name, progress) as bar, closing(records):
            for chunk, batch in _classified(engine, _chunks(records, batch_size, schedule, counts, bar)):
                _emit(out, chunk, captioner, counts)
                bar.update(len(batch))
        writer.close()
    except BagError:
        abort(writer)
        raise
    except (WriterError, OSError, sqlite3.Error) as exc:  # disk full, read-only, I/O error
        abort(writer)
        raise OutputError(f"cannot write output bag '{bag_path.name}': {reason(exc)}") from None
    except BaseException:
        abort(writer)
        raise
    return list(dict.fromkeys(cameras.values()))


def _plan_cameras(chosen: dict[str, list[Connection]]) -> dict[int, _Camera]:
    """Input connection id -> its camera (one per output namespace)."""
    cameras: dict[int, _Camera] = {}
    for ns, cs in chosen.items():
        cam = _Camera(cs[0].topic, ns)
        for c in cs:
            cameras[c.id] = cam
    return cameras


def _add_result_topics(
    out: ResultWriter, cameras: dict[int, _Camera], captions: bool, events: BagEvents | None
) -> None:
    """The live node's result topics under each camera's namespace (labels latched)."""
    for cam in dict.fromkeys(cameras.values()):
        if events is not None:
            events.add_topics(out, cam.topic, cam.namespace)
        for leaf, msgtype in LEAVES.items():
            if leaf == "caption" and not captions:
                continue
            cam.out[leaf] = out.add(f"{cam.namespace}/{leaf}", msgtype)
        cam.out[LABELS_LEAF] = out.add(f"{cam.namespace}/{LABELS_LEAF}", LABEL_INFO, "TRANSIENT_LOCAL", 1)


def _read(
    reader: Reader,
    in_path: Path,
    store: Typestore,
    conn_map: dict[int, Connection],
    cameras: dict,
    max_frame_pixels: int,
) -> Iterator[_Record]:
    """Stage 1: every input message in bag order; image messages of a camera decoded (None = bad)."""
    for conn, ts, raw in messages(reader, in_path):
        rec = _Record(conn_map[conn.id], ts, raw)
        cam = cameras.get(conn.id)
        if cam is not None:
            rec.camera = cam
            try:
                rec.frame = decode(store, conn.msgtype, raw, max_frame_pixels)
            except ImageDecodeError:
                rec.frame = None
        yield rec


def _chunks(
    records: Iterable[_Record], batch_size: int, schedule: CaptionSchedule | None, counts: _Counts, bar: Any
) -> Iterator[tuple[list[_Record], list[_Record]]]:
    """Stage 2: (records to write in order, the frames among them to classify), a batch at a time.

    Messages before the first frame of a batch pass straight through; bad frames are counted and
    copied without results.
    """
    pending: list[_Record] = []
    batch: list[_Record] = []
    for rec in records:
        cam = rec.camera
        if cam is not None and rec.frame is None:
            cam.bad += 1
            counts.bad += 1
            bar.update(1)
        elif cam is not None:
            cam.frames += 1
            counts.frames += 1
            rec.caption = schedule is not None and schedule.due(cam.topic, rec.timestamp)
            batch.append(rec)
        if not batch and not pending:
            yield [rec], []
            continue
        pending.append(rec)
        if len(batch) >= batch_size:
            yield pending, batch
            pending, batch = [], []
    if pending:
        yield pending, batch


def _classified(
    engine: ZeroShotEngine, chunks: Iterable[tuple[list[_Record], list[_Record]]]
) -> Iterator[tuple[list[_Record], list[_Record]]]:
    """Stage 3: one engine call per batch (all cameras together), one batch in flight: the next batch
    is submitted — its frames copied and, on CUDA, uploaded while the GPU works — before the current
    batch's results are read."""
    previous = None
    for chunk, batch in chunks:
        pending = engine.submit([r.frame.rgb for r in batch]) if batch else None  # type: ignore[union-attr]
        if previous is not None:
            yield _resolve(*previous)
        previous = (chunk, batch, pending)
    if previous is not None:
        yield _resolve(*previous)


def _resolve(chunk: list[_Record], batch: list[_Record], pending: Any) -> tuple[list[_Record], list[_Record]]:
    if pending is not None:
        for r, res in zip(batch, pending.result(), strict=True):
            r.result = res
    return chunk, batch


def _emit(out: ResultWriter, chunk: list[_Record], captioner: Any, counts: _Counts) -> None:
    """Stage 4: copy each message, then its frame's results (and caption) right after it."""
    for r in chunk:
        out.writer.write(r.conn, r.timestamp, r.raw)
        counts.copied += 1
        if r.result is not None:
            _write_results(out, r, captioner, counts)


def _write_results(out: ResultWriter, r: _Record, captioner: Any, counts: _Counts) -> None:
    cam, frame, res = r.camera, r.frame, r.result
    assert cam is not None and frame is not None and res is not None
    if not cam.labels_written:
        out.write(cam.out[LABELS_LEAF], r.timestamp, out.label_info(frame.header))
        cam.labels_written = True
    out.write(cam.out["classification"], r.timestamp, out.classification(frame.header, res))
    out.write(cam.out["similarity"], r.timestamp, out.similarity(frame.header, res))
    row = frame_row(cam.topic, frame, r.timestamp, res)
    if counts.events is not None:
        row["events"] = counts.events.frame(out, cam.topic, r.timestamp, frame, res)
    if r.caption and captioner is not None:
        cap = captioner.caption(frame.rgb)
        out.write(cam.out["caption"], r.timestamp, out.caption(frame.header, cap))
        counts.captions += 1
        row["caption"] = str(cap.text)
    counts.rows.append(row)
    r.frame = None  # release the pixels early
