"""`index_bags`: every image frame of many bags into the fleet index, incrementally.

Order of work: find the bags, open (or create) the index for the run's model and tasks — refusing
another model's index before anything heavy —, name each bag by its content hash and skip those
already complete, then decode → embed → write bag by bag (in this process, or on Ray with
`ray=RayOptions(...)`), and finally compact the tables and build the ANN index when due.
A bag that cannot be read is reported in `failed` and leaves no rows; the others proceed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bag.errors import BagError, reason
from ..bag.prefetch import prefetch
from ..events import EventDef, EventError, check_events, events_yaml
from ..image_codec import DEFAULT_MAX_FRAME_PIXELS, check_max_pixels
from ..progress import progress_bar
from .bookkeeping import BagTask, IndexSummary, fail, skip_if_done
from .discover import content_hash, find_bags
from .errors import FleetError, StorageError
from .events import EventLog
from .frames import BagCounts, count_frames, decode_bag, embed_batches
from .spec import EngineSpec
from .store import ANN_MIN_ROWS, FleetIndex, IndexInfo

OnRows = Callable[[str, int], None]
"""Called after each commit of a bag's rows with (bag path, rows of that bag committed so far)."""


@dataclass
class RayOptions:
    """Run the job on Ray Data: `address` None = start Ray on this machine; `num_gpus` in all (one
    model actor per GPU, or one sharing a fraction); `actors` model actors when there are no GPUs."""

    address: str | None = None
    num_gpus: float = 0.0
    actors: int = 1
    cpus_per_actor: float = 1.0
    init_kwargs: dict = field(default_factory=dict)


def embedding_dim(spec: EngineSpec, engine: Any | None = None) -> int:
    """The model's embedding size, from the loaded engine or the model's config (no weights)."""
    if engine is not None:
        return int(engine.encode_texts(["a"]).shape[1])
    from transformers import AutoConfig

    from ..models import DEFAULT_CLIP_MODEL, ModelLoadError, from_pretrained

    config = from_pretrained(AutoConfig, spec.model, example=DEFAULT_CLIP_MODEL)
    dim = getattr(config, "projection_dim", None)
    if not dim:
        raise ModelLoadError(
            f"model '{spec.model}' is not a CLIP-family model: its config has no projection_dim"
        )
    return int(dim)


def index_info(spec: EngineSpec, dim: int, events: Sequence[EventDef] = ()) -> IndexInfo:
    """The index metadata of a run of `spec` (and its scene events)."""
    return IndexInfo(
        model_id=spec.model,
        dim=dim,
        tasks={t.name: t.label_names for t in spec.tasks},
        templates=list(spec.templates),
        events=events_yaml(events),
    )


def index_bags(
    paths: Sequence[str | Path],
    db: str | Path,
    spec: EngineSpec,
    *,
    topics: Sequence[str] | None = None,
    caption_every: float | None = None,
    batch_size: int = 16,
    build_index: bool | None = None,
    ann_min_rows: int = ANN_MIN_ROWS,
    progress: bool = True,
    on_rows: OnRows | None = None,
    commit_rows: int = 1024,
    engine: Any | None = None,
    captioner: Any | None = None,
    ray: RayOptions | None = None,
    storage_options: dict | None = None,
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
    events: Sequence[EventDef] = (),
) -> IndexSummary:
    """Index every image frame of the bags under `paths` into the LanceDB index at `db`.

    `spec` names the model and tasks (recorded in the index; another model's index is refused);
    `engine`/`captioner` may be given already loaded for the in-process path. `build_index`: None =
    build the ANN index once the index has `ann_min_rows` rows, True = now, False = never.
    `on_rows` is called after every commit (`commit_rows` rows). Frames of more than
    `max_frame_pixels` pixels are bad frames, refused before decoding. Raises FleetError (index
    problems; StorageError when the index cannot be written: the run stops, the bag being indexed
    leaves no rows searches see) and ModelLoadError; bag problems are reported in `failed`.
    `events`: scene events whose intervals each bag records (`core.fleet.events`; `search --event`).
    """
    t0 = time.perf_counter()
    try:
        check_max_pixels(max_frame_pixels)
    except ValueError as exc:
        raise FleetError(str(exc).replace("max_pixels", "max_frame_pixels")) from None
    if not spec.tasks:
        raise FleetError("no tasks: give labels or a tasks config (their top labels become columns)")
    try:
        check_events(events, spec.tasks)
    except EventError as exc:
        raise FleetError(str(exc)) from None
    bags = find_bags(paths)
    if engine is None and ray is None:
        engine = spec.build()
    if captioner is None and ray is None and caption_every is not None:
        captioner = spec.build_captioner()
    store = FleetIndex.open_or_create(
        str(db),
        index_info(spec, embedding_dim(spec, engine), events),
        storage_options=storage_options,
        commit_rows=commit_rows,
    )
    if store.info.events:
        store.event_log = EventLog(store)
    summary = IndexSummary(db=str(db), model_id=spec.model, bags=len(bags))
    tasks = [BagTask(p) for p in bags]
    totals = {t.path: _expected(t.path, topics) for t in tasks}
    bar = progress_bar(sum(totals.values()), "index", progress)
    job = (summary, totals, bar, topics, caption_every, batch_size, on_rows, max_frame_pixels)
    with bar:
        if ray is None:
            _run_local(tasks, store, engine, captioner, *job)
        else:
            from .ray_index import run_ray

            run_ray(tasks, store, spec, ray, *job)
    if summary.frames:
        store.optimize()
    summary.ann_built = store.maybe_build_ann_index(build_index, ann_min_rows) if store.count() else False
    summary.ann_index = store.has_ann_index()
    summary.rows = store.count()
    summary.seconds = time.perf_counter() - t0
    summary.fps = summary.frames / summary.seconds if summary.seconds else 0.0
    return summary


def _expected(path: Path, topics: Sequence[str] | None) -> int:
    try:
        return count_frames(path, topics)
    except BagError:
        return 0  # reported when the bag is read


def _run_local(
    tasks: list[BagTask],
    store: FleetIndex,
    engine: Any,
    captioner: Any | None,
    summary: IndexSummary,
    totals: dict[Path, int],
    bar: Any,
    topics: Sequence[str] | None,
    caption_every: float | None,
    batch_size: int,
    on_rows: OnRows | None,
    max_frame_pixels: int,
) -> None:
    """Bag by bag in this process; decoding runs on a thread ahead of the model."""
    done = store.completed()
    for task in tasks:
        t0 = time.perf_counter()
        try:
            task.bag_hash = content_hash(task.path)
        except FleetError as exc:
            fail(task, str(exc), summary, bar)
            continue
        if skip_if_done(task, done, summary, bar, totals[task.path]):
            continue
        store.begin_bag(task.bag_hash)
        counts = BagCounts()
        written = 0
        batches = decode_bag(
            task.path,
            task.bag_hash,
            topics=topics,
            caption_every=caption_every,
            batch_size=batch_size,
            counts=counts,
            max_frame_pixels=max_frame_pixels,
        )
        try:
            with closing(prefetch(batches, depth=2)) as stream:
                for columns in embed_batches(engine, captioner, stream):
                    committed = store.add(columns)
                    bar.update(len(columns["vector"]))
                    if committed:
                        written += committed
                        if on_rows is not None:
                            on_rows(str(task.path), written)
            written += store.flush()
        except BagError as exc:
            store.discard_bag(task.bag_hash)
            del done[task.bag_hash]
            fail(task, reason(exc), summary, bar)
            continue
        except StorageError:
            store.abandon_bag(task.bag_hash)
            raise
        if on_rows is not None and written:
            on_rows(str(task.path), written)
        store.finish_bag(task.bag_hash, str(task.path), counts.frames, counts.bad, time.perf_counter() - t0)
        summary.indexed.append(str(task.path))
        summary.frames += counts.frames
        summary.bad_frames += counts.bad
