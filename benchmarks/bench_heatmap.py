"""What the RViz heatmap costs per frame, on the real ViT-B/32 architecture (random weights).

clip_node computes the heatmap only while `scene/heatmap` has a subscriber. This measures, per frame
size at batch 1 with the issue-3 workload (3 tasks × 10 labels × 5 prompts):
- `classify_ms`: engine.classify without a heatmap;
- `classify_heatmap_ms`: with the patch-similarity map of the top label, upsampled to frame size;
- `overlay_ms`: visualize.overlay_heatmap as the node calls it (downscaled to `heatmap_max_width`
  960 px, colour-mapped, blended, one text line per task);
- `heatmap_extra_ms`: what a heatmap subscriber adds to a frame (median of the per-run differences).
Medians over `--iters` runs. Prints a table; `--json PATH` writes the results.

    PYTHONPATH=av_scene_vlm python benchmarks/bench_heatmap.py --json benchmarks/results/heatmap_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "av_scene_vlm"))

from bench_engine import _timed, build_model, frames_for, hardware, tasks_spec


def _median_ms(times: list[float]) -> float:
    return round(1000 * statistics.median(times), 2)


def measure(size: tuple[int, int], engine, iters: int, warmup: int) -> dict:
    """Plain and heatmap runs alternate, so drift of a shared machine hits both alike."""
    from av_scene_vlm.core.visualize import format_lines, overlay_heatmap

    frame = frames_for(size, 1, seed=size[0])[0]
    result = engine.classify(frame, heatmap=True)[0]
    lines = format_lines(result)
    runs = {
        "classify": lambda: engine.classify(frame),
        "classify_heatmap": lambda: engine.classify(frame, heatmap=True),
        "overlay": lambda: overlay_heatmap(frame, result.heatmap, lines=lines, max_width=960),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for i in range(warmup + iters):
        for name, fn in runs.items():
            t = _timed(fn, 1, 0)[0]
            if i >= warmup:
                times[name].append(t)
    extra = [h - c + o for c, h, o in zip(*times.values(), strict=True)]
    row = {"size": f"{size[0]}x{size[1]}"}
    row.update({f"{name}_ms": _median_ms(t) for name, t in times.items()})
    row["heatmap_extra_ms"] = _median_ms(extra)  # median of the per-iteration differences
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="write results to this JSON file")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", default=["480x640", "720x1280", "1080x1920"], help="HxW")
    args = parser.parse_args(argv)

    from av_scene_vlm.core.engine import ZeroShotEngine
    from av_scene_vlm.core.tasks import parse_tasks

    loaded = build_model(args.device, args.dtype)
    engine = ZeroShotEngine(loaded, tasks=parse_tasks(tasks_spec()))
    engine.prepare()
    rows = []
    header = f"{'size':>10} {'classify ms':>12} {'+heatmap ms':>12} {'overlay ms':>11} {'extra ms':>9}"
    print(f"heatmap cost, batch 1, {loaded.model_id} on {loaded.device} ({loaded.dtype})")
    print(header)
    t0 = time.perf_counter()
    for text in args.sizes:
        h, w = (int(v) for v in text.lower().split("x"))
        row = measure((h, w), engine, args.iters, args.warmup)
        rows.append(row)
        print(
            f"{row['size']:>10} {row['classify_ms']:>12.2f} {row['classify_heatmap_ms']:>12.2f} "
            f"{row['overlay_ms']:>11.2f} {row['heatmap_extra_ms']:>9.2f}"
        )
    print(f"({time.perf_counter() - t0:.0f} s)")
    if args.json:
        out = {
            "hardware": hardware(),
            "device": str(loaded.device),
            "dtype": str(loaded.dtype),
            "iters": args.iters,
            "results": rows,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
