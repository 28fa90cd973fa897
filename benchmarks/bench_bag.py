"""Offline bag throughput (`av-scene-vlm bag`) on the real ViT-B/32 architecture (random weights).

Workload: a drive of 2 cameras × 60 frames of 640×480 (camera 0: raw bgr8 Image, camera 1: JPEG
CompressedImage, 30 Hz each) plus a 10 Hz String topic, the 5 tasks of config/scene_vlm.yaml with its
prompt ensembles; `process_bag` at batch sizes 1 and 8 (read + decode + classify + write, end to end).

Real-time reference: the live node must keep up with cameras × camera rate (2 × 30 Hz = 60 frames/s)
to classify every frame; `× real time` = measured frames/s ÷ that rate (≥ 1: an hour of driving is
processed in under an hour; the live node on the same hardware drops the excess frames instead).
`engine_fps` is `engine.classify` alone on the decoded frames, to show what reading, decoding and
writing cost on top.

    PYTHONPATH=av_scene_vlm python benchmarks/bench_bag.py [--device cpu|cuda|auto] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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


def synthetic_frame(h: int, w: int, i: int, cam: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth scene-like frame (gradients, a moving box, mild noise): JPEG sizes like a camera's."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack(
        [(xx // 3 + 5 * i + 40 * cam) % 256, (yy // 2 + 3 * i) % 256, ((xx + yy) // 5) % 256], -1
    ).astype(np.uint8)
    x0 = (20 * i + 100 * cam) % (w - 120)
    img[h // 3 : h // 3 + 90, x0 : x0 + 120] = (200, 40, 40)
    return np.clip(img.astype(np.int16) + rng.integers(-8, 8, img.shape), 0, 255).astype(np.uint8)


def write_drive(path: Path, cameras: int, frames: int, h: int, w: int, rate: float, storage: str) -> list:
    """The benchmark bag; returns the decoded frames (what the engine sees) in bag order."""
    from av_scene_vlm.core import bag as B
    from av_scene_vlm.core.image_codec import decode_compressed, decode_raw
    from av_scene_vlm.core.image_encode import encode_compressed, encode_raw
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = B.bag_typestore()
    t = store.types
    rng = np.random.default_rng(0)
    decoded = []
    with Writer(path, version=9, storage_plugin=StoragePlugin[storage.upper()]) as wr:
        conns = []
        for c in range(cameras):
            topic, msgtype = (
                (f"/cam{c}/image_raw", B.IMAGE)
                if c % 2 == 0
                else (f"/cam{c}/image_raw/compressed", B.COMPRESSED_IMAGE)
            )
            conns.append(wr.add_connection(topic, msgtype, typestore=store))
        chatter = wr.add_connection("/status", "std_msgs/msg/String", typestore=store)
        period = round(1e9 / rate)
        for i in range(frames):
            ts = 1_700_000_000 * 10**9 + i * period
            for c, conn in enumerate(conns):
                stamp = t["builtin_interfaces/msg/Time"](sec=ts // 10**9, nanosec=ts % 10**9)
                hdr = t["std_msgs/msg/Header"](stamp=stamp, frame_id=f"cam{c}")
                rgb = synthetic_frame(h, w, i, c, rng)
                if conn.msgtype == B.IMAGE:
                    data, step = encode_raw(rgb, "bgr8")
                    msg = t[B.IMAGE](
                        header=hdr,
                        height=h,
                        width=w,
                        encoding="bgr8",
                        is_bigendian=0,
                        step=step,
                        data=np.frombuffer(data, np.uint8),
                    )
                    decoded.append(decode_raw("bgr8", h, w, step, 0, data))
                else:
                    data = encode_compressed(rgb, "jpeg", quality=90)
                    msg = t[B.COMPRESSED_IMAGE](header=hdr, format="jpeg", data=np.frombuffer(data, np.uint8))
                    decoded.append(decode_compressed("jpeg", data))
                wr.write(conn, ts + c, store.serialize_cdr(msg, conn.msgtype))
            if i % 3 == 0:
                status = t["std_msgs/msg/String"](data=f"ok {i}")
                wr.write(chatter, ts + 99, store.serialize_cdr(status, chatter.msgtype))
    return decoded


def engine_fps(engine, frames: list, batch: int) -> float:
    t0 = time.perf_counter()
    for k in range(0, len(frames), batch):
        engine.classify(frames[k : k + batch])
    return len(frames) / (time.perf_counter() - t0)


def _table(rows: list[dict], realtime: float) -> str:
    head = (
        f"{'batch':>5}  {'frames':>6}  {'seconds':>8}  {'bag fps':>8}  {'engine fps':>10}  "
        f"{'× real time':>11}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['batch']:>5}  {r['frames']:>6}  {r['seconds']:>8.2f}  {r['bag_fps']:>8.1f}  "
            f"{r['engine_fps']:>10.1f}  {r['bag_fps'] / realtime:>11.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Build the model and the drive, time `process_bag` per batch size, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--dtype", default="auto", help="auto (fp16 on CUDA, fp32 on CPU) | float32 | ...")
    parser.add_argument("--cameras", type=int, default=2, help="cameras (default: 2)")
    parser.add_argument("--frames", type=int, default=60, help="frames per camera (default: 60)")
    parser.add_argument("--size", default="640x480", help="WxH (default: 640x480)")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate in Hz (default: 30)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="(default: 1 8)")
    parser.add_argument("--storage", choices=("sqlite3", "mcap"), default="mcap", help="(default: mcap)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    import torch
    from av_scene_vlm.cli.bag import config_templates
    from av_scene_vlm.core.bag import process_bag
    from av_scene_vlm.core.engine import ZeroShotEngine
    from av_scene_vlm.core.tasks import load_tasks_file
    from av_scene_vlm.random_weights import build_clip_b32

    w, h = (int(x) for x in args.size.lower().split("x"))
    realtime = args.cameras * args.rate
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        model = build_clip_b32(tmp / "clip-b32")
        tasks = load_tasks_file(CONFIG)
        engine = ZeroShotEngine(
            str(model), device=args.device, dtype=args.dtype, tasks=tasks, templates=config_templates(CONFIG)
        )
        engine.prepare()
        frames = write_drive(tmp / "drive", args.cameras, args.frames, h, w, args.rate, args.storage)
        engine.classify(frames[: max(args.batch_sizes)])  # warm-up (allocator, kernels)
        setup = time.perf_counter() - t0
        print(f"# setup {setup:.1f} s; device {engine.device}", file=sys.stderr, flush=True)
        for bs in args.batch_sizes:
            s = process_bag(tmp / "drive", tmp / f"out{bs}", engine, batch_size=bs, progress=False)
            efps = engine_fps(engine, frames, bs)
            rows.append(
                {
                    "batch": bs,
                    "frames": s.frames,
                    "seconds": round(s.seconds, 3),
                    "bag_fps": round(s.fps, 2),
                    "engine_fps": round(efps, 2),
                    "realtime_ratio": round(s.fps / realtime, 3),
                }
            )
            print(f"# batch {bs}: {s.fps:.1f} frames/s", file=sys.stderr, flush=True)
    desc = (
        f"bag: {args.cameras} cameras × {args.frames} frames {w}x{h} ({args.storage}), "
        f"{len(tasks)} tasks, ViT-B/32 random weights, device {engine.device}, dtype {engine.dtype}, "
        f"torch threads {torch.get_num_threads()}; real time = {args.cameras} × {args.rate:g} Hz = "
        f"{realtime:g} frames/s"
    )
    print(desc)
    print(_table(rows, realtime))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "benchmark": "bag",
            "description": desc,
            "device": str(engine.device),
            "dtype": str(engine.dtype),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if engine.device.type == "cuda" else None,
            "cameras": args.cameras,
            "frames_per_camera": args.frames,
            "size": [w, h],
            "camera_rate_hz": args.rate,
            "realtime_fps": realtime,
            "tasks": [t.name for t in tasks],
            "results": rows,
        }
        args.json.write_text(json.dumps(meta, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
