"""The fleet job on Ray Data: the same stages as the local loop, spread over a cluster.

- content hashes: a Ray Data `map` over the bag list (each bag read once, in parallel);
- decoding: `map_batches` with a generator function, one bag per input block, so bags are sharded
  over tasks and each streams its frames in batches (a bag never has to fit in memory);
- the model: `map_batches` with a callable class in an actor pool (`ActorPoolStrategy`), one actor
  per GPU with `num_gpus`, the engine built once per actor from the `EngineSpec`;
- writing: the driver consumes the stream and writes through the same `FleetIndex` as the local
  path, so incremental runs, resume and "bag complete" rows behave exactly the same.

Each decode task ends its bag with one end-of-bag row (frames decoded, bad frames, error); the
driver marks a bag complete once that row and all its frames have arrived (order across actors is
not preserved), and drops the rows of a bag whose decoding failed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..bag.errors import BagError, reason
from .bookkeeping import BagTask, fail, skip_if_done
from .discover import content_hash
from .errors import FleetError, require
from .frames import KEYS, BagCounts, decode_bag, embed_batch
from .spec import EngineSpec
from .store import FleetIndex

END_COLUMNS = ("end", "end_frames", "end_bad", "end_error")


@dataclass
class _BagState:
    path: str
    started: float
    received: int = 0
    expected: int | None = None  # frames the decode task yielded (known at its end row)
    bad: int = 0
    error: str = ""
    written: int = 0


def init_ray(options: Any) -> Any:
    """`ray` connected: to `options.address`, or a new local instance (kept if already running)."""
    import logging

    ray = require("ray")
    require("ray.data")
    # Ray Data's per-dataset lines (and its note that we turned its progress bars off) would
    # interleave with our frame counter; errors still show.
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    if not ray.is_initialized():
        kwargs = dict(options.init_kwargs)
        kwargs.setdefault("include_dashboard", False)
        kwargs.setdefault("log_to_driver", False)
        ray.init(address=options.address, **kwargs)
    return ray


def hash_bags(paths: Sequence[Path]) -> dict[str, str]:
    """path -> content hash ("" when unreadable), computed in parallel Ray tasks."""
    import ray.data

    if not paths:
        return {}
    ds = ray.data.from_items([{"path": str(p)} for p in paths], override_num_blocks=len(paths))
    rows = ds.map(_hash_row, num_cpus=0.5).take_all()
    return {r["path"]: r["bag_hash"] for r in rows}


def _hash_row(row: dict) -> dict:
    try:
        return {"path": row["path"], "bag_hash": content_hash(row["path"])}
    except FleetError:
        return {"path": row["path"], "bag_hash": ""}


def decode_bags(
    batch: dict[str, Any],
    topics: Sequence[str] | None,
    caption_every: float | None,
    batch_size: int,
    max_frame_pixels: int,
) -> Iterator[dict[str, Any]]:
    """Ray decode task: frames of each bag in `batch` as column batches, then its end-of-bag row."""
    for path, bag_hash in zip(batch["bag"], batch["bag_hash"], strict=True):
        counts = BagCounts()
        error = ""
        try:
            for cols in decode_bag(
                str(path),
                str(bag_hash),
                topics=topics,
                caption_every=caption_every,
                batch_size=batch_size,
                counts=counts,
                max_frame_pixels=max_frame_pixels,
            ):
                n = len(cols["rgb"])
                yield {
                    **cols,
                    "end": [False] * n,
                    "end_frames": [0] * n,
                    "end_bad": [0] * n,
                    "end_error": [""] * n,
                }
        except BagError as exc:
            error = reason(exc) or "unreadable"
        yield _end_row(str(path), str(bag_hash), counts, error)


def _end_row(path: str, bag_hash: str, counts: BagCounts, error: str) -> dict[str, list]:
    row: dict[str, list] = {key: [None] for key in KEYS}
    row.update(bag=[path], bag_hash=[bag_hash], topic=[""], stamp=[0], frame_id=[""], bag_time=[0])
    row.update(thumbnail=[b""], rgb=[np.zeros((1, 1, 3), np.uint8)], caption=[False])
    row.update(end=[True], end_frames=[counts.frames], end_bad=[counts.bad], end_error=[error])
    return row


class EmbedActor:
    """Ray actor: holds one engine (and captioner); embeds the frame rows of each batch."""

    def __init__(self, spec: EngineSpec) -> None:
        self.engine = spec.build()
        self.captioner = spec.build_captioner()
        self.dim = int(self.engine.encode_texts(["a"]).shape[1])

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        end = np.asarray(batch["end"], bool)
        frames = {
            k: [v for v, e in zip(batch[k], end, strict=True) if not e] for k in (*KEYS, "rgb", "caption")
        }
        out = embed_batch(self.engine, self.captioner, frames) if frames["rgb"] else None
        rows: dict[str, list] = {k: [] for k in (*KEYS, "vector", "probs", "caption", *END_COLUMNS)}
        n_labels = sum(len(t.labels) for t in self.engine.tasks)
        for t in self.engine.tasks:
            rows[t.name], rows[f"{t.name}_prob"] = [], []
        k = 0
        for i, is_end in enumerate(end):
            for key in KEYS:
                rows[key].append(batch[key][i] if is_end else out[key][k])  # type: ignore[index]
            for key in END_COLUMNS:
                rows[key].append(batch[key][i])
            if is_end:
                rows["vector"].append(np.zeros(self.dim, np.float32))
                rows["probs"].append(np.zeros(n_labels, np.float32))
                rows["caption"].append(None)
                for t in self.engine.tasks:
                    rows[t.name].append("")
                    rows[f"{t.name}_prob"].append(0.0)
                continue
            rows["vector"].append(out["vector"][k])  # type: ignore[index]
            rows["probs"].append(out["probs"][k])  # type: ignore[index]
            rows["caption"].append(out["caption"][k])  # type: ignore[index]
            for t in self.engine.tasks:
                rows[t.name].append(out[t.name][k])  # type: ignore[index]
                rows[f"{t.name}_prob"].append(float(out[f"{t.name}_prob"][k]))  # type: ignore[index]
            k += 1
        rows["vector"] = np.stack(rows["vector"]) if rows["vector"] else np.zeros((0, self.dim), np.float32)
        rows["probs"] = np.stack(rows["probs"]) if rows["probs"] else np.zeros((0, n_labels), np.float32)
        return rows


def actor_resources(options: Any) -> tuple[int, dict[str, float]]:
    """(actors, remote args per actor): one per GPU when `num_gpus` >= 1, one sharing a fraction
    when below 1, else `actors` CPU actors."""
    if options.num_gpus and options.num_gpus > 0:
        n = max(1, math.floor(options.num_gpus))
        return n, {"num_gpus": options.num_gpus / n, "num_cpus": options.cpus_per_actor}
    return max(1, int(options.actors)), {"num_cpus": options.cpus_per_actor}


def run_ray(
    tasks: list,
    store: FleetIndex,
    spec: EngineSpec,
    options: Any,
    summary: Any,
    totals: dict[Path, int],
    bar: Any,
    topics: Sequence[str] | None,
    caption_every: float | None,
    batch_size: int,
    on_rows: Any,
    max_frame_pixels: int,
) -> None:
    """Index `tasks` on Ray Data, writing through `store` from this (driver) process."""
    init_ray(options)
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours counts frames; Ray's would interleave with it
    ctx.print_on_execution_start = False
    hashes = hash_bags([t.path for t in tasks])
    done = store.completed()
    todo = []
    for task in tasks:
        task.bag_hash = hashes.get(str(task.path), "")
        if not task.bag_hash:
            fail(task, "cannot read the bag's files", summary, bar)
        elif not skip_if_done(task, done, summary, bar, totals[task.path]):
            store.begin_bag(task.bag_hash)
            todo.append(task)
    if not todo:
        return
    actors, remote = actor_resources(options)
    ds = ray.data.from_items(
        [{"bag": str(t.path), "bag_hash": t.bag_hash} for t in todo], override_num_blocks=len(todo)
    )
    ds = ds.map_batches(
        decode_bags,
        batch_size=1,
        num_cpus=0.5,
        fn_kwargs={
            "topics": list(topics) if topics else None,
            "caption_every": caption_every,
            "batch_size": batch_size,
            "max_frame_pixels": max_frame_pixels,
        },
    )
    ds = ds.map_batches(
        EmbedActor,
        fn_constructor_kwargs={"spec": spec},
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors),
        **remote,
    )
    states = {t.bag_hash: _BagState(str(t.path), time.perf_counter()) for t in todo}
    for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
        _consume(batch, store, states, summary, bar, on_rows)
    for bag_hash, state in states.items():  # never completed: report, leave no rows
        _drop(store, bag_hash, state, state.error or "the pipeline ended before the bag did", summary, bar)


def _consume(batch: dict, store: FleetIndex, states: dict, summary: Any, bar: Any, on_rows: Any) -> None:
    """Write a batch's frame rows; close the bags whose end row and frames have all arrived."""
    end = np.asarray(batch["end"], bool)
    if (~end).any():
        keep = np.flatnonzero(~end)
        cols = {k: [batch[k][i] for i in keep] for k in batch if k not in END_COLUMNS}
        cols["vector"] = np.asarray(batch["vector"])[keep]
        committed = store.add(cols)
        bar.update(len(keep))
        for h in cols["bag_hash"]:
            states[str(h)].received += 1
        if committed and on_rows is not None:
            for h in dict.fromkeys(cols["bag_hash"]):
                on_rows(states[str(h)].path, states[str(h)].received)
    for i in np.flatnonzero(end):
        state = states[str(batch["bag_hash"][i])]
        state.expected = int(batch["end_frames"][i])
        state.bad = int(batch["end_bad"][i])
        state.error = str(batch["end_error"][i])
    for h, state in list(states.items()):
        if state.expected is not None and state.received >= state.expected:
            del states[h]
            if state.error:
                _drop(store, h, state, state.error, summary, bar)
                continue
            store.finish_bag(h, state.path, state.received, state.bad, time.perf_counter() - state.started)
            summary.indexed.append(state.path)
            summary.frames += state.received
            summary.bad_frames += state.bad


def _drop(store: FleetIndex, bag_hash: str, state: _BagState, why: str, summary: Any, bar: Any) -> None:
    store.discard_bag(bag_hash)
    fail(BagTask(Path(state.path), bag_hash), why, summary, bar)
