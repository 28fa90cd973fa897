"""The two stages every fleet job runs, locally or on Ray workers: decode a bag, embed a batch.

Both work on column batches (dict of column name -> list/array), the unit Ray Data moves between
tasks and actors, so the single-process loop and the Ray pipeline call exactly the same code and
write exactly the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..bag.captions import CaptionSchedule
from ..bag.reading import frames, group_by_namespace, image_connections, opened
from ..bag.typestore import bag_typestore
from ..image_codec import DEFAULT_MAX_FRAME_PIXELS

THUMB_SIDE = 192  # longest side of the stored JPEG thumbnail, px
THUMB_QUALITY = 80
# Columns the decode stage hands on unchanged to the rows.
KEYS = ("bag", "bag_hash", "topic", "stamp", "frame_id", "bag_time", "thumbnail")


@dataclass
class BagCounts:
    """What the decode stage saw in one bag (filled while it runs)."""

    expected: int = 0  # image messages of the chosen topics (from the bag's index)
    frames: int = 0  # decoded
    bad: int = 0  # undecodable (counted, not indexed)


def chosen_connections(reader: Any, path: Path, topics: Sequence[str] | None) -> list:
    """The image connections a fleet job reads: `topics` that the bag has (all image topics by
    default), one topic per camera (raw over compressed, as `bag` does)."""
    conns = image_connections(reader, path, topics, missing_ok=True)
    chosen, _ = group_by_namespace(conns, explicit=False)
    return [c for cs in chosen.values() for c in cs]


def count_frames(path: str | Path, topics: Sequence[str] | None = None) -> int:
    """Image messages a job will read from the bag (its index only: nothing is decoded)."""
    p = Path(path)
    with opened(p) as reader:
        return sum(c.msgcount for c in chosen_connections(reader, p, topics))


def thumbnail(rgb: np.ndarray, side: int = THUMB_SIDE, quality: int = THUMB_QUALITY) -> bytes:
    """A small JPEG of the frame (longest side `side` px) for contact sheets."""
    import cv2

    h, w = rgb.shape[:2]
    scale = min(1.0, side / max(h, w))
    small = rgb
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 RGB
        raise ValueError("cannot encode thumbnail")
    return buf.tobytes()


def decode_bag(
    path: str | Path,
    bag_hash: str,
    *,
    topics: Sequence[str] | None = None,
    caption_every: float | None = None,
    batch_size: int = 16,
    counts: BagCounts | None = None,
    msg_dir: str | Path | None = None,
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
) -> Iterator[dict[str, list]]:
    """Stage 1: the bag's decodable frames as column batches of at most `batch_size` rows.

    Columns: `KEYS`, `rgb` (H×W×3 uint8) and `caption` (bool: due for a caption every
    `caption_every` seconds of bag time per camera; None = no captions). Raises BagError when the
    bag cannot be read (also midway); undecodable frames, and frames of more than
    `max_frame_pixels` pixels (refused before decoding), are counted in `counts.bad` and skipped.
    """
    p = Path(path)
    counts = counts if counts is not None else BagCounts()
    schedule = CaptionSchedule(caption_every) if caption_every is not None else None
    store = bag_typestore(msg_dir)
    bag = str(p)
    with opened(p) as reader:
        conns = chosen_connections(reader, p, topics)
        counts.expected = sum(c.msgcount for c in conns)
        batch: dict[str, list] = _empty()
        for conn, ts, frame in frames(reader, p, store, conns, max_frame_pixels):
            if frame is None:
                counts.bad += 1
                continue
            counts.frames += 1
            values = (bag, bag_hash, conn.topic, frame.stamp_ns, frame.frame_id, ts, thumbnail(frame.rgb))
            for key, value in zip(KEYS, values, strict=True):
                batch[key].append(value)
            batch["rgb"].append(frame.rgb)
            batch["caption"].append(schedule is not None and schedule.due(conn.topic, ts))
            if len(batch["rgb"]) >= batch_size:
                yield batch
                batch = _empty()
        if batch["rgb"]:
            yield batch


def _empty() -> dict[str, list]:
    return {key: [] for key in (*KEYS, "rgb", "caption")}


def embed_batch(engine: Any, captioner: Any | None, batch: dict[str, Any]) -> dict[str, Any]:
    """Stage 2: one engine call for the batch; returns the index rows as columns (no pixels).

    Adds `vector` (N×D float32, L2-normalised), `probs` (N×labels, every task's probabilities, for
    scene events), per task `<task>` (top label) and `<task>_prob`, and `caption` (text for frames
    due for one when a captioner is given, else None).
    """
    return _columns(engine, captioner, batch, engine.classify(list(batch["rgb"])))


def embed_batches(engine: Any, captioner: Any | None, batches: Iterable[dict[str, Any]]) -> Iterator[dict]:
    """`embed_batch` of each batch, one batch in flight: the next batch is submitted (its frames
    copied and, on CUDA, uploaded while the GPU works) before the current one's rows are built."""
    previous = None
    for batch in batches:
        pending = engine.submit(list(batch["rgb"]))
        if previous is not None:
            yield _columns(engine, captioner, previous[0], previous[1].result())
        previous = (batch, pending)
    if previous is not None:
        yield _columns(engine, captioner, previous[0], previous[1].result())


def _columns(engine: Any, captioner: Any | None, batch: dict[str, Any], results: list) -> dict[str, Any]:
    rgb = list(batch["rgb"])
    out: dict[str, Any] = {key: list(batch[key]) for key in KEYS}
    out["vector"] = np.stack([np.asarray(r.image_embedding, np.float32) for r in results])
    # Every label's probability (tasks in order): scene events are detected from them, not stored.
    out["probs"] = np.stack([np.concatenate([t.probabilities for t in r.tasks]) for r in results]).astype(
        np.float32
    )
    for task in engine.tasks:
        tops = [r.task(task.name) for r in results]
        out[task.name] = [t.label for t in tops]
        out[f"{task.name}_prob"] = np.asarray([t.probability for t in tops], np.float32)
    due = list(batch.get("caption", [False] * len(rgb)))
    out["caption"] = [
        str(captioner.caption(img).text) if captioner is not None and flag else None
        for img, flag in zip(rgb, due, strict=True)
    ]
    return out
