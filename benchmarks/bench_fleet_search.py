"""Fleet search at scale: exact vs ANN (IVF-PQ + exact re-rank) over synthetic 512-d embeddings.

Rows go into a real fleet index (`FleetIndex`, LanceDB) with one task column; thumbnails are left
empty so that the size on disk is that of the embeddings and the ANN index (a real index adds the
thumbnails: ~5 KiB per frame at 192 px). Queries are stored vectors plus noise, normalised like
the model's. Reported: index build time, size on disk, p50/p95 latency of exact and ANN search,
recall@10 of ANN against exact for each (nprobes, refine_factor).

    PYTHONPATH=av_scene_vlm python benchmarks/bench_fleet_search.py --rows 1000000 --json PATH
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "av_scene_vlm"))

import numpy as np


def du_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def clustered(rng: np.random.Generator, n: int, dim: int, centers: np.ndarray) -> np.ndarray:
    """Unit vectors around random centres (CLIP embeddings of drives cluster by scene)."""
    v = centers[rng.integers(0, len(centers), n)] + rng.normal(scale=0.6 / np.sqrt(dim), size=(n, dim))
    v = v.astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--chunk", type=int, default=100_000)
    parser.add_argument("--settings", default="8:10,16:10,32:20", help="nprobes:refine_factor,...")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from av_scene_vlm.core.fleet import FleetIndex, IndexInfo, search_index

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(2000, args.dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench_fleet_search_", dir="/tmp"))
    try:
        index = FleetIndex.open_or_create(
            str(tmp / "db"),
            IndexInfo("synthetic", args.dim, {"road_user": ["car", "pedestrian"]}),
            commit_rows=10**9,
        )
        t0 = time.perf_counter()
        sample = []
        for start in range(0, args.rows, args.chunk):
            n = min(args.chunk, args.rows - start)
            vec = clustered(rng, n, args.dim, centers)
            sample.append(vec[rng.integers(0, n, max(1, args.queries // (args.rows // args.chunk or 1) + 1))])
            index.add(
                {
                    "bag": ["synthetic"] * n,
                    "bag_hash": ["00"] * n,
                    "topic": ["/front/image_raw"] * n,
                    "stamp": np.arange(start, start + n, dtype=np.int64),
                    "frame_id": ["front"] * n,
                    "bag_time": np.arange(start, start + n, dtype=np.int64),
                    "vector": vec,
                    "road_user": np.where(np.arange(n) % 10 == 0, "pedestrian", "car"),
                    "road_user_prob": np.ones(n, np.float32),
                    "thumbnail": [b""] * n,
                }
            )
            index.flush()
            del vec
        index.finish_bag("00", "synthetic", args.rows, 0, 0.0)  # search returns complete bags' rows only
        index.optimize()
        t_write = time.perf_counter() - t0
        size_data = du_mb(tmp / "db")
        print(
            f"# wrote {args.rows} rows in {t_write:.1f} s, {size_data:.0f} MiB", file=sys.stderr, flush=True
        )
        queries = np.concatenate(sample)[: args.queries]
        queries = queries + rng.normal(scale=0.3 / np.sqrt(args.dim), size=queries.shape).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)

        def timed(**kw) -> tuple[list[float], list[set]]:
            lat, found = [], []
            for q in queries:
                t = time.perf_counter()
                hits = search_index(index, q, top_k=10, thumbnails=False, **kw)
                lat.append((time.perf_counter() - t) * 1000)
                found.append({h.stamp for h in hits})
            return lat, found

        search_index(index, queries[0], top_k=10, exact=True)  # warm the page cache
        exact_lat, exact_found = timed(exact=True)
        print(f"# exact p50 {np.median(exact_lat):.0f} ms", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        index.build_ann_index()
        t_build = time.perf_counter() - t0
        size_total = du_mb(tmp / "db")
        print(f"# ANN build {t_build:.1f} s, {size_total:.0f} MiB", file=sys.stderr, flush=True)
        rows = [
            {
                "search": "exact (flat scan)",
                "p50_ms": round(float(np.median(exact_lat)), 1),
                "p95_ms": round(float(np.percentile(exact_lat, 95)), 1),
                "recall_at_10": 1.0,
            }
        ]
        for setting in args.settings.split(","):
            nprobes, refine = (int(x) for x in setting.split(":"))
            search_index(index, queries[0], top_k=10, nprobes=nprobes, refine_factor=refine)
            lat, found = timed(nprobes=nprobes, refine_factor=refine)
            recall = np.mean([len(a & b) / 10 for a, b in zip(found, exact_found, strict=True)])
            rows.append(
                {
                    "search": f"IVF-PQ nprobes {nprobes}, refine_factor {refine}",
                    "p50_ms": round(float(np.median(lat)), 1),
                    "p95_ms": round(float(np.percentile(lat, 95)), 1),
                    "recall_at_10": round(float(recall), 3),
                }
            )
        filt_lat, _ = timed(where="road_user = 'pedestrian'")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "benchmark": "fleet_search",
        "description": (
            f"{args.rows} synthetic {args.dim}-d unit embeddings (clustered), {args.queries} queries, "
            "top 10, LanceDB on local disk, thumbnails empty"
        ),
        "rows": args.rows,
        "write_s": round(t_write, 1),
        "ann_build_s": round(t_build, 1),
        "size_mb_embeddings": round(size_data, 1),
        "size_mb_with_ann_index": round(size_total, 1),
        "results": rows,
        "ann_filtered_10pct_p50_ms": round(float(np.median(filt_lat)), 1),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    print(result["description"])
    print(
        f"write {t_write:.1f} s; ANN build {t_build:.1f} s; size {size_data:.0f} MiB -> {size_total:.0f} MiB"
    )
    print("| search | p50 ms | p95 ms | recall@10 |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['search']} | {r['p50_ms']} | {r['p95_ms']} | {r['recall_at_10']} |")
    print(f"ANN with a 10 % filter (road_user = 'pedestrian'): p50 {result['ann_filtered_10pct_p50_ms']} ms")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
