"""Fleet index throughput: one process vs Ray Data on this machine, a projection to N GPU workers, and
memory while indexing a long drive.

Workload: synthetic drives (`core/synthetic.py`, 2 cameras, JPEG CompressedImage, mcap) indexed with
the real ViT-B/32 architecture (random weights) and the 5 tasks of config/scene_vlm.yaml.

- `throughput`: the same bags indexed (a) in one process, (b) on a local Ray (`ray.init()` with every
  core of this machine, one model actor). Measured per-frame costs: decode (+ thumbnail), embed
  (engine.classify at the batch size) and write (LanceDB append on the driver). Projected frames/s
  for N GPU workers = min(N × per-worker model fps, decode capacity of the cluster's CPU cores,
  driver write capacity); the per-GPU model fps is an input (`--gpu-fps`), not measured here.
- `rss`: index one long drive (default 10 minutes × 2 cameras at 2 Hz, 320×240) in one process,
  sampling this process's RSS at every commit: bounded = no growth with the drive's length.

    PYTHONPATH=av_scene_vlm python benchmarks/bench_fleet_index.py throughput --json PATH
    PYTHONPATH=av_scene_vlm python benchmarks/bench_fleet_index.py rss --json PATH
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "av_scene_vlm"))

import numpy as np

CONFIG = Path(__file__).resolve().parents[1] / "av_scene_vlm" / "config" / "scene_vlm.yaml"


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def write_drive(path: Path, seconds: float, rate: float, w: int, h: int, seed: int = 0) -> int:
    """A two-camera synthetic drive (JPEG), streamed to disk; returns the frame count."""
    from av_scene_vlm.core import bag as B
    from av_scene_vlm.core.image_encode import encode_compressed
    from av_scene_vlm.core.synthetic import drive_frame
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = B.bag_typestore()
    t = store.types
    n = int(seconds * rate)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as wr:
        conns = [
            wr.add_connection(f"/{cam}/image_raw/compressed", B.COMPRESSED_IMAGE, typestore=store)
            for cam in ("front", "rear")
        ]
        for i in range(n):
            ns = (1_700_000_000 + seed * 10_000) * 10**9 + round(i * 1e9 / rate)
            for conn, cam in zip(conns, ("front", "rear"), strict=True):
                rgb = drive_frame(i % 60, 60, h, w, cam)
                hdr = t["std_msgs/msg/Header"](
                    stamp=t["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9), frame_id=cam
                )
                data = np.frombuffer(encode_compressed(rgb, "jpeg", quality=90), np.uint8)
                msg = t[B.COMPRESSED_IMAGE](header=hdr, format="jpeg", data=data)
                wr.write(conn, ns, store.serialize_cdr(msg, B.COMPRESSED_IMAGE))
    return 2 * n


def make_spec(model: Path, device: str):
    from av_scene_vlm.cli.bag import config_templates
    from av_scene_vlm.core.fleet import EngineSpec
    from av_scene_vlm.core.tasks import load_tasks_file

    return EngineSpec.create(
        str(model), tasks=load_tasks_file(CONFIG), templates=config_templates(CONFIG), device=device
    )


def stage_costs(bag: Path, engine, batch: int) -> dict:
    """Seconds per frame of each stage, measured alone on one bag."""
    from av_scene_vlm.core.fleet import FleetIndex, IndexInfo
    from av_scene_vlm.core.fleet.frames import decode_bag, embed_batch

    t0 = time.perf_counter()
    batches = list(decode_bag(bag, "00", batch_size=batch))
    t_decode = time.perf_counter() - t0
    n = sum(len(b["rgb"]) for b in batches)
    embed_batch(engine, None, batches[0])  # warm-up (allocator, kernels)
    t0 = time.perf_counter()
    rows = [embed_batch(engine, None, b) for b in batches]
    t_embed = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        info = IndexInfo("bench", rows[0]["vector"].shape[1], {t.name: t.label_names for t in engine.tasks})
        index = FleetIndex.open_or_create(d, info, commit_rows=1024)
        t0 = time.perf_counter()
        for r in rows:
            index.add(r)
        index.flush()
        t_write = time.perf_counter() - t0
    return {"frames": n, "decode_s": t_decode / n, "embed_s": t_embed / n, "write_s": t_write / n}


def throughput(args: argparse.Namespace) -> dict:
    import ray
    import torch
    from av_scene_vlm.core.fleet import RayOptions, index_bags
    from av_scene_vlm.random_weights import build_clip_b32

    tmp = Path(tempfile.mkdtemp(prefix="bench_fleet_", dir="/tmp"))
    try:
        model = build_clip_b32(tmp / "clip-b32")
        w, h = (int(x) for x in args.size.split("x"))
        frames = sum(
            write_drive(tmp / "bags" / f"drive_{k}", args.seconds, args.rate, w, h, k)
            for k in range(args.bags)
        )
        spec = make_spec(model, args.device)
        engine = spec.build()
        engine.prepare()
        costs = stage_costs(tmp / "bags" / "drive_0", engine, args.batch_size)
        print(f"# stage costs {costs}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        local = index_bags(
            [tmp / "bags"], tmp / "db_local", spec, engine=engine, progress=False, batch_size=args.batch_size
        )
        t_local = time.perf_counter() - t0
        del engine
        t0 = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False)
        t_init = time.perf_counter() - t0
        t0 = time.perf_counter()
        on_ray = index_bags(
            [tmp / "bags"], tmp / "db_ray", spec, progress=False, batch_size=args.batch_size, ray=RayOptions()
        )
        t_ray = time.perf_counter() - t0
        ray_cpus = ray.cluster_resources().get("CPU", 0)
        ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert local.frames == on_ray.frames == frames
    rows = [
        {
            "mode": "one process",
            "frames": frames,
            "seconds": round(t_local, 2),
            "fps": round(frames / t_local, 2),
        },
        {
            "mode": f"Ray Data, local ({ray_cpus:g} CPUs, 1 model actor)",
            "frames": frames,
            "seconds": round(t_ray, 2),
            "fps": round(frames / t_ray, 2),
            "ray_init_s": round(t_init, 2),
        },
    ]
    # Projection (not measured): N GPU workers, each embedding at --gpu-fps; decoding on
    # --cpus-per-gpu cores per worker at the measured decode cost; one driver writing.
    decode_fps_per_core = 1.0 / costs["decode_s"]
    write_fps = 1.0 / costs["write_s"]
    projection = []
    for n in (1, 2, 4, 8, 16, 32, 64, 100):
        model_fps = n * args.gpu_fps
        decode_fps = n * args.cpus_per_gpu * decode_fps_per_core
        fps = min(model_fps, decode_fps, write_fps)
        bound = "model" if fps == model_fps else "decode" if fps == decode_fps else "driver write"
        projection.append({"gpus": n, "fps": round(fps), "bound_by": bound})
    return {
        "benchmark": "fleet_index_throughput",
        "description": (
            f"{args.bags} drives × 2 cameras × {int(args.seconds * args.rate)} frames {w}x{h} JPEG (mcap), "
            f"ViT-B/32 random weights, 5 tasks, batch {args.batch_size}, device {args.device}, "
            f"torch threads {torch.get_num_threads()}"
        ),
        "measured": rows,
        "stage_costs_s_per_frame": {k: round(v, 5) for k, v in costs.items() if k != "frames"},
        "projection_assumptions": {
            "gpu_fps_per_worker": args.gpu_fps,
            "cpus_per_gpu": args.cpus_per_gpu,
            "decode_fps_per_core (measured)": round(decode_fps_per_core, 1),
            "driver_write_fps (measured)": round(write_fps, 1),
        },
        "projection": projection,
    }


def rss(args: argparse.Namespace) -> dict:
    from av_scene_vlm.core.fleet import index_bags
    from av_scene_vlm.random_weights import build_clip_b32

    tmp = Path(tempfile.mkdtemp(prefix="bench_fleet_rss_", dir="/tmp"))
    try:
        model = build_clip_b32(tmp / "clip-b32")
        w, h = (int(x) for x in args.size.split("x"))
        frames = write_drive(tmp / "drive", args.seconds, args.rate, w, h)
        bag_mb = sum(p.stat().st_size for p in (tmp / "drive").rglob("*")) / 2**20
        spec = make_spec(model, args.device)
        engine = spec.build()
        engine.prepare()
        samples: list[tuple[int, float]] = []
        start = rss_mb()
        t0 = time.perf_counter()
        s = index_bags(
            [tmp / "drive"],
            tmp / "db",
            spec,
            engine=engine,
            progress=False,
            batch_size=args.batch_size,
            commit_rows=256,
            on_rows=lambda _bag, n: samples.append((n, rss_mb())),
        )
        seconds = time.perf_counter() - t0
        db_mb = sum(p.stat().st_size for p in (tmp / "db").rglob("*") if p.is_file()) / 2**20
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    at = {
        f"{q}%": round(samples[min(len(samples) - 1, int(q / 100 * len(samples)))][1])
        for q in (10, 25, 50, 75, 100)
    }
    return {
        "benchmark": "fleet_index_rss",
        "description": (
            f"one drive: {args.seconds / 60:g} min × 2 cameras at {args.rate:g} Hz = {frames} frames "
            f"{w}x{h} JPEG ({bag_mb:.0f} MiB mcap), ViT-B/32 random weights, 5 tasks, "
            f"batch {args.batch_size}, one process"
        ),
        "frames": s.frames,
        "seconds": round(seconds, 1),
        "fps": round(s.frames / seconds, 2),
        "rss_mb_before": round(start),
        "rss_mb_at_progress": at,
        "rss_mb_max": round(max(r for _, r in samples)),
        "index_mb_on_disk": round(db_mb, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("throughput", "rss"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bags", type=int, default=4, help="throughput: drives (default: 4)")
    parser.add_argument("--seconds", type=float, default=None, help="drive length (default: 15 / 600)")
    parser.add_argument("--rate", type=float, default=None, help="Hz per camera (default: 2)")
    parser.add_argument("--size", default=None, help="WxH (default: 640x480 / 320x240)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--gpu-fps", type=float, default=2000.0, help="projection: model frames/s per GPU")
    parser.add_argument("--cpus-per-gpu", type=int, default=8, help="projection: decode cores per GPU worker")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.mode == "throughput":
        args.seconds, args.rate, args.size = args.seconds or 15, args.rate or 2, args.size or "640x480"
        result = throughput(args)
        print(result["description"])
        print("| mode | frames | seconds | frames/s |\n|---|---|---|---|")
        for r in result["measured"]:
            print(f"| {r['mode']} | {r['frames']} | {r['seconds']} | {r['fps']} |")
        print("stage costs (s/frame):", result["stage_costs_s_per_frame"])
        print("| GPUs | projected frames/s | bound by |\n|---|---|---|")
        for r in result["projection"]:
            print(f"| {r['gpus']} | {r['fps']} | {r['bound_by']} |")
    else:
        args.seconds, args.rate, args.size = args.seconds or 600, args.rate or 2, args.size or "320x240"
        result = rss(args)
        print(json.dumps(result, indent=1))
    result.update(python=platform.python_version(), cpu_count=os.cpu_count())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
