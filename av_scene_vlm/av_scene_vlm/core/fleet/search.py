"""Searching the fleet index: nearest frames to a query embedding, filtered on stored columns.

Exact (flat) search while the index has no ANN index — below `ANN_MIN_ROWS` a scan is fast and
exact; with one, IVF-PQ candidates are re-ranked on the exact vectors (`refine_factor`), which keeps
recall@10 against exact search at or above 0.95 (measured in benchmarks/bench_fleet_search.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import FleetError
from .events import event_where
from .store import FleetIndex

NPROBES = 32  # IVF partitions searched (of rows / 4096: 244 at 1M rows)
REFINE_FACTOR = 20  # PQ candidates re-ranked exactly: top_k × this (10 gave recall@10 0.76 at 1M)


@dataclass
class Hit:
    """One matching frame; `score` is the cosine of its embedding and the query's."""

    bag: str
    bag_hash: str
    topic: str
    stamp: int  # header stamp, ns
    frame_id: str
    bag_time: int  # record time, ns
    score: float
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> {label, probability}
    caption: str | None = None
    thumbnail: bytes = field(default=b"", repr=False)

    def as_json(self) -> dict[str, Any]:
        """The `--json` object: everything but the thumbnail."""
        return {
            "bag": self.bag,
            "bag_hash": self.bag_hash,
            "topic": self.topic,
            "stamp": self.stamp,
            "frame_id": self.frame_id,
            "bag_time": self.bag_time,
            "score": round(self.score, 6),
            "labels": self.labels,
            "caption": self.caption,
        }


def search_index(
    index: FleetIndex,
    vector: np.ndarray | None,
    *,
    top_k: int = 10,
    where: str | None = None,
    exact: bool | None = None,
    nprobes: int = NPROBES,
    refine_factor: int = REFINE_FACTOR,
    thumbnails: bool = True,
    event: str | None = None,
) -> list[Hit]:
    """The `top_k` frames nearest to `vector` (cosine), best first, among rows matching `where` and,
    with `event`, inside that scene event's intervals (`core.fleet.events`). Without a `vector`: the
    first `top_k` matching frames in record-time order (score 0); that needs `where` or `event`.

    `exact`: None = ANN when the index has one, True = always scan, False = require the ANN index.
    Rows of a bag not completely indexed (a run in progress, or one that died) are never returned.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise FleetError(f"top_k must be a positive integer, got {top_k!r}")
    if event is not None:
        inside = event_where(index, event)
        where = f"({where}) AND {inside}" if where else inside
    if vector is None:
        return _listed(index, top_k, where, thumbnails)
    q = np.asarray(vector, np.float32).ravel()
    if q.shape[0] != index.info.dim:
        raise FleetError(f"query embedding of size {q.shape[0]} for an index of size {index.info.dim}")
    ann = index.has_ann_index()
    if exact is False and not ann:
        raise FleetError(f"index '{index.uri}' has no ANN index (build one with `index --build-index`)")
    columns = [c for c in index.schema.names if c != "vector" and (thumbnails or c != "thumbnail")]
    query = index.frames.search(q, vector_column_name="vector").distance_type("cosine").limit(top_k)
    query = query.select([*columns, "_distance"])
    incomplete = index.incomplete_hashes()
    if incomplete:
        skip = "bag_hash NOT IN (" + ", ".join(f"'{h}'" for h in incomplete) + ")"
        where = f"({where}) AND {skip}" if where else skip
    if where:
        query = query.where(where, prefilter=True)
    if exact or not ann:
        query = query.bypass_vector_index()
    else:
        query = query.nprobes(nprobes).refine_factor(refine_factor)
    try:
        table = query.to_arrow()
    except Exception as exc:  # a bad --where: unknown column, syntax error
        raise FleetError(f"cannot search '{index.uri}': {str(exc).strip().splitlines()[0][:300]}") from None
    return _hits(table.to_pylist(), list(index.info.tasks))


def _listed(index: FleetIndex, top_k: int, where: str | None, thumbnails: bool) -> list[Hit]:
    """Every frame matching `where` (of complete bags), earliest first, the first `top_k` of them."""
    if not where:
        raise FleetError("give a query (text or image), a filter (--where) or an event (--event)")
    incomplete = index.incomplete_hashes()
    if incomplete:
        where = f"({where}) AND bag_hash NOT IN (" + ", ".join(f"'{h}'" for h in incomplete) + ")"
    columns = [c for c in index.schema.names if c not in ("vector", "thumbnail")]
    try:
        rows = index.frames.search().where(where).select(columns).limit(None).to_list()
    except Exception as exc:  # a bad --where
        raise FleetError(f"cannot search '{index.uri}': {str(exc).strip().splitlines()[0][:300]}") from None
    hits = _hits(rows, list(index.info.tasks))[:top_k]
    if thumbnails and hits:  # only the kept rows' thumbnails are read
        keys = " OR ".join(
            f"(bag_hash = '{h.bag_hash}' AND topic = '{h.topic}' AND bag_time = {h.bag_time})" for h in hits
        )
        found = (
            index.frames.search()
            .where(keys)
            .select(["bag_hash", "topic", "bag_time", "thumbnail"])
            .limit(None)
        )
        thumbs = {(r["bag_hash"], r["topic"], r["bag_time"]): r["thumbnail"] for r in found.to_list()}
        for h in hits:
            h.thumbnail = thumbs.get((h.bag_hash, h.topic, h.bag_time)) or b""
    return hits


def _hits(rows: list[dict], tasks: list[str]) -> list[Hit]:
    hits = [
        Hit(
            bag=r["bag"],
            bag_hash=r["bag_hash"],
            topic=r["topic"],
            stamp=int(r["stamp"]),
            frame_id=r["frame_id"],
            bag_time=int(r["bag_time"]),
            score=1.0 - float(r["_distance"]) if "_distance" in r else 0.0,
            labels={t: {"label": r[t], "probability": round(float(r[f"{t}_prob"]), 6)} for t in tasks},
            caption=r.get("caption"),
            thumbnail=r.get("thumbnail") or b"",
        )
        for r in rows
    ]
    # Best first; ties by bag time, topic and bag so the order does not depend on storage layout.
    hits.sort(key=lambda h: (-round(h.score, 6), h.bag_time, h.topic, h.bag))
    return hits
