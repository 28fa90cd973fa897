"""The image tower's precisions on a CPU (issue 28): int8 (ONNX Runtime) and bf16 (torch)
against fp32, with their agreement, in one run on the same weights.

Workload: ViT-B/32 random weights (`random_weights.build_clip_b32`, loaded from disk as users load
checkpoints), 3 tasks × 10 labels × 5 prompts (bench_engine's), 1920×1080 frames, `engine.classify`
(preprocessing and scoring included), batch 1 and 8, `--threads` threads (torch and ONNX Runtime).
Systems share one loaded model and run in alternating blocks (`--rounds`), so a noisy machine loads
them alike; each figure is the median of its blocks' per-frame times.
- agreement: `core.agreement.compare` (what `av-scene-vlm check-precision` prints) of int8 and bf16
  vs torch fp32 on 48 frames of the package's synthetic drive (front and rear), bounds printed;
- `--ray`: `index` of one synthetic two-camera bag (640×480 JPEG) on Ray Data with 2 CPU model actors
  (1 thread each), fp32 vs int8 (ONNX Runtime backend, graphs already cached), frames/s of the whole job
  (actor start and model load included: the best of two runs each, alternating);
- `--caption small|tiny`: the captioner in float32 vs bfloat16 on the CPU, tokens/s (bench_caption's
  random Qwen2.5-VL configs), and whether the two produced the same tokens.
Prints the target table; `--json PATH` writes everything with the CPU model and flags.

    PYTHONPATH=av_scene_vlm python benchmarks/bench_precision.py --ray --caption small \
        --json benchmarks/results/precision_cpu.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "av_scene_vlm"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import frames_for, hardware, tasks_spec

SYSTEMS = {  # name -> (backend, precision)
    "ort_fp32": ("onnxruntime", "fp32"),
    "ort_int8": ("onnxruntime", "int8"),
    "torch_fp32": ("torch", "fp32"),
    "torch_bf16": ("torch", "bf16"),
}


def cpu_info() -> dict:
    from av_scene_vlm.core.precision import NEEDS, cpu_flags, cpu_model

    flags = cpu_flags()
    wanted = sorted({f for fs in NEEDS.values() for f in fs} | {"avx2", "avx512f"})
    return {"model": cpu_model(), "flags": [f for f in wanted if f in flags], "load_avg": os.getloadavg()}


def engines(model_dir: Path, cache: Path, threads: int) -> tuple[dict, dict]:
    from av_scene_vlm.core.engine import ZeroShotEngine
    from av_scene_vlm.core.models import load_clip
    from av_scene_vlm.core.tasks import parse_tasks

    clip = load_clip(str(model_dir), "cpu", "float32")
    tasks = parse_tasks(tasks_spec())
    out, build = {}, {}
    for name, (backend, precision) in SYSTEMS.items():
        t0 = time.perf_counter()
        out[name] = ZeroShotEngine(
            clip,
            tasks=tasks,
            backend=backend,
            precision=precision,
            onnx_threads=threads,
            onnx_cache_dir=cache,
        )
        out[name].prepare()
        build[name] = round(time.perf_counter() - t0, 2)
    return out, build


def timings(systems: dict, frames: list, iters: int, rounds: int) -> dict:
    """Median ms per frame at batch 1 and 8, blocks alternating between systems: wall time, and the
    process's CPU time (all threads; less disturbed than wall time by other processes on the cores)."""
    per: dict[str, dict[int, list[float]]] = {n: {1: [], 8: []} for n in systems}
    cpu: dict[str, dict[int, list[float]]] = {n: {1: [], 8: []} for n in systems}
    for engine in systems.values():  # warm-up: allocator, kernels, the text side
        engine.classify(frames[:1])
        engine.classify(frames[:8])
    for _ in range(rounds):
        for batch, n in ((1, iters), (8, max(2, iters // 4))):
            for name, engine in systems.items():
                for i in range(n):
                    chunk = frames[i % len(frames) : i % len(frames) + 1] if batch == 1 else frames[:8]
                    t0, c0 = time.perf_counter(), time.process_time()
                    engine.classify(chunk)
                    per[name][batch].append((time.perf_counter() - t0) * 1e3 / batch)
                    cpu[name][batch].append((time.process_time() - c0) * 1e3 / batch)
    return {
        n: {
            **{f"batch{b}_ms": round(statistics.median(v), 2) for b, v in d.items()},
            **{f"batch{b}_cpu_ms": round(statistics.median(v), 2) for b, v in cpu[n].items()},
        }
        for n, d in per.items()
    }


def agreement(systems: dict) -> dict:
    from av_scene_vlm.core.agreement import compare, embed_all
    from av_scene_vlm.core.synthetic import drive_frame

    frames = [drive_frame(i, 24, 480, 640, cam) for cam in ("front", "rear") for i in range(24)]
    ref = systems["torch_fp32"]
    labels = dict(zip([t.name for t in ref.tasks], ref.label_embeddings(), strict=True))
    base = embed_all(ref.encode_images, frames)
    out = {}
    for name in ("ort_fp32", "ort_int8", "torch_bf16"):
        got = embed_all(systems[name].encode_images, frames)
        result = compare(base, got, labels, ref.logit_scale, SYSTEMS[name][1])
        out[name] = {**result.record(), "rows": [list(r) for r in result.rows()]}
    return out


def ray_index(model_dir: Path, tmp: Path, frames_per_camera: int) -> dict:
    import ray
    from av_scene_vlm.core.fleet import EngineSpec, RayOptions, index_bags
    from av_scene_vlm.core.tasks import parse_tasks
    from bench_fleet_index import write_drive

    n = write_drive(tmp / "bags" / "drive_0", frames_per_camera / 2.0, 2.0, 640, 480)
    # 4 logical CPUs on the 2 cores: the 2 model actors take 1 each, and the bag-reading tasks (0.5 CPU
    # each) need the rest; with num_cpus=2 the actors hold every CPU and the job never starts reading.
    ray.init(include_dashboard=False, log_to_driver=False, num_cpus=4, object_store_memory=300 * 1024**2)
    out = {"frames": n, "actors": 2}
    try:
        for precision in ("fp32", "int8", "fp32", "int8"):  # twice each, alternating; best of the two
            spec = EngineSpec.create(
                str(model_dir), tasks=parse_tasks(tasks_spec()), device="cpu", backend="onnxruntime",
                precision=precision,
            )  # fmt: skip
            t0 = time.perf_counter()
            s = index_bags(
                [tmp / "bags"], tmp / f"db_{precision}_{time.time_ns()}", spec, progress=False,
                ray=RayOptions(actors=2, cpus_per_actor=1.0),
            )  # fmt: skip
            seconds = time.perf_counter() - t0
            assert s.frames == n, (s.frames, n)
            out[f"{precision}_fps"] = max(out.get(f"{precision}_fps", 0.0), round(n / seconds, 2))
    finally:
        ray.shutdown()
    out["int8_over_fp32"] = round(out["int8_fps"] / out["fp32_fps"], 2)
    return out


def caption(name: str, tmp: Path, new_tokens: int, repeats: int) -> dict:
    import torch
    from bench_caption import _captioner, _time

    frame = frames_for((448, 448), 1, 0)[0]
    out: dict = {"config": name, "new_tokens": new_tokens}
    texts = {}
    for dtype in (torch.float32, torch.bfloat16, torch.float32, torch.bfloat16):
        key = str(dtype).removeprefix("torch.")
        cap = _captioner(name, torch.device("cpu"), dtype, "sdpa", new_tokens, tmp)
        _time(cap, frame, 1)
        times, result = _time(cap, frame, repeats)
        tok_s = result.num_tokens / statistics.median(times)
        out[f"{key}_tok_s"] = round(max(out.get(f"{key}_tok_s", 0.0), tok_s), 2)
        texts[key] = result.text
        del cap
        gc.collect()  # one model in memory at a time (the 3B one is ~15 GB in fp32)
    out["bf16_over_fp32"] = round(out["bfloat16_tok_s"] / out["float32_tok_s"], 2)
    out["same_text"] = texts["float32"] == texts["bfloat16"]
    return out


def table(r: dict) -> str:
    t = r["timings"]
    rows = []

    def row(what: str, measured: str, target: str, ok: bool | None) -> None:
        rows.append(f"| {what} | {measured} | {target} | {'-' if ok is None else 'yes' if ok else 'NO'} |")

    i1, f1 = t["ort_int8"]["batch1_ms"], t["ort_fp32"]["batch1_ms"]
    i8, f8 = t["ort_int8"]["batch8_ms"], t["ort_fp32"]["batch8_ms"]
    row("int8 classify 1920x1080, batch 1", f"{i1} ms", "<= 25 ms", i1 <= 25)
    row("int8 vs ORT fp32, batch 1", f"{f1 / i1:.2f}x ({f1} ms)", ">= 2.3x", f1 / i1 >= 2.3)
    row("int8 vs ORT fp32, batch 8 per frame", f"{f8 / i8:.2f}x ({i8} vs {f8} ms)", ">= 2x", f8 / i8 >= 2)
    tb1, tf1 = t["torch_bf16"]["batch1_ms"], t["torch_fp32"]["batch1_ms"]
    tb8, tf8 = t["torch_bf16"]["batch8_ms"], t["torch_fp32"]["batch8_ms"]
    has_bf16 = any(f in r["cpu"]["flags"] for f in ("avx512_bf16", "amx_bf16"))
    row("bf16 torch vs torch fp32, batch 1", f"{tf1 / tb1:.2f}x ({tb1} vs {tf1} ms)", ">= 1.6x",
        tf1 / tb1 >= 1.6 if has_bf16 else None)  # fmt: skip
    row("bf16 torch vs torch fp32, batch 8", f"{tf8 / tb8:.2f}x ({tb8} vs {tf8} ms)", ">= 1.6x",
        tf8 / tb8 >= 1.6 if has_bf16 else None)  # fmt: skip
    for b in (1, 8):  # the same ratios by CPU time (the load of other processes disturbs it less)
        k = f"batch{b}_cpu_ms"
        for cand, base in (("ort_int8", "ort_fp32"), ("torch_bf16", "torch_fp32")):
            ratio = t[base][k] / t[cand][k]
            row(f"{cand} vs {base}, batch {b}, CPU time", f"{ratio:.2f}x ({t[cand][k]} vs {t[base][k]} ms)",
                ">= 2.3x" if cand == "ort_int8" and b == 1 else ">= 2x" if cand == "ort_int8" else ">= 1.6x",
                None)  # fmt: skip
    for name, a in r["agreement"].items():
        row(f"agreement {name} vs torch fp32 (48 frames, 3x10 labels)",
            f"cos mean {a['cos_mean']:.6f} min {a['cos_min']:.6f}, max dp {a['max_dp']:.5f}, top-1 "
            + ", ".join(f"{v * 100:.0f}%" for v in a["top1"].values()),
            "cos >= 0.999 / 0.995, dp <= 0.01, top-1 >= 95%", a["passed"])  # fmt: skip
    if "ray" in r:
        ray = r["ray"]
        row(f"index on Ray, 2 CPU actors ({ray['frames']} frames)",
            f"{ray['int8_over_fp32']}x ({ray['int8_fps']} vs {ray['fp32_fps']} fps)", ">= 2x",
            ray["int8_over_fp32"] >= 2)  # fmt: skip
    if "caption" in r:
        c = r["caption"]
        row(f"caption bf16 vs fp32 ({c['config']}, {c['new_tokens']} tokens)",
            f"{c['bf16_over_fp32']}x ({c['bfloat16_tok_s']} vs {c['float32_tok_s']} tok/s), same text: "
            f"{c['same_text']}", ">= 1.5x", c["bf16_over_fp32"] >= 1.5)  # fmt: skip
    head = ["| target | measured | target | met |", "|---|---|---|---|"]
    lines = [f"CPU: {r['cpu']['model']}; flags: {' '.join(r['cpu']['flags'])}; threads {r['threads']}; "
             f"load average at start {r['cpu']['load_avg'][0]:.2f}"]  # fmt: skip
    lines += [
        "",
        "| system | batch 1 ms | batch 8 ms/frame | batch 1 CPU ms | batch 8 CPU ms/frame | engine build s |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {n} | {v['batch1_ms']} | {v['batch8_ms']} | {v['batch1_cpu_ms']} | {v['batch8_cpu_ms']} | "
        f"{r['build_s'][n]} |"
        for n, v in t.items()
    ]
    return "\n".join([*lines, "", *head, *rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", default="1920x1080", help="frame WxH (default: %(default)s)")
    parser.add_argument("--iters", type=int, default=8, help="batch-1 calls per block (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating blocks (default: %(default)s)")
    parser.add_argument("--ray", action="store_true", help="also index one bag on Ray, fp32 vs int8")
    parser.add_argument("--ray-frames", type=int, default=60, help="frames per camera (default: %(default)s)")
    parser.add_argument(
        "--caption", choices=("none", "tiny", "small", "3b"), default="none",
        help="captioner for bf16 vs fp32 tokens/s (3b: the real architecture, random weights, ~15 GB fp32)",
    )  # fmt: skip
    parser.add_argument("--caption-repeats", type=int, default=2, help="timed captions per model")
    parser.add_argument("--caption-tokens", type=int, default=16)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    import torch
    from av_scene_vlm.random_weights import build_clip_b32

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_precision_", dir="/tmp"))
    os.environ["AV_SCENE_VLM_ONNX_CACHE"] = str(tmp / "cache")  # Ray's actors find the graphs there
    try:
        model_dir = build_clip_b32(tmp / "clip-b32")
        w, h = (int(x) for x in args.size.split("x"))
        r: dict = {"benchmark": "precision_cpu", "cpu": cpu_info(), "threads": args.threads, "size": [w, h]}
        systems, r["build_s"] = engines(model_dir, tmp / "cache", args.threads)
        r["timings"] = timings(systems, frames_for((h, w), 8, 0), args.iters, args.rounds)
        r["agreement"] = agreement(systems)
        del systems
        if args.ray:
            r["ray"] = ray_index(model_dir, tmp, args.ray_frames)
        if args.caption != "none":
            r["caption"] = caption(args.caption, tmp, args.caption_tokens, args.caption_repeats)
        r["hardware"] = hardware()
        r["cpu"]["load_avg_end"] = os.getloadavg()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(table(r))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(r, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
