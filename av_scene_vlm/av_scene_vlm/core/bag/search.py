"""`search_bag`: rank the frames of one bag by CLIP similarity with a sentence or an example image.

A processed bag's stored Similarity embeddings are used when they come from the query's model (no
image is decoded); other cameras have their frames decoded and encoded in batches. The best `top_k`
are kept in a heap, so memory does not grow with the drive's length. Each match carries what the bag
recorded for its frame (top labels, caption), and `where` filters on those as on a fleet index
(`where.py`), before the ranking.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..naming import output_namespace
from .errors import BagError, check_positive
from .prefetch import prefetch
from .reading import Decoded, frames, group_by_namespace, messages, opened, read_frame, topic_list
from .typestore import IMAGE_TYPES, LABEL_INFO, SIMILARITY, bag_typestore
from .where import FrameFilter, FrameKey, FrameLabels, frame_labels, frame_row

if TYPE_CHECKING:
    from rosbags.interfaces import Connection
    from rosbags.rosbag2 import Reader
    from rosbags.typesys.store import Typestore

    from ..engine import ZeroShotEngine


@dataclass
class Match:
    """One search hit. `image()` returns the frame's RGB (kept from the scan, or re-read lazily)."""

    topic: str  # the image topic (or the similarity topic when the bag has no images for it)
    stamp: tuple[int, int]  # header stamp (sec, nanosec)
    frame_id: str
    score: float  # cosine of image and query embeddings
    timestamp: int  # bag record time, ns
    source: str  # "embedding" (stored Similarity) or "image" (encoded now)
    namespace: str = ""  # the camera's output namespace
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> {label, probability}
    caption: str | None = None
    _rgb: np.ndarray | None = field(default=None, repr=False, compare=False)
    _loader: Callable[[], np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def stamp_str(self) -> str:
        return f"{self.stamp[0]}.{self.stamp[1]:09d}"

    @property
    def stamp_ns(self) -> int:
        return self.stamp[0] * 10**9 + self.stamp[1]

    @property
    def key(self) -> FrameKey:
        return (self.namespace, *self.stamp, self.frame_id)

    def image(self) -> np.ndarray:
        """H×W×3 uint8 RGB of the frame (BagError if the bag does not hold it)."""
        if self._rgb is None:
            if self._loader is None:
                raise BagError(f"frame {self.stamp_str} of '{self.topic}' is not in the bag")
            self._rgb = self._loader()
        return self._rgb


def recorded_model(bag: str | Path, msg_dir: str | Path | None = None) -> str | None:
    """The model id a processed bag's results were computed with (None for a raw bag).

    Read from the per-camera LabelInfo (one small message each), else the first Similarity.
    """
    path = Path(bag)
    store = bag_typestore(msg_dir)
    with opened(path) as reader:
        for msgtype in (LABEL_INFO, SIMILARITY):
            conns = [c for c in reader.connections if c.msgtype == msgtype]
            if not conns:
                continue
            for _, _, raw in messages(reader, path, conns):
                try:
                    model = str(store.deserialize_cdr(raw, msgtype).model_id)
                except Exception:
                    continue
                if model:
                    return model
    return None


class _TopK:
    """The best `k` matches seen so far (ties: earlier bag time, then topic, then stamp first)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.heap: list[tuple] = []
        self.counter = 0

    def push(self, match: Match) -> None:
        key = (-match.score, match.timestamp, match.topic, match.stamp)
        inv = (_Inverse(key), self.counter, match)
        self.counter += 1
        if len(self.heap) < self.k:
            heapq.heappush(self.heap, inv)
        elif inv[0] > self.heap[0][0]:
            heapq.heapreplace(self.heap, inv)

    def ranked(self) -> list[Match]:
        return [m for _, _, m in sorted(self.heap, key=lambda x: x[0].key)]


class _Collector:
    """Matches in: what the bag recorded for each frame attached, `where` applied, the best kept."""

    def __init__(self, path: Path, top_k: int, found: dict[FrameKey, FrameLabels], where: FrameFilter | None):
        self.path, self.best, self.found, self.where = path, _TopK(top_k), found, where

    def add(self, matches: list[Match]) -> None:
        for m in matches:
            entry = self.found.get(m.key)
            if entry is not None:
                m.labels, m.caption = entry.labels, entry.caption
        if self.where is not None:
            rows = [
                frame_row(self.path, m.topic, m.stamp_ns, m.frame_id, m.timestamp, self.found.get(m.key))
                for m in matches
            ]
            matches = [m for m, keep in zip(matches, self.where.keep(rows), strict=True) if keep]
        for m in matches:
            self.best.push(m)


class _Inverse:
    """Orders rank keys in reverse, so a min-heap holds the best entries and drops the worst."""

    __slots__ = ("key",)

    def __init__(self, key: tuple) -> None:
        self.key = key

    def __lt__(self, other: _Inverse) -> bool:
        return self.key > other.key

    def __gt__(self, other: _Inverse) -> bool:
        return self.key < other.key


def search_bag(
    bag: str | Path,
    query: str | None,
    engine: ZeroShotEngine,
    *,
    top_k: int = 10,
    topics: Sequence[str] | None = None,
    batch_size: int = 16,
    use_embeddings: bool | None = None,
    msg_dir: str | Path | None = None,
    vector: np.ndarray | None = None,
    where: str | None = None,
) -> list[Match]:
    """The `top_k` frames most similar to `query` (or to the query embedding `vector`, e.g. of an
    example image), best first (ties: earlier bag time first), among those `where` keeps.

    A processed bag's Similarity embeddings are used when they come from the engine's model
    (`use_embeddings`: None = when available, True = required, False = always encode the images);
    cameras without usable embeddings have their images decoded and encoded in batches.
    `topics` restricts image topics (or similarity topics) to search.
    """
    path = Path(bag)
    if vector is None and (not isinstance(query, str) or not query.strip()):
        raise BagError("the search query is empty")
    check_positive("top_k", top_k)
    check_positive("batch_size", batch_size)
    store = bag_typestore(msg_dir)
    text = (engine.encode_texts([query.strip()])[0] if vector is None else np.asarray(vector)).astype(
        np.float64
    )
    with opened(path) as reader:
        found, tasks = frame_labels(reader, path, store)
        best = _Collector(path, top_k, found, FrameFilter(where, tasks, path) if where else None)
        images, sims, source_of = _search_topics(reader, path, topics)
        covered: set[str] = set()
        why_not: list[str] = []
        if use_embeddings is not False and sims:
            covered, why_not = _search_embeddings(
                reader, path, store, engine, text, sims, source_of, best.add
            )
        if use_embeddings and not covered:
            why_not = why_not or ["the bag has no Similarity messages (process it with `av-scene-vlm bag`)"]
            raise BagError(f"no usable stored embeddings in '{path}': {'; '.join(why_not)}")
        todo = [c for c in images if output_namespace(c.topic) not in covered]
        if todo:
            chosen, _ = group_by_namespace(todo, explicit=False)
            conns = [c for cs in chosen.values() for c in cs]
            _search_images(reader, path, store, engine, text, conns, batch_size, best.add)
        elif not covered:
            raise BagError(f"nothing to search in '{path}': {'; '.join(why_not)}")
    return best.best.ranked()


def _search_topics(
    reader: Reader, path: Path, topics: Sequence[str] | None
) -> tuple[list[Connection], list[Connection], dict[str, list[Connection]]]:
    """(image connections, similarity connections, namespace -> image topic that fed it)."""
    wanted = set(topics or ())
    all_images = [c for c in reader.connections if c.msgtype in IMAGE_TYPES]
    known = {c.topic for c in reader.connections}
    for t in wanted:
        if t not in known:
            raise BagError(f"topic '{t}' is not in bag '{path}' (topics: {topic_list(reader)})")
    images = [c for c in all_images if not wanted or c.topic in wanted]
    wanted_ns = {output_namespace(t) for t in wanted if t in {c.topic for c in all_images}}
    sims = [
        c
        for c in reader.connections
        if c.msgtype == SIMILARITY
        and (not wanted or c.topic in wanted or c.topic.rsplit("/", 1)[0] in wanted_ns)
    ]
    if not images and not sims:
        raise BagError(f"no image or similarity topics to search in '{path}' (topics: {topic_list(reader)})")
    source_of, _ = group_by_namespace(all_images, explicit=False) if all_images else ({}, [])
    return images, sims, source_of


def _search_embeddings(
    reader: Reader,
    path: Path,
    store: Typestore,
    engine: ZeroShotEngine,
    text: np.ndarray,
    sims: list[Connection],
    source_of: dict[str, list[Connection]],
    add: Callable[[list[Match]], None],
) -> tuple[set[str], list[str]]:
    """Score stored image embeddings; returns the namespaces covered and why others were not."""
    dim = text.shape[0]
    per_topic: dict[str, list[tuple[int, Any]]] = {}
    for conn, ts, raw in messages(reader, path, sims):
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
        matches = []
        for (ts, m), score in zip(usable, emb @ text, strict=True):
            stamp = (int(m.header.stamp.sec), int(m.header.stamp.nanosec))
            frame_id = str(m.header.frame_id)
            loader = _lazy_frame(path, store, src[0].topic, ts, stamp, frame_id) if src else None
            matches.append(
                Match(
                    topic=src[0].topic if src else topic,
                    stamp=stamp,
                    frame_id=frame_id,
                    score=float(score),
                    timestamp=ts,
                    source="embedding",
                    namespace=ns,
                    _loader=loader,
                )
            )
        add(matches)
    return covered, why_not


def _lazy_frame(
    path: Path, store: Typestore, topic: str, ts: int, stamp: tuple[int, int], frame_id: str
) -> Callable[[], np.ndarray]:
    return lambda: read_frame(path, store, topic, ts, stamp, frame_id)


def _search_images(
    reader: Reader,
    path: Path,
    store: Typestore,
    engine: ZeroShotEngine,
    text: np.ndarray,
    conns: list[Connection],
    batch_size: int,
    add: Callable[[list[Match]], None],
) -> None:
    """Decode and encode the images of `conns` in batches, scoring each against the query."""
    batch: list[tuple[Connection, int, Decoded]] = []

    def flush() -> None:
        if not batch:
            return
        emb = engine.encode_images([f.rgb for _, _, f in batch]).astype(np.float64)
        add(
            [
                Match(
                    topic=conn.topic,
                    stamp=(f.sec, f.nanosec),
                    frame_id=f.frame_id,
                    score=float(score),
                    timestamp=ts,
                    source="image",
                    namespace=output_namespace(conn.topic),
                    _rgb=f.rgb,
                )
                for (conn, ts, f), score in zip(batch, emb @ text, strict=True)
            ]
        )
        batch.clear()

    with closing(prefetch(frames(reader, path, store, conns), depth=2 * batch_size + 8)) as items:
        for conn, ts, frame in items:
            if frame is not None:
                batch.append((conn, ts, frame))
                if len(batch) >= batch_size:
                    flush()
    flush()
