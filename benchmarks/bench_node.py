"""clip_node overhead: what the node adds on top of the engine, 1 and 4 cameras at 640×480, 30 Hz,
for each image-tower backend (`--backends torch onnxruntime`).

clip_node runs as its own process (as `ros2 run` starts it) on the real ViT-B/32 architecture (random
weights); this process publishes raw rgb8 cameras at 30 Hz and reads /diagnostics. Reported per camera
count (medians over the run, from the node's own counters):
- engine_ms: engine time of a batch (preprocessing + encoder + scoring);
- overhead_ms: worker time per frame minus engine time (decode, batching, conversions, publishing);
- stamp_to_publish_ms: source stamp -> result published (includes transport and waiting for the worker);
- processed/input fps and dropped frames (the node keeps only the newest frame per camera).
Target (issue 4): overhead ≤ 5 ms p50. Prints a table; `--json PATH` writes the results.

    python benchmarks/bench_node.py --json benchmarks/results/node_cpu.json   (venv with ROS 2 wheels)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "av_scene_vlm"))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", "87")
# Whole raw frames in shared memory (the default 512 KiB segment fragments them over UDP), on Fast DDS
# 2.x and 3.x alike (they read different variables).
from av_scene_vlm.core.dds_profile import use_large_frames_profile  # noqa: E402

use_large_frames_profile()


def run_case(model: str, cameras: int, seconds: float, rate: float, device: str, backend: str) -> dict:
    import rclpy
    from av_scene_vlm.core.image_encode import encode_raw
    from av_scene_vlm.core.synthetic import drive
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    topics = [f"/bench/cam{i}/image_raw" for i in range(cameras)]
    cmd = [
        sys.executable, "-m", "av_scene_vlm.ros.clip_node", "--ros-args",
        "--params-file", str(REPO / "av_scene_vlm" / "config" / "scene_vlm.yaml"),
        "-p", f"model:={model}", "-p", f"device:={device}", "-p", f"backend:={backend}",
        "-p", "image_topics:=[" + ", ".join(topics) + "]", "-p", "diagnostics_period:=1.0",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rclpy.init()
    node = rclpy.create_node("bench_node_player")
    diags: list = []
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    pubs = [node.create_publisher(Image, t, qos) for t in topics]
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    try:
        deadline = time.monotonic() + 300
        while not all(p.get_subscription_count() for p in pubs):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("clip_node did not start: " + (proc.stderr.read() if proc.stderr else ""))
            time.sleep(0.1)
        frames = [encode_raw(f, "rgb8") for f in drive(30)]
        n = int(seconds * rate)
        t0 = time.monotonic()
        warm = int(3 * rate)  # first seconds: warm-up, diagnostics taken after them
        mark = None
        for i in range(n + warm):
            data, step = frames[i % len(frames)]
            h = Header(frame_id="bench", stamp=node.get_clock().now().to_msg())
            for pub in pubs:
                pub.publish(Image(header=h, height=480, width=640, encoding="rgb8", step=step, data=data))
            if i == warm:
                mark = len(diags)
            time.sleep(max(0.0, t0 + (i + 1) / rate - time.monotonic()))
        time.sleep(1.5)
        window = diags[mark:] if mark is not None else diags
        return {"backend": backend, **summarise(window, topics, cameras)}
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        rclpy.try_shutdown()
        executor.shutdown()
        spin.join(timeout=5)
        node.destroy_node()


def summarise(window: list, topics: list[str], cameras: int) -> dict:
    import statistics

    def series(hw: str, key: str) -> list[float]:
        out = []
        for arr in window:
            for s in arr.status:
                if s.hardware_id == hw or (hw == "engine" and s.name.endswith(": engine")):
                    vals = {kv.key: kv.value for kv in s.values}
                    if key in vals:
                        out.append(float(vals[key]))
        return out

    last = window[-1]
    per_cam = {}
    for t in topics:
        per_cam[t] = {
            k: statistics.median(series(t, k)) if series(t, k) else 0.0
            for k in (
                "node_overhead_p50_ms", "node_overhead_p95_ms", "latency_stamp_to_publish_p50_ms",
                "slot_wait_p50_ms", "processed_fps", "input_rate_hz",
            )
        }  # fmt: skip
        vals = next({kv.key: kv.value for kv in s.values} for s in last.status if s.hardware_id == t)
        per_cam[t]["dropped"] = int(vals["dropped"])
        per_cam[t]["received"] = int(vals["received"])
    engine_p50 = statistics.median(series("engine", "engine_time_p50_ms"))
    return {
        "cameras": cameras,
        "engine_ms_p50": engine_p50,
        "overhead_ms_p50": statistics.median(c["node_overhead_p50_ms"] for c in per_cam.values()),
        "overhead_ms_p95": statistics.median(c["node_overhead_p95_ms"] for c in per_cam.values()),
        "stamp_to_publish_ms_p50": statistics.median(
            c["latency_stamp_to_publish_p50_ms"] for c in per_cam.values()
        ),
        "processed_fps_total": sum(c["processed_fps"] for c in per_cam.values()),
        "input_hz_total": sum(c["input_rate_hz"] for c in per_cam.values()),
        "dropped_total": sum(c["dropped"] for c in per_cam.values()),
        "per_camera": per_cam,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cameras", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backends", nargs="+", default=["torch", "onnxruntime"])
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from av_scene_vlm.random_weights import build_clip_b32

    with tempfile.TemporaryDirectory() as tmp:
        model = str(build_clip_b32(Path(tmp) / "clip-b32"))
        os.environ["AV_SCENE_VLM_ONNX_CACHE"] = str(Path(tmp) / "onnx-cache")  # the node exports once
        rows = [
            run_case(model, n, args.seconds, args.rate, args.device, backend)
            for backend in args.backends
            for n in args.cameras
        ]
    import torch

    hw = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    print(
        f"\nclip_node overhead — ViT-B/32 (random weights), 640×480 rgb8 at {args.rate:g} Hz per camera, "
        f"{hw}\n"
    )
    head = (
        f"{'backend':>11} {'cameras':>7} | {'engine p50 ms':>13} | {'overhead p50 ms':>15} {'p95 ms':>7} | "
        f"{'stamp→publish p50 ms':>20} | {'input Hz':>8} {'processed fps':>13} {'dropped':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['backend']:>11} {r['cameras']:>7} | {r['engine_ms_p50']:>13.1f} | "
            f"{r['overhead_ms_p50']:>15.2f} "
            f"{r['overhead_ms_p95']:>7.2f} | {r['stamp_to_publish_ms_p50']:>20.1f} | "
            f"{r['input_hz_total']:>8.1f} "
            f"{r['processed_fps_total']:>13.2f} {r['dropped_total']:>7}"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps({"hardware": hw, "rate_hz": args.rate, "cases": rows}, indent=2)
        )
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
