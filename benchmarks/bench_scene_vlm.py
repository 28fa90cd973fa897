"""Does captioning slow the classifier down? scene_vlm's classifier fps with and without captions.

Runs `python -m av_scene_vlm.ros.scene_vlm` as a subprocess (exactly what `ros2 run av_scene_vlm
scene_vlm` runs) once per configuration, publishes 640×480 rgb8 frames at 30 Hz from this process
and counts the ClassificationArray and Caption messages that come back over a fixed window.
Models have random weights and real architectures: CLIP ViT-B/32 for the classifier and the
`small` Qwen2.5-VL (~120M parameters, real 151936-token vocabulary) for the captioner; the cost of
a forward pass depends on the architecture, not on the weight values.

Target: the classifier's processed fps with captioning is at least 90 % of its fps without.

    python benchmarks/bench_scene_vlm.py [--configs off,shared,default,budget,p30] [--repeats N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Whole raw frames in shared memory (the default 512 KiB segment fragments them over UDP), on Fast DDS
# 2.x and 3.x alike (they read different variables).
from av_scene_vlm.core.dds_profile import use_large_frames_profile  # noqa: E402

use_large_frames_profile()

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from av_scene_vlm_msgs.msg import Caption, ClassificationArray  # noqa: E402

# name -> (description, scene_vlm parameters beyond the common ones). `off` is the baseline.
BUDGET = {"caption_max_pixels": "50176", "caption_max_new_tokens": "32"}  # 224x224 px, 32 tokens
CONFIGS: dict[str, tuple[str, dict[str, str]]] = {
    "off": ("classifier alone (enable_caption:=false)", {"enable_caption": "false"}),
    "shared": ("captions every 5 s, caption_nice 0 (same priority)", {"caption_nice": "0"}),
    "default": ("captions every 5 s, node defaults (caption_nice 10)", {}),
    "nice19": ("captions every 5 s, caption_nice 19", {"caption_nice": "19"}),
    "1t": ("captions every 5 s, caption_nice 10, 1 torch thread", {"caption_num_threads": "1"}),
    "p30": ("captions every 30 s, caption_nice 10", {"caption_period": "30.0"}),
    "budget": (
        "captions every 10 s, caption_nice 10, 224x224 px, 32 tokens",
        {**BUDGET, "caption_period": "10.0"},
    ),
}
TOPIC = "/cam/image_raw"


class Probe(Node):
    """Publishes the camera at a fixed rate and counts what scene_vlm publishes."""

    def __init__(self, context: Any, fps: float, width: int, height: int) -> None:
        super().__init__("bench_probe", context=context)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pub = self.create_publisher(Image, TOPIC, reliable)
        rgb = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        self.msg = Image(height=height, width=width, encoding="rgb8", step=width * 3, data=rgb.tobytes())
        self.msg.header.frame_id = "cam"
        self.lock = threading.Lock()
        self.classifications = 0
        self.captions: list[Caption] = []
        self.clip_diag: dict[str, str] = {}
        self.caption_diag: dict[str, str] = {}
        self.camera_diag: dict[str, str] = {}
        self.sent = 0
        self.create_subscription(ClassificationArray, "/cam/scene/classification", self._on_cls, reliable)
        self.create_subscription(Caption, "/cam/scene/caption", self._on_caption, reliable)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.period = 1.0 / fps
        self.publishing = False

    def _on_cls(self, _msg: ClassificationArray) -> None:
        with self.lock:
            self.classifications += 1

    def _on_caption(self, msg: Caption) -> None:
        with self.lock:
            self.captions.append(msg)

    def _on_diag(self, arr: DiagnosticArray) -> None:
        for status in arr.status:
            values = {kv.key: kv.value for kv in status.values}
            if status.name.endswith(f"clip_node: {TOPIC}"):
                self.camera_diag = values
            elif status.name.endswith("clip_node: engine"):
                self.clip_diag = values
            elif status.name.endswith("caption_node: captioner"):
                self.caption_diag = values

    def publish_loop(self, stop: threading.Event) -> None:
        """Publish at a fixed rate (absolute schedule, so a slow publish does not lower the rate)."""
        next_t = time.monotonic()
        while not stop.is_set():
            if self.publishing:
                now = self.get_clock().now().to_msg()
                self.msg.header.stamp = now
                self.pub.publish(self.msg)
                self.sent += 1
            next_t += self.period
            time.sleep(max(0.0, next_t - time.monotonic()))


def build_models(tmp: Path) -> tuple[Path, Path]:
    from av_scene_vlm.random_weights import build_clip_b32, build_tiny_qwen25vl, small_qwen25vl_config

    clip = build_clip_b32(tmp / "clip-b32")
    qwen = build_tiny_qwen25vl(tmp / "qwen25vl-small", config=small_qwen25vl_config())
    return clip, qwen


def run_config(
    name: str, params: dict[str, str], clip: Path, qwen: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """One scene_vlm process: warm up, then count outputs over `args.duration` seconds."""
    base = {
        "model": str(clip),
        "caption_model": str(qwen),
        "image_topics": f"[{TOPIC}]",
        "labels": "[car,truck,bus,pedestrian,bicycle]",
        "tasks": "''",
        "heatmap": "false",
        "device": "cpu",
        "caption_device": "cpu",
        "caption_period": str(args.caption_period),
        "caption_max_new_tokens": str(args.new_tokens),
    }
    cmd = [sys.executable, "-m", "av_scene_vlm.ros.scene_vlm", "--ros-args"]
    for k, v in {**base, **params}.items():
        cmd += ["-p", f"{k}:={v}"]
    log = open(args.log_dir / f"scene_vlm_{name}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    probe = Probe(ctx, args.fps, args.width, args.height)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(probe)
    stop = threading.Event()
    spin = threading.Thread(target=lambda: _spin(executor, stop), daemon=True)
    pub_thread = threading.Thread(target=probe.publish_loop, args=(stop,), daemon=True)
    spin.start()
    pub_thread.start()
    captioning = params.get("enable_caption", "true") != "false"
    # A whole number of caption periods: captioning is periodic, so such a window holds its average load.
    period = float({**base, **params}["caption_period"])
    window = period * math.ceil(args.duration / period) if captioning and period > 0 else args.duration
    try:
        subscribers = 2 if captioning else 1
        _wait(lambda: probe.pub.get_subscription_count() >= subscribers, 120, proc, "subscriptions")
        probe.publishing = True
        _wait(lambda: probe.classifications > 0, 60, proc, "first classification")
        if captioning:
            _wait(lambda: len(probe.captions) > 0, 120, proc, "first caption")
        time.sleep(args.warmup)
        with probe.lock:
            c0, n0, s0 = probe.classifications, len(probe.captions), probe.sent
        cpu0 = (_cpu_ticks(), _cpu_ticks(proc.pid), _cpu_ticks(os.getpid()))
        t0 = time.monotonic()
        time.sleep(window)
        with probe.lock:
            c1, caps, s1 = probe.classifications, list(probe.captions[n0:]), probe.sent
        span = time.monotonic() - t0
        cpu1 = (_cpu_ticks(), _cpu_ticks(proc.pid), _cpu_ticks(os.getpid()))
    finally:
        stop.set()
        pub_thread.join(timeout=5)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        spin.join(timeout=5)
        executor.shutdown()
        probe.destroy_node()
        rclpy.shutdown(context=ctx)
    latencies = [m.latency for m in caps]
    # CPU use in % of all cores: scene_vlm, and everything else on the machine but this benchmark.
    total = span * os.sysconf("SC_CLK_TCK") * (os.cpu_count() or 1) / 100.0
    machine, scene, bench = (b - a for a, b in zip(cpu0, cpu1, strict=True))
    return {
        "config": name,
        "description": CONFIGS[name][0],
        "params": params,
        "input_fps": (s1 - s0) / span,
        "classifier_fps": (c1 - c0) / span,
        "engine_time_p50_ms": float(probe.clip_diag.get("engine_time_p50_ms", "nan")),
        "captions": len(caps),
        "caption_latency_s": float(np.median(latencies)) if latencies else None,
        "caption_tokens": float(np.median([m.num_tokens for m in caps])) if caps else None,
        "caption_torch_threads": probe.caption_diag.get("torch_threads"),
        "clip_input_rate_hz": float(probe.camera_diag.get("input_rate_hz", "nan")),
        "window_s": span,
        "scene_vlm_cpu_pct": scene / total,
        "other_cpu_pct": max(0.0, machine - scene - bench) / total,
    }


def _cpu_ticks(pid: int | None = None) -> float:
    """Busy CPU ticks of the machine (pid None) or of one process (utime + stime)."""
    if pid is None:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return float(sum(fields) - fields[3] - fields[4])  # minus idle and iowait
    parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return float(int(parts[11]) + int(parts[12]))


def _spin(executor: SingleThreadedExecutor, stop: threading.Event) -> None:
    while not stop.is_set():
        executor.spin_once(timeout_sec=0.05)


def _wait(predicate: Any, timeout: float, proc: subprocess.Popen, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"scene_vlm exited with {proc.returncode} before {what} (see its log)")
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


COLUMNS = (  # header, width, row -> text
    ("config", -8, lambda r, b: r["config"]),
    ("sent Hz", 7, lambda r, b: f"{r['input_fps']:.1f}"),
    ("recv Hz", 7, lambda r, b: f"{r['clip_input_rate_hz']:.1f}"),
    ("classifier fps", 14, lambda r, b: f"{r['classifier_fps']:.2f}"),
    ("vs off", 6, lambda r, b: f"{r['classifier_fps'] / b:.0%}" if b > 0 else "-"),
    ("engine p50 ms", 13, lambda r, b: f"{r['engine_time_p50_ms']:.1f}"),
    ("captions", 8, lambda r, b: f"{r['captions']:.3g}"),
    ("caption s", 9, lambda r, b: "-" if r["caption_latency_s"] is None else f"{r['caption_latency_s']:.2f}"),
    ("cpu %", 5, lambda r, b: f"{r['scene_vlm_cpu_pct']:.0f}"),
    ("other %", 7, lambda r, b: f"{r['other_cpu_pct']:.0f}"),
    ("description", -1, lambda r, b: r["description"]),
)


def table(rows: list[dict[str, Any]], baseline: float) -> str:
    """Fixed-width table; `other %` is CPU used by the rest of the machine (noise) during the window."""

    def fmt(text: str, width: int) -> str:
        return text.ljust(-width) if width < 0 else text.rjust(width)

    head = " ".join(fmt(name, width) for name, width, _ in COLUMNS)
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(" ".join(fmt(get(r, baseline), width) for _, width, get in COLUMNS))
    return "\n".join(lines)


def _mean(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Average the numbers of repeated runs of one config; keep each run's classifier fps."""
    row = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values = [r[key] for r in runs if r[key] is not None]
            row[key] = float(np.mean(values)) if values else None
    caps = [r["caption_latency_s"] for r in runs if r["caption_latency_s"] is not None]
    row["caption_latency_s"] = float(np.mean(caps)) if caps else None
    row["runs_classifier_fps"] = [round(r["classifier_fps"], 3) for r in runs]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs",
        default="off,shared,default,budget,p30",
        help=f"comma-separated subset of {','.join(CONFIGS)} (default: off,shared,default,budget,p30)",
    )
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per config (min)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds after the first outputs")
    parser.add_argument("--fps", type=float, default=30.0, help="camera rate (default: 30)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--caption-period", type=float, default=5.0, help="caption_period (default: 5)")
    parser.add_argument("--new-tokens", type=int, default=64, help="caption_max_new_tokens (default: 64)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved runs of every config (mean)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = set(names) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown config(s): {', '.join(sorted(unknown))}")
    if "off" not in names:
        names.insert(0, "off")

    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.monotonic()
        clip, qwen = build_models(Path(tmp))
        print(f"# models built in {time.monotonic() - t:.0f} s", file=sys.stderr, flush=True)
        args.log_dir = Path(tmp)
        for _ in range(args.repeats):  # interleaved, so slow drifts of the machine hit every config
            for name in names:
                try:
                    r = run_config(name, CONFIGS[name][1], clip, qwen, args)
                except RuntimeError as exc:
                    log = (Path(tmp) / f"scene_vlm_{name}.log").read_text()[-3000:]
                    print(f"# {name}: {exc}\n{log}", file=sys.stderr)
                    return 2
                runs[name].append(r)
                print(
                    f"# {name}: {r['classifier_fps']:.2f} fps, {r['captions']} captions",
                    file=sys.stderr,
                    flush=True,
                )
    rows = [_mean(runs[name]) for name in names]

    baseline = rows[0]["classifier_fps"]
    import torch

    cpu = platform.processor() or platform.machine()
    device = f"cpu ({cpu}, {os.cpu_count()} cores, torch {torch.__version__})"
    print(
        f"device: {device}; {args.width}x{args.height} rgb8 at {args.fps:g} Hz; "
        f">= {args.duration:g} s per config, {args.repeats} run(s) each"
    )
    print(table(rows, baseline))
    for r in rows:
        r["vs_off"] = r["classifier_fps"] / baseline if baseline > 0 else None
        r["meets_target"] = r["vs_off"] is not None and r["vs_off"] >= 0.9
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "device": device,
            "python": platform.python_version(),
            "frame": [args.width, args.height],
            "fps": args.fps,
            "duration_s": args.duration,
            "repeats": args.repeats,
            "caption_period_s": args.caption_period,
            "caption_max_new_tokens": args.new_tokens,
            "target": "classifier fps with captions >= 90% of without",
            "results": rows,
        }
        args.json.write_text(json.dumps(meta, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
