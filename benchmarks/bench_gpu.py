"""The engine's GPU path against its floors, in one process (ROS-free; run by benchmarks/gpu_suite.sh).

Model: the real ViT-B/32 architecture with random weights (timing is real, labels are not), 3 tasks ×
10 labels × 5 prompts, fp16 on CUDA. Measured in the same run, each part written to `--json` as soon
as it is done (a part cut short by the suite's time limit loses only itself):
- `parity`: the engine on the device (fp16) vs the same weights on the CPU (fp32): max |Δp|, top-1;
  and graphs on vs off on the device. A failed parity check makes the exit code 1.
- `engine`: batch `--batch` × `--size` uint8 numpy frames → results, one-shot `classify` and
  `classify_stream` (next batch's copy overlapping the current compute); one frame p50; each with and
  without heatmap, CUDA graphs on and off.
- `floors`: what bounds them: the image tower alone on pixels already on the device, the host copy of
  the frames (one thread, the pool; whole frames, crop windows), the pinned upload, the GPU resize.
- `pipeline`: transformers' `pipeline("zero-shot-image-classification")` on the same model.
- `compile`: torch.compile(mode="reduce-overhead") of the same forward, one frame, vs the captured graph.

    PYTHONPATH=av_scene_vlm python benchmarks/bench_gpu.py --device cuda --json out/engine_gpu.json
    PYTHONPATH=av_scene_vlm python benchmarks/bench_gpu.py --device cpu --quick   # checks the script
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "av_scene_vlm"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from bench_engine import build_model, frames_for, hardware, tasks_spec

PARITY_TOLERANCE = 1e-3
TARGETS = {"batch_fps": 3000.0, "single_ms": 2.0, "single_heatmap_ms": 3.0}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, iters: int, warmup: int, device: torch.device) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return out


def _ms(times: list[float]) -> float:
    return statistics.median(times) * 1e3


class Bench:
    """Shared state of one run: models, engines, frames, results written as they come."""

    def __init__(self, args: argparse.Namespace) -> None:
        from av_scene_vlm.core.cuda_graphs import EagerCapture
        from av_scene_vlm.core.engine import ZeroShotEngine
        from av_scene_vlm.core.models import LoadedClip
        from av_scene_vlm.core.tasks import parse_tasks

        self.args = args
        self.device = torch.device(args.device)
        self.cuda = self.device.type == "cuda"
        self.cpu_clip = build_model("cpu", "float32")  # the fp32 reference, same weights
        dtype = torch.float16 if self.cuda else torch.float32
        model = copy.deepcopy(self.cpu_clip.model).to(self.device, dtype).eval()
        self.clip = LoadedClip(model, self.cpu_clip.processor, "random ViT-B/32", self.device, dtype)
        self.tasks = parse_tasks(tasks_spec())
        capture = None if self.cuda else EagerCapture()  # off CUDA the graph path runs eagerly
        self.engines = {
            "off": ZeroShotEngine(self.clip, tasks=self.tasks, backend="torch", cuda_graphs="off"),
            "on": ZeroShotEngine(
                self.clip, tasks=self.tasks, backend="torch", cuda_graphs="on", graph_capture=capture
            ),
        }
        for engine in self.engines.values():
            engine.prepare()
        h, w = (int(v) for v in args.size.split("x"))
        self.size = (h, w)
        self.frames = frames_for((h, w), args.batch, seed=1)
        self.result: dict = {
            "hardware": hardware(),
            "workload": {
                "model": "ViT-B/32 (random weights)",
                "dtype": str(dtype).removeprefix("torch."),
                "tasks": "3 tasks x 10 labels x 5 prompts",
                "frame": args.size,
                "batch": args.batch,
                "copy_threads": _copy_threads(),
            },
            "targets": TARGETS,
        }

    def save(self) -> None:
        if self.args.json:
            Path(self.args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(self.args.json).write_text(json.dumps(self.result, indent=2, default=str) + "\n")

    # ---- parts -------------------------------------------------------------------------------
    def parity(self) -> dict:
        """Device engine vs CPU fp32 (12 frames of several sizes), graphs on vs off (same frames)."""
        from av_scene_vlm.core.engine import ZeroShotEngine

        rng = np.random.default_rng(7)
        sizes = [(1080, 1920), (480, 640), (720, 1280), (1920, 1080)] * 3
        frames = [rng.integers(0, 256, (*s, 3), dtype=np.uint8) for s in sizes[: 12 if self.cuda else 4]]
        cpu = ZeroShotEngine(self.cpu_clip, tasks=self.tasks, backend="torch", cuda_graphs="off")
        ref = cpu.classify(frames, heatmap=True)
        out = {"frames": len(frames)}
        for name, engine in self.engines.items():
            got = engine.classify(frames, heatmap=True)
            out[f"device_graphs_{name}_vs_cpu_fp32"] = _compare(got, ref)
        on, off = self.engines["on"].classify(frames), self.engines["off"].classify(frames)
        out["graphs_vs_eager"] = _compare(on, off)
        out["graph_state"] = self.engines["on"].graphs_state()
        out["passed"] = all(
            v["max_abs_dp"] <= PARITY_TOLERANCE and v["top1_agreement"] == 1.0
            for k, v in out.items()
            if isinstance(v, dict)
        ) and not out["graph_state"].startswith("off")
        return out

    def engine(self) -> dict:
        """frames/s of a batch (one-shot, streamed) and one frame's p50, heatmap off/on, graphs off/on."""
        a, dev, out = self.args, self.device, {}
        one = self.frames[:1]
        for (graphs, engine), heat in itertools.product(self.engines.items(), (False, True)):
            key = f"graphs_{graphs}" + ("_heatmap" if heat else "")
            batch = _timed(lambda e=engine, h=heat: e.classify(self.frames, heatmap=h), a.iters, 2, dev)
            streamed = self._stream(engine, heat)
            warm = 1 if a.quick else 5
            single = _timed(lambda e=engine, h=heat: e.classify(one, heatmap=h), a.iters * 4, warm, dev)
            out[key] = {
                "batch_fps": a.batch / statistics.median(batch),
                "batch_p50_ms": _ms(batch),
                "stream_fps": streamed,
                "single_p50_ms": _ms(single),
                "single_p95_ms": sorted(single)[int(0.95 * (len(single) - 1))] * 1e3,
            }
            print(f"  engine {key}: {out[key]}", file=sys.stderr, flush=True)
        out["graph_state"] = self.engines["on"].graphs_state()
        return out

    def _stream(self, engine, heat: bool) -> float:
        n = max(3, self.args.iters)
        for _ in engine.classify_stream(itertools.repeat(self.frames, 2), heatmap=heat):
            pass
        _sync(self.device)
        t0 = time.perf_counter()
        for _ in engine.classify_stream(itertools.repeat(self.frames, n), heatmap=heat):
            pass
        return n * self.args.batch / (time.perf_counter() - t0)

    def floors(self) -> dict:
        """Each stage alone: host copy, upload, resize, tower (the bounds of the engine's numbers)."""
        from av_scene_vlm.core.staging import copy_windows

        a, dev, engine = self.args, self.device, self.engines["off"]
        plan = engine.preprocess.plan(*self.size)
        full = (0, self.size[0], 0, self.size[1])
        out: dict = {"window": list(plan.window)}
        for name, window in (("full", full), ("window", plan.window)):
            os.environ["AV_SCENE_VLM_COPY_THREADS"] = "1"
            one = _timed(lambda w=window: copy_windows(self.frames, w, pin=self.cuda), 3, 1, dev)
            os.environ.pop("AV_SCENE_VLM_COPY_THREADS")
            pool = _timed(lambda w=window: copy_windows(self.frames, w, pin=self.cuda), 5, 1, dev)
            host = copy_windows(self.frames, window, pin=self.cuda)
            up = _timed(lambda h=host: h.to(dev, non_blocking=True), 5, 1, dev)
            out[f"host_copy_1thread_{name}_ms"] = _ms(one)
            out[f"host_copy_pool_{name}_ms"] = _ms(pool)
            out[f"upload_{name}_ms"] = _ms(up)
        windows = copy_windows(self.frames, plan.window, pin=self.cuda).to(dev)
        out["resize_crop_ms"] = _ms(_timed(lambda: engine.preprocess.crops(windows, plan), 5, 2, dev))
        pixels = engine.preprocess.normalize(engine.preprocess.crops(windows, plan))
        with torch.inference_mode():
            tower = lambda p: engine._tower(p, False)  # noqa: E731
            out["tower_batch_ms"] = _ms(_timed(lambda: tower(pixels), a.iters, 3, dev))
            out["tower_single_ms"] = _ms(_timed(lambda: tower(pixels[:1]), a.iters * 4, 5, dev))
        stages = [out["host_copy_pool_window_ms"], out["upload_window_ms"]]
        gpu = out["resize_crop_ms"] + out["tower_batch_ms"]
        out["sequential_floor_fps"] = a.batch / ((sum(stages) + gpu) / 1e3)
        out["overlapped_floor_fps"] = a.batch / (max(*stages, gpu) / 1e3)
        out["bound_by"] = ["host copy", "upload", "GPU compute"][int(np.argmax([*stages, gpu]))]
        return out

    def pipeline(self) -> dict:
        """transformers' zero-shot pipeline on the same model: one frame, and a batch (all 3 tasks)."""
        from PIL import Image
        from transformers import pipeline

        pipe = pipeline(
            "zero-shot-image-classification",
            model=self.clip.model,
            tokenizer=self.clip.processor.tokenizer,
            image_processor=self.clip.processor.image_processor,
            device=self.device,
        )
        spec = tasks_spec()
        n = min(self.args.batch, 16)  # the pipeline preprocesses on the CPU: 16 frames say enough
        images = [Image.fromarray(f) for f in self.frames[:n]]

        def run(imgs):
            for labels in spec.values():
                prompts = [p for ps in labels.values() for p in ps]
                pipe(imgs, candidate_labels=prompts, hypothesis_template="{}", batch_size=len(imgs))

        batch = _timed(lambda: run(images), 2, 1, self.device)
        single = _timed(lambda: run(images[:1]), 5, 1, self.device)
        return {"batch": n, "batch_fps": n / statistics.median(batch), "single_p50_ms": _ms(single)}

    def compile(self) -> dict:
        """torch.compile(mode='reduce-overhead') of the engine's own forward, one frame, vs its graph."""
        engine = self.engines["off"]
        plan = engine.preprocess.plan(*self.size)
        from av_scene_vlm.core.scoring import make_layout
        from av_scene_vlm.core.staging import copy_windows

        layout = make_layout(self.tasks, engine._dim, 0)
        labels = engine._label_embeddings(engine._config)
        window = copy_windows(self.frames[:1], plan.window).to(self.device)
        fn = torch.compile(
            lambda w, lab: engine._forward(w, lab, plan=plan, layout=layout), mode="reduce-overhead"
        )
        t0 = time.perf_counter()
        with torch.inference_mode():
            for _ in range(3):
                fn(window, labels)
            _sync(self.device)
            compile_s = time.perf_counter() - t0
            times = _timed(lambda: fn(window, labels), self.args.iters * 4, 3, self.device)
        return {"compile_s": compile_s, "forward_p50_ms": _ms(times)}

    def _run_part(self, name: str) -> None:
        t0 = time.perf_counter()
        try:
            self.result[name] = getattr(self, name)()
        except Exception as exc:  # reported; the other parts still run
            self.result[name] = {"error": f"{type(exc).__name__}: {exc}"}
        self.result[name]["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"# {name}: {self.result[name]['seconds']} s", file=sys.stderr, flush=True)
        self.save()


def _copy_threads() -> int:
    from av_scene_vlm.core.staging import copy_threads

    return copy_threads()


def _compare(got, ref) -> dict:
    err, agree, total = 0.0, 0, 0
    for g, r in zip(got, ref, strict=True):
        for tg, tr in zip(g.tasks, r.tasks, strict=True):
            err = max(err, float(np.abs(tg.probabilities - tr.probabilities).max()))
            agree += int(tg.index == tr.index)
            total += 1
    return {"max_abs_dp": err, "top1_agreement": agree / total, "compared": total}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", default="1080x1920", help="HxW of the frames (default 1080x1920)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--iters", type=int, default=10, help="timed batches (single frame: 4x)")
    parser.add_argument("--parts", nargs="+", default=["parity", "engine", "floors", "pipeline", "compile"])
    parser.add_argument("--quick", action="store_true", help="small frames and batch: check the script")
    parser.add_argument("--json", help="write results here (after every part)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.quick:  # the script checked, not measured: a few seconds a part on an idle CPU
        args.size, args.batch, args.iters = "120x160", 4, 1
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device here; use --device cpu (with --quick to check the script)")
    bench = Bench(args)
    for part in args.parts:
        bench._run_part(part)
    parity = bench.result.get("parity", {})
    return 0 if parity.get("passed", "parity" not in args.parts) else 1


if __name__ == "__main__":
    sys.exit(main())
