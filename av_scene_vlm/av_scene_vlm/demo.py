"""`make demo`: run clip_node on the bundled synthetic drive, like a bag replay, and summarise.

Starts clip_node as its own process (as `ros2 run` would), publishes two cameras (raw rgb8 front,
JPEG rear) at camera rate, listens to every output topic and /diagnostics, saves the last heatmap
as PNG and prints what arrived. Uses openai/clip-vit-base-patch32 when it is cached or downloadable;
otherwise says so and falls back to a random test model (the data path is real, labels mean nothing).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from av_scene_vlm.core.dds_profile import use_large_frames_profile

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

PKG_DIR = Path(__file__).resolve().parents[1]
# Whole raw frames in shared memory (the default 512 KiB segment loses best-effort 640x480 frames),
# on Fast DDS 2.x (Humble, Jazzy) and 3.x (Kilted) alike; the node process inherits it.
use_large_frames_profile()
CAMERAS = {"front": "/demo/front/image_raw", "rear": "/demo/rear/image_raw/compressed"}


def choose_model(requested: str, out: Path) -> tuple[str, bool]:
    """The real model if available (cache or hub), else a random tiny CLIP built here."""
    from transformers import AutoConfig

    from av_scene_vlm.core.models import ModelLoadError, from_pretrained

    try:
        from_pretrained(AutoConfig, requested)
        return requested, True
    except ModelLoadError as exc:
        print(f"[demo] {requested} is not available here: {str(exc).split('. ')[0]}.")
    from av_scene_vlm.random_weights import build_tiny_clip

    path = out / "random-tiny-clip"
    if not (path / "config.json").is_file():
        build_tiny_clip(path)
    print(
        "[demo] FALLING BACK to a RANDOM test model: its labels mean nothing. The demo still shows the real\n"
        "       data path (topics, headers, batching, heatmap, diagnostics). For real labels run\n"
        f"       `hf download {requested}` on a machine with network (huggingface_hub older than 0.34:\n"
        "       `huggingface-cli download`), then `make demo` again."
    )
    return str(path), False


def main(argv: list[str] | None = None) -> int:
    from av_scene_vlm.core.models import DEFAULT_CLIP_MODEL

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_CLIP_MODEL)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--rate", type=float, default=10.0, help="camera rate in Hz")
    parser.add_argument("--out", default="out/demo")
    parser.add_argument("--params-file", default=str(PKG_DIR / "config" / "scene_vlm.yaml"))
    args = parser.parse_args(argv)

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    model, real = choose_model(args.model, out)

    import cv2
    import numpy as np
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import Header

    from av_scene_vlm.core.image_encode import encode_compressed, encode_raw
    from av_scene_vlm.core.naming import output_namespace
    from av_scene_vlm.core.synthetic import drive
    from av_scene_vlm_msgs.msg import ClassificationArray, Similarity

    topics = "[" + ", ".join(CAMERAS.values()) + "]"
    cmd = [
        sys.executable,
        "-m",
        "av_scene_vlm.ros.clip_node",
        "--ros-args",
        "--params-file",
        args.params_file,
        "-p",
        f"model:={model}",
        "-p",
        f"image_topics:={topics}",
        "-r",
        "__node:=clip_node",
    ]
    print(f"[demo] starting clip_node ({'real' if real else 'random'} model {model})")
    node_proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    node_log: list[str] = []
    threading.Thread(target=lambda: node_log.extend(iter(node_proc.stdout.readline, "")), daemon=True).start()

    rclpy.init()
    node = rclpy.create_node("demo_player")
    received: dict[str, list] = {}
    lock = threading.Lock()

    def listen(msg_type, topic: str) -> None:
        received[topic] = []

        def cb(msg, topic=topic):
            with lock:
                received[topic].append(msg)

        node.create_subscription(msg_type, topic, cb, 50)

    for topic in CAMERAS.values():
        ns = output_namespace(topic)
        listen(ClassificationArray, f"{ns}/classification")
        listen(Similarity, f"{ns}/similarity")
        listen(Image, f"{ns}/heatmap")
    listen(DiagnosticArray, "/diagnostics")
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)  # like `ros2 bag play`
    pubs = {
        "front": node.create_publisher(Image, CAMERAS["front"], qos),
        "rear": node.create_publisher(CompressedImage, CAMERAS["rear"], qos),
    }
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    code = 0
    try:
        deadline = time.monotonic() + 300
        while not all(p.get_subscription_count() for p in pubs.values()):
            if node_proc.poll() is not None:
                print("[demo] clip_node exited:\n" + "".join(node_log[-20:]))
                return 1
            if time.monotonic() > deadline:
                print("[demo] clip_node did not subscribe within 300 s")
                return 1
            time.sleep(0.1)
        time.sleep(1.0)  # let the node's output publishers match ours
        frames = {cam: drive(args.frames, camera=cam) for cam in CAMERAS}
        print(f"[demo] replaying {args.frames} frames per camera at {args.rate:g} Hz (front rgb8, rear jpeg)")
        t0 = time.monotonic()
        for i in range(args.frames):
            h = Header(frame_id="front_camera")
            now = node.get_clock().now().to_msg()
            h.stamp = now
            data, step = encode_raw(frames["front"][i], "rgb8")
            pubs["front"].publish(
                Image(header=h, height=480, width=640, encoding="rgb8", step=step, data=data)
            )
            hr = Header(frame_id="rear_camera", stamp=now)
            pubs["rear"].publish(
                CompressedImage(header=hr, format="jpeg", data=encode_compressed(frames["rear"][i]))
            )
            time.sleep(max(0.0, t0 + (i + 1) / args.rate - time.monotonic()))
        # The node always processes each camera's newest frame, so wait for the last one's results
        # (a loaded machine may need seconds), then a moment for the other topics.
        last = (now.sec, now.nanosec)
        result_topics = [f"{output_namespace(t)}/classification" for t in CAMERAS.values()]

        def last_results_in() -> bool:
            with lock:
                return all(
                    any((m.header.stamp.sec, m.header.stamp.nanosec) == last for m in received[t])
                    for t in result_topics
                )

        deadline = time.monotonic() + 30
        while not last_results_in() and time.monotonic() < deadline and node_proc.poll() is None:
            time.sleep(0.1)
        # Then /diagnostics published after that, so its counters include every frame that arrived.
        seen = node.get_clock().now().nanoseconds

        def diagnostics_after() -> bool:
            with lock:
                stamps = [
                    m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in received["/diagnostics"]
                ]
            return any(s > seen for s in stamps)

        deadline = time.monotonic() + 10
        while not diagnostics_after() and time.monotonic() < deadline and node_proc.poll() is None:
            time.sleep(0.05)
        time.sleep(0.3)  # a moment for the other topics
        code = summarise(received, lock, out, real, args.frames, cv2, np)
    finally:
        node_proc.terminate()
        try:
            node_proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node_proc.kill()
        rclpy.try_shutdown()  # wakes the spinning executor
        executor.shutdown()
        spin.join(timeout=10)
        node.destroy_node()
    return code


def summarise(received, lock, out: Path, real: bool, n_frames: int, cv2, np) -> int:
    """Print counts, a few results and diagnostics; save the newest heatmap as PNG."""
    with lock:
        got = {k: list(v) for k, v in received.items()}
    print("\n[demo] messages received")
    for topic, msgs in got.items():
        print(f"  {topic:<40} {len(msgs):>4}")
    front = got["/demo/front/scene/classification"]
    if not front:
        print("[demo] no classification arrived — see the node's log above")
        return 1
    print(f"\n[demo] front camera, first / middle / last result ({'real' if real else 'RANDOM'} model):")
    for msg in (front[0], front[len(front) // 2], front[-1]):
        tops = ", ".join(f"{r.task}={r.top_label} ({r.top_probability:.2f})" for r in msg.results)
        print(f"  stamp {msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}: {tops}")
    counts = Counter(r.top_label for m in front for r in m.results if r.task == "road_user")
    print(f"  road_user top labels over the drive: {dict(counts)}")
    diags = got["/diagnostics"]
    if diags:
        print("\n[demo] last /diagnostics")
        for status in diags[-1].status:
            vals = {kv.key: kv.value for kv in status.values}
            keys = [
                k
                for k in (
                    "processed_fps",
                    "input_rate_hz",
                    "engine_time_p50_ms",
                    "latency_stamp_to_publish_p50_ms",
                    "received",
                    "processed",
                    "dropped",
                    "bad_frames",
                    "device",
                )
                if k in vals
            ]
            print(f"  {status.name}: " + ", ".join(f"{k}={vals[k]}" for k in keys))
        front_status = [s for s in diags[-1].status if s.hardware_id == CAMERAS["front"]]
        if front_status:
            got_raw = int({kv.key: kv.value for kv in front_status[0].values}["received"])
            remedy = "" if got_raw >= n_frames else " (lost ones: see README, 'Raw frames between processes')"
            print(f"\n[demo] raw front frames received by the node: {got_raw} of {n_frames}{remedy}")
    heat = got["/demo/front/scene/heatmap"]
    if heat:
        msg = heat[len(heat) // 2]
        bgr = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)
        path = out / "heatmap.png"
        cv2.imwrite(str(path), bgr)
        print(f"\n[demo] heatmap saved to {path}")
    print(
        f"[demo] done: {len(front)} of {n_frames} front frames classified "
        "(the node keeps only the newest frame)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
