"""Both models in one process, as `scene_vlm` runs them: the CLIP engine with CUDA graphs classifying
batches of 64 and single frames on the main thread while the captioner compiles and captions on a
worker thread (ROS-free; run by benchmarks/gpu_suite.sh as its `threaded` step).

Why: a CUDA-graph capture is invalidated by another thread's device-wide synchronize, which the
captioner's compile does; the device lock (core/device_lock.py) keeps them apart, a batch that
finds it taken runs eagerly, and a failed capture is retried instead of turning graphs off. This
measures that it holds on the device: graph captures, retries, deferred batches, whether graphs and
compiled decoding stayed on, and CLIP frames/s and caption seconds while both run.

    PYTHONPATH=av_scene_vlm python benchmarks/bench_threaded.py --device cuda --json out/threaded_gpu.json
    PYTHONPATH=av_scene_vlm python benchmarks/bench_threaded.py --device cpu --quick   # checks the script
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "av_scene_vlm"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from bench_engine import build_model, frames_for, hardware, tasks_spec


def _captioner(args: argparse.Namespace, device: torch.device, tmp: Path):
    """The tiny checkpoint (--quick) or the 3B architecture with random weights, compiled decoding on."""
    from av_scene_vlm.core.captioner import Captioner
    from av_scene_vlm.random_weights import build_tiny_qwen25vl, qwen25vl_3b_config, random_qwen25vl

    options = dict(max_new_tokens=args.new_tokens, generate_kwargs={"min_new_tokens": args.new_tokens})
    compile_mode = "on" if device.type == "cuda" or args.compile_on_cpu else "off"
    if args.caption_config == "tiny":
        path = build_tiny_qwen25vl(tmp / "tiny-qwen25vl")
        dtype = "auto"
        return Captioner(str(path), device=str(device), dtype=dtype, compile=compile_mode, **options)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model, processor = random_qwen25vl(
        qwen25vl_3b_config(), device=device, dtype=dtype, attn_implementation="sdpa"
    )
    return Captioner.from_model(model, processor, model_id="random:3b", compile=compile_mode, **options)


def run(args: argparse.Namespace) -> dict:
    from av_scene_vlm.core.cuda_graphs import EagerCapture
    from av_scene_vlm.core.engine import ZeroShotEngine
    from av_scene_vlm.core.models import LoadedClip
    from av_scene_vlm.core.tasks import parse_tasks

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = torch.float16 if cuda else torch.float32
    base = build_model("cpu", "float32")
    clip = LoadedClip(base.model.to(device, dtype).eval(), base.processor, "random ViT-B/32", device, dtype)
    capture = None if cuda else EagerCapture()  # off CUDA the graph machinery (lock, retries) runs eagerly
    engine = ZeroShotEngine(
        clip, tasks=parse_tasks(tasks_spec()), backend="torch", cuda_graphs="on", graph_capture=capture
    )
    engine.prepare()
    h, w = (int(v) for v in args.size.split("x"))
    batch, single = frames_for((h, w), args.batch, seed=1), frames_for((h, w), 1, seed=2)
    engine.classify(single)  # before the captioner starts: bucket 1 captured alone
    caption: dict = {"captions_s": [], "error": ""}
    started, done = threading.Event(), threading.Event()

    def captioner_thread() -> None:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                captioner = _captioner(args, device, Path(tmp))
                frame = np.random.default_rng(0).integers(0, 256, (448, 448, 3), dtype=np.uint8)
                started.set()
                caption["compile_s"] = captioner.warm_up([1])  # holds the device lock while compiling
                for _ in range(args.captions):
                    t0 = time.perf_counter()
                    captioner.caption(frame)
                    caption["captions_s"].append(time.perf_counter() - t0)
                caption["compiled"] = captioner.compiled
                caption["cache_sizes"] = list(captioner.caches.sizes())
        except Exception as exc:  # reported, not raised: the CLIP side's figures still count
            caption["error"] = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            started.set()
            done.set()

    worker = threading.Thread(
        target=captioner_thread, name="captioner", daemon=True
    )  # may outlive --max-seconds
    worker.start()
    started.wait()
    frames = {"batch": 0, "single": 0}
    seconds = {"batch": 0.0, "single": 0.0}
    end = time.monotonic() + args.max_seconds
    while not done.is_set() and time.monotonic() < end:
        for key, group in (("batch", batch), ("single", single)):
            t0 = time.perf_counter()
            engine.classify(group)
            seconds[key] += time.perf_counter() - t0
            frames[key] += len(group)
    worker.join(timeout=max(0.0, end - time.monotonic()) + 5)
    g = engine.graphs
    result = {
        "workload": {
            "clip": "ViT-B/32 (random weights)",
            "frame": args.size,
            "batch": args.batch,
            "captioner": args.caption_config,
            "new_tokens": args.new_tokens,
            "device": str(device),
        },
        "graph_captures": g.captures,
        "graph_capture_retries": g.retries,
        "graph_captures_deferred": g.deferred,
        "graph_memory_mb": round(g.memory_bytes / 2**20, 1),
        "graphs_stayed_on": g.enabled,
        "graphs_state": engine.graphs_state(),
        "compiled_decoding_stayed_on": bool(caption.get("compiled")) and not caption["error"],
        "caption_compile_s": caption.get("compile_s"),
        "caption_p50_s": statistics.median(caption["captions_s"]) if caption["captions_s"] else None,
        "captions": len(caption["captions_s"]),
        "caption_error": caption["error"],
        "clip_batch_fps": frames["batch"] / seconds["batch"] if seconds["batch"] else None,
        "clip_single_ms": 1e3 * seconds["single"] / frames["single"] if frames["single"] else None,
        "captioner_finished": done.is_set(),
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", default="1080x1920", help="HxW of the frames (default 1080x1920)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--caption-config", choices=("tiny", "3b"), default="3b")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--captions", type=int, default=5, help="captions after the compile")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="stop the CLIP side after this")
    parser.add_argument("--compile-on-cpu", action="store_true", help="compile decoding on a CPU too")
    parser.add_argument("--quick", action="store_true", help="small frames, tiny captioner: check the script")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.batch, args.caption_config = "120x160", 4, "tiny"
        args.new_tokens, args.captions, args.max_seconds = 4, 2, min(args.max_seconds, 120.0)
    result = {"hardware": hardware(), "threaded": run(args)}
    if torch.cuda.is_available():
        result["hardware"]["gpu"] = torch.cuda.get_device_name(0)
    t = result["threaded"]
    print(
        f"threaded: {t['graph_captures']} captures, {t['graph_capture_retries']} retries, "
        f"{t['graph_captures_deferred']} deferred; graphs {'on' if t['graphs_stayed_on'] else 'OFF'}, "
        f"compiled decoding {'on' if t['compiled_decoding_stayed_on'] else 'off'}; CLIP "
        f"{t['clip_batch_fps'] or 0:,.1f} f/s batch {t['workload']['batch']}, "
        f"{t['clip_single_ms'] or 0:.2f} ms one frame; caption p50 {t['caption_p50_s'] or 0:.3f} s"
        + (f"; caption error: {t['caption_error']}" if t["caption_error"] else "")
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0 if t["graphs_stayed_on"] and not t["caption_error"] else 1


if __name__ == "__main__":
    sys.exit(main())
