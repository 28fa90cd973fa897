"""Cameras of different sizes in one batch: one image-tower call versus one per size (issue 18's soak).

clip_node batches the newest frame of every camera. When the cameras differ in size (a vehicle's
usually do, and a restarted camera may come back at another size), the engine used to run the image
tower once per size, e.g. 1 + 3 frames instead of 4. It now crops and normalizes each size on its own
and runs the tower once (with CUDA graphs on, each size keeps its own graph). Per iteration, in turn:
- `same size`: 4 frames of the first size, one call (the reference);
- `mixed, one call`: the mixed batch through `engine.classify`, as the node calls it now;
- `mixed, per size`: the same frames as one `classify` per size, which is what the engine did before.
ViT-B/32 architecture, random weights, the issue-3 workload (3 tasks x 10 labels x 5 prompts); medians.

    PYTHONPATH=av_scene_vlm python benchmarks/bench_mixed_sizes.py \\
        --json benchmarks/results/mixed_sizes_cpu.json
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


def _size(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="write results to this JSON file")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--iters", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--sizes", nargs="+", default=["480x640", "384x800", "480x640", "480x640"], help="HxW per camera"
    )
    args = parser.parse_args(argv)

    from av_scene_vlm.core.engine import ZeroShotEngine
    from av_scene_vlm.core.tasks import parse_tasks

    loaded = build_model(args.device, "auto")
    engine = ZeroShotEngine(loaded, tasks=parse_tasks(tasks_spec()))
    engine.prepare()
    sizes = [_size(s) for s in args.sizes]
    mixed = [frames_for(s, 1, seed=i)[0] for i, s in enumerate(sizes)]
    same = frames_for(sizes[0], len(sizes), seed=99)
    groups: dict[tuple[int, int], list] = {}
    for frame in mixed:
        groups.setdefault(frame.shape[:2], []).append(frame)
    runs = {
        "same size": lambda: engine.classify(same),
        "mixed, one call": lambda: engine.classify(mixed),
        "mixed, per size": lambda: [engine.classify(g) for g in groups.values()],
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    t0 = time.perf_counter()
    for i in range(args.warmup + args.iters):  # cases alternate: a shared machine's drift hits all
        for name, fn in runs.items():
            t = _timed(fn, 1, 0)[0]
            if i >= args.warmup:
                times[name].append(t)
    backend = engine.backend_info().get("backend")
    print(f"{len(sizes)} cameras {' + '.join(args.sizes)}; {loaded.model_id} on {loaded.device}, {backend}")
    print(f"{'case':>16} {'ms / batch':>11} {'frames/s':>9} {'vs same size':>13}")
    ref = statistics.median(times["same size"])
    rows = []
    for name, t in times.items():
        med = statistics.median(t)
        row = {"case": name, "ms_per_batch": round(1e3 * med, 1), "frames_per_s": round(len(sizes) / med, 1)}
        row["vs_same_size"] = round(med / ref, 3)
        rows.append(row)
        print(
            f"{name:>16} {row['ms_per_batch']:>11.1f} {row['frames_per_s']:>9.1f} "
            f"{row['vs_same_size']:>13.3f}"
        )
    print(f"({time.perf_counter() - t0:.0f} s, {args.iters} iterations)")
    if args.json:
        out = {"hardware": hardware(), "device": str(loaded.device), "backend": backend, "sizes": args.sizes}
        out.update(iters=args.iters, results=rows)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
