"""The engine's image-tower backends on the real ViT-B/32 architecture (random weights, 2-core CPU).

Workload (issues 3 and 12): 3 tasks × 10 labels × 5 prompts, 640×480 frames (and any `--sizes`), batch 1
and 8. The model is `random_weights.build_clip_b32` saved to disk and loaded with from_pretrained, as
users load checkpoints. Systems, each in its own process (peak RSS is its own):
- `torch`: ZeroShotEngine(backend="torch"), the eager transformers forward;
- `onnxruntime`: ZeroShotEngine(backend="onnxruntime"); in the same process, in alternating blocks, a
  bare `InferenceSession.run` of the same cached graph on already preprocessed pixels (`bare`, the floor
  the engine is held to: `engine_over_bare` ≤ 1.1);
- `torch_bf16`: the torch engine under `torch.autocast(bfloat16)`, with its probability error against
  float32 on 8 frames (`max_prob_error` at the model's logit scale, `max_prob_error_scale100` at trained
  CLIP's scale 100, `top1_agreement`);
- `export`: the first engine on an empty graph cache (export) and the next one (cache hit);
- `gemm`: float32 matrix-multiply throughput of this CPU (torch, the ViT-B/32 MLP shape at batch 8),
  against which `gflops` (the model's arithmetic per second) of each system can be read;
- `--pipeline` adds transformers' `pipeline("zero-shot-image-classification")` baselines of issue 3.
Prints a table; `--json PATH` writes everything with the hardware.

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
import tempfile
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
    """Random ViT-B/32 CLIP with the real tokenizer, in memory (no disk; used by bench_heatmap)."""
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


def _stats(times: list[float], batch: int) -> dict:
    p50 = statistics.median(times)
    return {
        "fps": batch / p50,
        "p50_ms": p50 * 1e3,
        "p95_ms": sorted(times)[min(len(times) - 1, int(0.95 * (len(times) - 1) + 0.5))] * 1e3,
        "iters": len(times),
    }


def flops_per_frame(config) -> float:
    """Multiply-adds × 2 of the image tower + projection (patch embedding, 12 blocks, heads)."""
    vc = config.vision_config
    d, mlp, layers = vc.hidden_size, vc.intermediate_size, vc.num_hidden_layers
    grid = (vc.image_size // vc.patch_size) ** 2
    tokens = grid + 1
    per_layer = tokens * (4 * d * d + 2 * d * mlp) + 2 * tokens * tokens * d
    patch_embed = grid * 3 * vc.patch_size**2 * d
    projection = tokens * d * config.projection_dim
    return 2.0 * (layers * per_layer + patch_embed + projection)


def _threads() -> int:
    return int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1))


def _engine(model_dir: str, backend: str, device: str, cache_dir: str):
    from av_scene_vlm.core.engine import ZeroShotEngine
    from av_scene_vlm.core.tasks import parse_tasks

    engine = ZeroShotEngine(
        model_dir, device=device, tasks=parse_tasks(tasks_spec()), backend=backend, onnx_cache_dir=cache_dir
    )
    engine.prepare()
    return engine


def _blocks(fns: dict, iters: int, warmup: int, rounds: int = 2) -> dict[str, list[float]]:
    """Time each fn in turn, a block of calls at a time, `rounds` times: drift of a shared machine hits
    all alike, and one fn's runtime threads never compete with another's within a block."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    per_round = max(1, (iters + rounds - 1) // rounds)
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name] += _timed(fn, per_round, warmup)
            time.sleep(0.2)
    return times


def run_system(system: str, cfg: dict, queue) -> None:
    """Child process: build one system, time it, report stats and peak RSS (or the error)."""
    try:
        queue.put(_run_system(system, cfg))
    except Exception as exc:  # e.g. no onnxruntime on a GPU machine: reported, the others still run
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def _run_system(system: str, cfg: dict) -> dict:
    import torch

    torch.set_num_threads(_threads())
    size, batch, iters, warmup = cfg["size"], cfg["batch"], cfg["iters"], cfg["warmup"]
    out: dict = {}
    if system == "export":
        out = _export_times(cfg)
    elif system == "gemm":
        out = _gemm(cfg["batch"])
    elif system in ("torch", "onnxruntime", "torch_bf16"):
        backend = "onnxruntime" if system == "onnxruntime" else "torch"
        engine = _engine(cfg["model"], backend, cfg["device"], cfg["cache"])
        frames = frames_for(size, batch, seed=batch)
        fns = {"engine": lambda: engine.classify(frames)}
        if system == "torch_bf16":
            out.update(_bf16_error(engine, size))  # leaves the engine's tower under autocast
        if system == "onnxruntime":
            fns["bare"] = _bare_run(engine, frames)
            out["backend_info"] = engine.backend_info()
        times = _blocks(fns, iters, warmup)
        out.update(_stats(times["engine"], batch))
        if "bare" in times:
            out["bare"] = _stats(times["bare"], batch)
            out["engine_over_bare"] = out["p50_ms"] / out["bare"]["p50_ms"]
    else:
        out = _pipeline(system, cfg)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _autocast_tower(engine) -> None:
    """Run the engine's image tower (only) under torch.autocast(bfloat16); scores stay float32/64."""
    import torch

    tower = engine._tower  # benchmark-only: autocast is measured here, not offered as an option

    def bf16(pixels, patches):
        with torch.autocast(engine.device.type, dtype=torch.bfloat16):
            emb, patch = tower(pixels, patches)
        return emb.float(), (patch.float() if patch is not None else None)

    engine._tower = bf16


def _bf16_error(engine, size) -> dict:
    """bfloat16 autocast vs float32 on 8 frames: probability error at the model's and at CLIP's scale."""
    import numpy as np

    frames = frames_for(size, 8, seed=99)
    ref = engine.classify(frames)
    _autocast_tower(engine)
    got = engine.classify(frames)
    err, err100, cos_err, agree, total = 0.0, 0.0, 0.0, 0, 0
    for r, g in zip(ref, got, strict=True):
        for tr, tg in zip(r.tasks, g.tasks, strict=True):
            err = max(err, float(np.abs(tr.probabilities - tg.probabilities).max()))
            cos_err = max(cos_err, float(np.abs(tr.cosine - tg.cosine).max()))
            p100 = [
                np.exp(100 * (c - c.max())) / np.exp(100 * (c - c.max())).sum()
                for c in (tr.cosine, tg.cosine)
            ]
            err100 = max(err100, float(np.abs(p100[0] - p100[1]).max()))
            agree += int(tr.index == tg.index)
            total += 1
    return {
        "max_prob_error": err,
        "max_prob_error_scale100": err100,
        "max_cosine_error": cos_err,
        "top1_agreement": agree / total,
        "logit_scale": engine.logit_scale,
    }


def _bare_run(engine, frames):
    """A plain InferenceSession of the engine's cached graph (only the thread count set), on pixels
    preprocessed once: what the engine's classify is compared with."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = engine.backend_info()["threads"]
    session = ort.InferenceSession(engine.backend_info()["graph"], so, providers=["CPUExecutionProvider"])
    pixels = engine.preprocess(frames).numpy()
    return lambda: session.run(None, {"pixel_values": pixels})


def _export_times(cfg: dict) -> dict:
    """First engine on an empty cache (exports), then a second one (cache hit)."""
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        first = _engine(cfg["model"], "onnxruntime", cfg["device"], cache)
        first_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        second = _engine(cfg["model"], "onnxruntime", cfg["device"], cache)
        second_s = time.perf_counter() - t0
        a, b = first.backend_info(), second.backend_info()
        graph_mb = Path(a["graph"]).stat().st_size / 2**20
    assert a["cache_hit"] is False and b["cache_hit"] is True
    return {
        "export_s": a["graph_seconds"],  # hash weights + export + write + checksum
        "cache_hit_s": b["graph_seconds"],  # hash weights + verify the cached graph's checksum
        "first_engine_s": first_s,  # model load + export + session + text encode
        "cached_engine_s": second_s,
        "graph_mb": graph_mb,
    }


def _gemm(batch: int) -> dict:
    """float32 GEMM throughput: the ViT-B/32 MLP matmul at this batch (50 tokens per frame)."""
    import torch

    a, b = torch.randn(50 * batch, 768), torch.randn(768, 3072)
    times = _timed(lambda: a @ b, 20, 5)
    return {
        "shape": [50 * batch, 768, 3072],
        "gflops": 2 * 50 * batch * 768 * 3072 / statistics.median(times) / 1e9,
    }


def _pipeline(system: str, cfg: dict) -> dict:
    from PIL import Image
    from transformers import pipeline

    batch = cfg["batch"]
    pipe = pipeline("zero-shot-image-classification", model=cfg["model"], device=cfg["device"])
    images = [Image.fromarray(f) for f in frames_for(cfg["size"], batch, seed=batch)]
    spec = tasks_spec()
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

    return _stats(_timed(fn, cfg["iters"], 1), batch)


def measure(system: str, **cfg) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=run_system, args=(system, cfg, queue))
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
        "threads": _threads(),
    }
    for pkg in ("onnxruntime", "transformers"):
        try:
            info[pkg] = __import__(pkg).__version__
        except ImportError:
            info[pkg] = None
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line for line in f if line.startswith("model name"))
        info["cpu"] = model.split(":", 1)[1].strip()
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _row(r: dict) -> str:
    def cell(system: str, key: str, fmt: str) -> str:
        v = r.get(system, {}).get(key)
        return format(v, fmt) if v is not None else "-"

    ort = r.get("onnxruntime", {})
    return (
        f"{r['size']:>9} {r['batch']:>5} | "
        f"{cell('torch', 'fps', '>9.2f')} {cell('torch', 'p50_ms', '>7.1f')} | "
        f"{cell('onnxruntime', 'fps', '>9.2f')} {cell('onnxruntime', 'p50_ms', '>7.1f')} "
        f"{format(r['ort_over_torch'], '>6.2f') + 'x' if 'ort_over_torch' in r else '-':>7} | "
        f"{format(ort['bare']['p50_ms'], '>7.1f') if 'bare' in ort else '-':>7} "
        f"{format(ort['engine_over_bare'], '>6.3f') if 'bare' in ort else '-':>6} | "
        f"{cell('torch_bf16', 'fps', '>8.2f')} {cell('torch_bf16', 'max_prob_error', '>9.1e')} "
        f"{cell('torch_bf16', 'max_prob_error_scale100', '>9.1e')} | "
        f"{cell('pipeline', 'fps', '>8.2f')}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="write results to this JSON file")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iters", type=int, default=12, help="timed calls per case at batch 1")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--sizes", nargs="+", default=["480x640"], help="HxW")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument(
        "--systems",
        nargs="+",
        default=["torch", "onnxruntime", "torch_bf16"],
        choices=["torch", "onnxruntime", "torch_bf16"],
        help="engine systems to time (default: all three)",
    )
    parser.add_argument("--pipeline", action="store_true", help="also time the transformers pipeline (slow)")
    parser.add_argument("--no-export", action="store_true", help="skip the export / cache-hit timing")
    parser.add_argument("--model", help="a saved CLIP directory (default: build_clip_b32 into a temp dir)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from av_scene_vlm.random_weights import build_clip_b32

    systems = list(args.systems)
    if args.device.startswith("cuda") and "torch_bf16" in systems:
        systems.remove("torch_bf16")  # autocast error/speed is a CPU question here
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(build_clip_b32(Path(tmp) / "clip-b32"))
        base = {"model": model, "device": args.device, "cache": str(Path(tmp) / "onnx-cache")}
        from transformers import CLIPConfig

        flops = flops_per_frame(CLIPConfig.from_pretrained(model))
        export = None
        if not args.no_export and "onnxruntime" in systems:
            export = measure("export", **base, size=None, batch=1, iters=0, warmup=0)
            print(f"  export: {export}", file=sys.stderr)
            export = export if "error" not in export else None
        cases = []
        for size_s in args.sizes:
            size = tuple(int(v) for v in size_s.split("x"))
            for batch in args.batches:
                iters = args.iters if batch == 1 else max(4, args.iters // batch)
                row = {"size": size_s, "batch": batch}
                cfg = {**base, "size": size, "batch": batch, "iters": iters, "warmup": args.warmup}
                if args.device == "cpu":
                    row["gemm"] = measure("gemm", **cfg)
                for system in systems:
                    row[system] = measure(system, **cfg)
                    if "error" in row[system]:
                        print(f"  {system} failed: {row[system]['error']}", file=sys.stderr)
                        continue
                    row[system]["gflops"] = flops * row[system]["fps"] / 1e9
                if args.pipeline:
                    row["pipeline"] = measure("pipeline", **{**cfg, "iters": max(3, iters // 2)})
                if "fps" in row.get("torch", {}) and "fps" in row.get("onnxruntime", {}):
                    row["ort_over_torch"] = row["onnxruntime"]["fps"] / row["torch"]["fps"]
                cases.append(row)
                print(f"  done {size_s} batch {batch}", file=sys.stderr, flush=True)

    hw = hardware()
    print("\nZero-shot engine backends — ViT-B/32 (random weights), 3 tasks × 10 labels × 5 prompts")
    print(
        f"hardware: {hw.get('gpu') or hw['cpu']} ({hw['cores']} cores), torch {hw['torch']}, "
        f"onnxruntime {hw['onnxruntime']}; {flops / 1e9:.1f} GFLOP per frame"
    )
    if export:
        print(
            f"ONNX export {export['export_s']:.1f} s ({export['graph_mb']:.0f} MB graph), cache hit "
            f"{export['cache_hit_s']:.2f} s; engine start {export['first_engine_s']:.1f} s first, "
            f"{export['cached_engine_s']:.1f} s cached\n"
        )
    head = (
        f"{'frame':>9} {'batch':>5} | {'torch fps':>9} {'p50 ms':>7} | {'ORT fps':>9} {'p50 ms':>7} "
        f"{'ORT/tch':>7} | {'bare ms':>7} {'/bare':>6} | {'bf16 fps':>8} {'bf16 |Δp|':>9} {'@ s=100':>9} | "
        f"{'pipe fps':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in cases:
        print(_row(r))
    for r in cases:
        gemm = r.get("gemm", {}).get("gflops")
        achieved = ", ".join(f"{s} {r[s]['gflops']:.0f}" for s in systems if "gflops" in r.get(s, {}))
        if gemm:
            print(
                f"{r['size']} batch {r['batch']}: GFLOP/s {achieved}; "
                f"torch fp32 GEMM of this shape {gemm:.0f}"
            )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        result = {"hardware": hw, "flops_per_frame": flops, "export": export, "cases": cases}
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
