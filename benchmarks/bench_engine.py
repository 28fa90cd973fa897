"""Engine vs transformers' zero-shot pipeline on the real ViT-B/32 architecture (random weights).

Workload (issue 3): 3 tasks × 10 labels × 5 prompts, frames of 640×480 and 1920×1080, batch 1 and 8.
Timing is real even though labels are not: default `CLIPConfig()` is ViT-B/32 and the tokenizer is
the real CLIP BPE (from open_clip's vocabulary file) so prompt lengths are real.

Baselines (what a user would write with the pipeline, since it has no prompt ensembles):
- `pipeline`: one call per task with all 50 of its prompts as candidate labels (template "{}"),
  probabilities summed per label — the cheapest correct use (3 image encodes per frame);
- `pipeline_per_prompt`: one call per task and prompt index with 10 labels (15 calls per frame),
  probabilities averaged — the direct translation of "5 templates"; measured at batch 1 only.

Each system runs in its own process so peak RSS is its own. Prints a table; `--json PATH` writes
per case `engine_fps`, `pipeline_fps`, `speedup` and the details.

    PYTHONPATH=av_scene_vlm python benchmarks/bench_engine.py --json benchmarks/results/engine_cpu.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "av_scene_vlm"))

LABELS = {
    "road_user": [
        "car",
        "truck",
        "bus",
        "bicycle",
        "motorcycle",
        "pedestrian",
        "animal",
        "scooter",
        "tram",
        "van",
    ],
    "weather": [
        "clear sky",
        "rain",
        "snow",
        "fog",
        "hail",
        "storm",
        "drizzle",
        "sleet",
        "overcast",
        "sunshine",
    ],
    "road_type": [
        "highway",
        "urban street",
        "residential street",
        "parking lot",
        "rural road",
        "tunnel",
        "bridge",
        "roundabout",
        "intersection",
        "dirt road",
    ],
}
PROMPTS = [
    "a photo of a {}.",
    "a dashcam photo of a {}.",
    "a blurry photo of a {}.",
    "a photo of the {} seen from a car.",
    "a low resolution photo of a {}.",
]


def tasks_spec() -> dict[str, dict[str, list[str]]]:
    return {t: {lab: [p.format(lab) for p in PROMPTS] for lab in labels} for t, labels in LABELS.items()}


def build_model(device: str, dtype: str):
    """Random ViT-B/32 CLIP with the real tokenizer, in memory (no download, no disk)."""
    import torch
    from av_scene_vlm.core.models import LoadedClip, resolve_device, resolve_dtype
    from av_scene_vlm.random_weights import build_clip_tokenizer
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig()).eval().to(dev, dt)
    tokenizer = build_clip_tokenizer(real_bpe=True)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer)
    return LoadedClip(model=model, processor=processor, model_id="random ViT-B/32", device=dev, dtype=dt)


def frames_for(size: tuple[int, int], n: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        base = np.stack([(xx + 7 * i) % 256, (yy + 3 * i) % 256, ((xx + yy) // 2) % 256], -1).astype(np.uint8)
        noise = rng.integers(0, 32, (h, w, 3), dtype=np.uint8)
        out.append(base + noise)
    return out


def _timed(fn, iters: int, warmup: int) -> list[float]:
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def run_system(
    system: str, size, batch: int, iters: int, warmup: int, device: str, dtype: str, queue
) -> None:
    """Child process: build one system, time it, report stats and peak RSS."""
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    clip = build_model(device, dtype)
    frames = frames_for(size, batch, seed=batch)
    spec = tasks_spec()
    if system == "engine":
        from av_scene_vlm.core.engine import ZeroShotEngine
        from av_scene_vlm.core.tasks import parse_tasks

        engine = ZeroShotEngine(clip, tasks=parse_tasks(spec))
        engine.prepare()

        def fn():
            engine.classify(frames)
    else:
        from PIL import Image
        from transformers import pipeline

        pipe = pipeline(
            "zero-shot-image-classification",
            model=clip.model,
            tokenizer=clip.processor.tokenizer,
            image_processor=clip.processor.image_processor,
            device=clip.device,
        )
        images = [Image.fromarray(f) for f in frames]

        if system == "pipeline":

            def fn():
                for labels in spec.values():
                    prompts = [p for ps in labels.values() for p in ps]
                    pipe(images, candidate_labels=prompts, hypothesis_template="{}", batch_size=batch)
        else:

            def fn():
                for labels in spec.values():
                    for k in range(len(PROMPTS)):
                        cands = [ps[k] for ps in labels.values()]
                        pipe(images, candidate_labels=cands, hypothesis_template="{}", batch_size=batch)

    times = _timed(fn, iters, warmup)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(
        {
            "fps": batch / statistics.median(times),
            "p50_ms": statistics.median(times) * 1e3,
            "p95_ms": sorted(times)[min(len(times) - 1, int(0.95 * (len(times) - 1) + 0.5))] * 1e3,
            "peak_rss_mb": rss_mb,
            "iters": iters,
        }
    )


def measure(system: str, size, batch: int, iters: int, warmup: int, device: str, dtype: str) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=run_system, args=(system, size, batch, iters, warmup, device, dtype, queue))
    proc.start()
    result = queue.get(timeout=1800)
    proc.join()
    return result


def hardware() -> dict:
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line for line in f if line.startswith("model name"))
        info["cpu"] = model.split(":", 1)[1].strip()
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="write results to this JSON file")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--iters", type=int, default=10, help="timed iterations per case (batch calls)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--sizes", nargs="+", default=["480x640", "1080x1920"], help="HxW")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--no-per-prompt", action="store_true", help="skip the 15-calls-per-frame baseline")
    args = parser.parse_args(argv)

    cases = []
    for size_s in args.sizes:
        size = tuple(int(v) for v in size_s.split("x"))
        for batch in args.batches:
            iters = max(3, args.iters // batch) if batch > 1 else args.iters
            row = {"size": size_s, "batch": batch}
            row["engine"] = measure("engine", size, batch, args.iters, args.warmup, args.device, args.dtype)
            row["pipeline"] = measure("pipeline", size, batch, iters, 1, args.device, args.dtype)
            if batch == 1 and not args.no_per_prompt:
                row["pipeline_per_prompt"] = measure(
                    "pipeline_per_prompt", size, batch, 3, 1, args.device, args.dtype
                )
            row["engine_fps"] = row["engine"]["fps"]
            row["pipeline_fps"] = row["pipeline"]["fps"]
            row["speedup"] = row["engine_fps"] / row["pipeline_fps"]
            if "pipeline_per_prompt" in row:
                row["speedup_vs_per_prompt"] = row["engine_fps"] / row["pipeline_per_prompt"]["fps"]
            cases.append(row)
            print(
                f"  done {size_s} batch {batch}: speedup {row['speedup']:.1f}x", file=sys.stderr, flush=True
            )

    hw = hardware()
    print("\nZero-shot engine vs pipeline — ViT-B/32 (random weights), 3 tasks × 10 labels × 5 prompts")
    print(f"hardware: {hw.get('gpu') or hw['cpu']} ({hw['cores']} cores), torch {hw['torch']}\n")
    head = (
        f"{'frame':>10} {'batch':>5} | {'engine fps':>10} {'p50 ms':>8} {'p95 ms':>8} {'RSS MB':>7} | "
        f"{'pipeline fps':>12} {'p50 ms':>8} {'RSS MB':>7} | {'speedup':>7} | "
        f"{'per-prompt fps':>14} {'speedup':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in cases:
        e, p = r["engine"], r["pipeline"]
        pp = r.get("pipeline_per_prompt")
        extra = f"{pp['fps']:>14.2f} {r['speedup_vs_per_prompt']:>6.1f}x" if pp else f"{'-':>14} {'-':>7}"
        print(
            f"{r['size']:>10} {r['batch']:>5} | {e['fps']:>10.2f} {e['p50_ms']:>8.1f} {e['p95_ms']:>8.1f} "
            f"{e['peak_rss_mb']:>7.0f} | {p['fps']:>12.2f} {p['p50_ms']:>8.1f} {p['peak_rss_mb']:>7.0f} | "
            f"{r['speedup']:>6.1f}x | {extra}"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"hardware": hw, "cases": cases}, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
