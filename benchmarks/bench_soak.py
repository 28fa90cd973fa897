"""Soak: clip_node for minutes over real DDS, two cameras at 2x 30 Hz, one frame in three malformed.

Why: the node must run for hours on a vehicle. This runs clip_node as its own process (as `ros2 run`
starts it) on the real ViT-B/32 architecture (random weights; `--tiny` for a quick check) with the
vehicle config, and this process plays two raw rgb8 640x480 cameras at `--rate` Hz each (default 60,
twice a 30 Hz camera) over Fast DDS with the bundled large-frames profile; every third frame of each
camera is malformed (truncated data, short rows, unknown encoding, odd-width yuv422). Measured:
- RSS of the node process over time (/proc/<pid>/status, every second), judged bounded when it grows
  by less than `--rss-tolerance` (fraction) over the second half of the run;
- per minute: results received, latency source stamp -> result received here (p50/p95), the node's
  own stamp -> publish p50/p95 and processed fps (/diagnostics), dropped and bad frame counts;
- at the end: every frame accounted for (received = processed + dropped + bad + skipped + failed),
  then SIGINT: exit code 0 and no traceback.
Prints a table; writes JSON (default benchmarks/results/soak_cpu.json). Exit code 1 if the node did
not stop cleanly or frames went missing from its counters.

    python benchmarks/bench_soak.py                 # 10 minutes, ViT-B/32 (venv with ROS 2 wheels)
    python benchmarks/bench_soak.py --minutes 0.5 --tiny --json /tmp/soak.json   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "av_scene_vlm"))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", "88")
# Whole raw frames in shared memory (the default 512 KiB segment fragments them over UDP), on Fast DDS
# 2.x and 3.x alike (they read different variables).
from av_scene_vlm.core.dds_profile import use_large_frames_profile  # noqa: E402

use_large_frames_profile()
CAMERAS = ["/soak/front/image_raw", "/soak/rear/image_raw"]
COUNTERS = ("received", "processed", "dropped", "bad_frames", "skipped_by_period", "failed")


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB (Linux /proc), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def hardware() -> str:
    model = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in ln
        ),
        platform.processor() or "unknown CPU",
    )
    mem = next(
        ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")
    )
    return f"{model}, {os.cpu_count()} cores, {int(mem) / 2**20:.0f} GiB RAM"


def camera_messages():
    """(good, bad): prebuilt 640x480 rgb8 Images of a synthetic drive, and four malformed Images."""
    from av_scene_vlm.core.image_encode import encode_raw
    from av_scene_vlm.core.synthetic import drive
    from sensor_msgs.msg import Image

    good = []
    for rgb in drive(30):
        data, step = encode_raw(rgb, "rgb8")
        good.append(Image(height=480, width=640, encoding="rgb8", step=step, data=data))
    bad = [
        Image(height=480, width=640, encoding="rgb8", step=1920, data=bytes(1920 * 100)),  # truncated
        Image(height=480, width=640, encoding="rgb8", step=640, data=bytes(640 * 480)),  # rows too short
        Image(height=4, width=4, encoding="rgb9000", step=12, data=bytes(48)),  # unknown encoding
        Image(height=4, width=3, encoding="yuv422", step=6, data=bytes(24)),  # odd-width yuv422
    ]
    return good, bad


class Recorder:
    """What this process sees of the node: result stamps with receive times, the latest diagnostics."""

    def __init__(self, node) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        from av_scene_vlm_msgs.msg import ClassificationArray

        self.lock = threading.Lock()
        self.results: list[tuple[float, int, float]] = []  # (monotonic s, camera index, latency ms)
        self.diag: dict[str, dict[str, str]] = {}
        for i, topic in enumerate(CAMERAS):
            ns = topic.rsplit("/", 1)[0]
            node.create_subscription(
                ClassificationArray, f"{ns}/scene/classification", lambda m, i=i: self._on_result(i, m), 50
            )
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)

    def _on_result(self, cam: int, msg) -> None:
        now_ns, mono = time.time_ns(), time.monotonic()
        stamp_ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        with self.lock:
            self.results.append((mono, cam, (now_ns - stamp_ns) / 1e6))

    def _on_diag(self, msg) -> None:
        with self.lock:
            for s in msg.status:
                self.diag[s.hardware_id if s.hardware_id in CAMERAS else "engine"] = {
                    kv.key: kv.value for kv in s.values
                }

    def snapshot(self) -> dict[str, dict[str, str]]:
        with self.lock:
            return {k: dict(v) for k, v in self.diag.items()}


def wait(predicate, timeout: float, what: str, proc: subprocess.Popen) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise RuntimeError(f"clip_node exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > end:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def window_row(minute: int, recorder: Recorder, t0: float, t1: float, samples, diag) -> dict:
    """One table row: results and RSS samples (monotonic times) in [t0, t1), diagnostics `diag`."""
    with recorder.lock:
        lat = [ms for t, _, ms in recorder.results if t0 <= t < t1]
    rss = [mb for t, mb in samples if t0 <= t < t1]
    cams = [diag.get(c, {}) for c in CAMERAS]

    def total(key: str) -> int:
        return sum(int(c.get(key, 0)) for c in cams)

    def worst(key: str) -> float:
        return max((float(c.get(key, 0)) for c in cams), default=0.0)

    return {
        "minute": minute,
        "seconds": round(t1 - t0, 1),
        "rss_mb": round(rss[-1], 1) if rss else 0.0,
        "results": len(lat),
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 1) if lat else None,
        "latency_p95_ms": round(float(np.percentile(lat, 95)), 1) if lat else None,
        "node_stamp_to_publish_p50_ms": worst("latency_stamp_to_publish_p50_ms"),
        "node_stamp_to_publish_p95_ms": worst("latency_stamp_to_publish_p95_ms"),
        "processed_fps": round(sum(float(c.get("processed_fps", 0)) for c in cams), 2),
        "received": total("received"),
        "dropped": total("dropped"),
        "bad": total("bad_frames"),
    }


def rss_verdict(samples: list[tuple[float, float]], tolerance: float) -> dict:
    """Growth of RSS over the second half: median of the last 10 % of samples minus that around the
    middle, and a linear fit over the second half (MiB per minute)."""
    t = np.array([s[0] for s in samples])
    mb = np.array([s[1] for s in samples])
    span = t[-1] - t[0]
    mid, end = t[0] + span / 2, t[-1]
    at_mid = float(np.median(mb[np.abs(t - mid) <= max(span * 0.05, 1.0)]))
    at_end = float(np.median(mb[t >= end - max(span * 0.1, 1.0)]))
    half = t >= mid
    slope = float(np.polyfit(t[half] / 60, mb[half], 1)[0]) if half.sum() > 2 else 0.0
    growth = at_end - at_mid
    return {
        "rss_start_mb": round(float(mb[0]), 1),
        "rss_mid_mb": round(at_mid, 1),
        "rss_end_mb": round(at_end, 1),
        "rss_peak_mb": round(float(mb.max()), 1),
        "growth_second_half_mb": round(growth, 1),
        "growth_second_half_pct": round(100 * growth / at_mid, 2),
        "slope_second_half_mb_per_min": round(slope, 2),
        "tolerance_pct": 100 * tolerance,
        "bounded": bool(growth <= tolerance * at_mid),
    }


class Player:
    """Publishes both cameras on a fixed schedule; every third frame of each camera is malformed."""

    def __init__(self, node) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)  # as a camera driver
        self.pubs = [node.create_publisher(Image, t, qos) for t in CAMERAS]
        self.good, self.bad = camera_messages()
        self.sent = [{"good": 0, "malformed": 0} for _ in CAMERAS]

    def publish(self, k: int, count: bool = True) -> None:
        malformed = k % 3 == 2
        for cam, pub in enumerate(self.pubs):
            msg = self.bad[(k // 3) % len(self.bad)] if malformed else self.good[k % len(self.good)]
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(time.time_ns(), 10**9)
            msg.header.frame_id = f"cam{cam}"
            pub.publish(msg)
            if count:
                self.sent[cam]["malformed" if malformed else "good"] += 1


def settled(recorder: Recorder) -> bool:
    """Every frame the node received is in one of its outcome counters (it took its last frame)."""
    d = recorder.snapshot()
    return all(c in d and int(d[c]["received"]) == sum(int(d[c][k]) for k in COUNTERS[1:]) for c in CAMERAS)


def run_schedule(args, player: Player, recorder: Recorder, proc: subprocess.Popen) -> dict:
    """Publish for args.minutes; sample RSS every second; one table row per minute."""
    period, duration = 1.0 / args.rate, args.minutes * 60
    samples: list[tuple[float, float]] = []
    rows: list[dict] = []
    t_start = time.monotonic()
    next_sample, window_start, tick, late = t_start, t_start, 0, 0
    while (now := time.monotonic()) - t_start < duration:
        if now >= next_sample:
            samples.append((now, rss_mb(proc.pid)))
            next_sample += 1.0
        if now - window_start >= 60:
            rows.append(window_row(len(rows) + 1, recorder, window_start, now, samples, recorder.snapshot()))
            print(fmt_row(rows[-1]), flush=True)
            window_start = now
        player.publish(tick)
        tick += 1
        delay = t_start + tick * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -period:  # fell behind: skip ticks rather than burst
            late += int(-delay / period)
            tick += int(-delay / period)
        if proc.poll() is not None:
            raise RuntimeError(f"clip_node died during the soak (exit {proc.returncode})")
    end = time.monotonic()
    samples.append((end, rss_mb(proc.pid)))
    # The node takes its last frames, then its diagnostics carry the final counters.
    end_wait = time.monotonic() + 20
    while not settled(recorder) and time.monotonic() < end_wait:
        time.sleep(0.2)
    stamp = time.monotonic()
    while time.monotonic() - stamp < 2.5:  # one more diagnostics period after settling
        time.sleep(0.1)
    final = recorder.snapshot()
    rows.append(window_row(len(rows) + 1, recorder, window_start, end, samples, final))
    print(fmt_row(rows[-1]), flush=True)
    return {
        "rows": rows,
        "samples": [(t - t_start, mb) for t, mb in samples],
        "final": final,
        "late_ticks": late,
        "published_hz_per_camera": round((tick - late) / (end - t_start), 2),
    }


def soak(args, model: str) -> dict:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    log = Path(tempfile.mkdtemp(prefix="soak_")) / "clip_node.log"
    cmd = [
        sys.executable, "-m", "av_scene_vlm.ros.clip_node", "--ros-args",
        "--params-file", str(REPO / "av_scene_vlm" / "config" / "scene_vlm.yaml"),
        "-p", f"model:={model}", "-p", f"device:={args.device}", "-p", "diagnostics_period:=1.0",
        "-p", "image_topics:=[" + ", ".join(CAMERAS) + "]",
    ]  # fmt: skip
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
    rclpy.init()
    node = rclpy.create_node("soak_player")
    recorder, player = Recorder(node), Player(node)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    try:
        wait(
            lambda: all(p.get_subscription_count() for p in player.pubs),
            600,
            "the node's subscriptions",
            proc,
        )
        warm_until = time.monotonic() + 300
        while not recorder.results:  # warm-up with good frames until the first result: not measured
            player.publish(0, count=False)
            time.sleep(0.2)
            if proc.poll() is not None or time.monotonic() > warm_until:
                raise RuntimeError(f"no result from clip_node; log: {log}")
        with recorder.lock:
            recorder.results.clear()
        print(f"[soak] clip_node ready (pid {proc.pid}): {args.minutes:g} min, 2 cameras at {args.rate:g} Hz")
        run = run_schedule(args, player, recorder, proc)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        rclpy.try_shutdown()
        executor.shutdown()
        spin.join(timeout=5)
        node.destroy_node()
    text = log.read_text(errors="replace")
    per_cam = {c: {k: int(run["final"].get(c, {}).get(k, 0)) for k in COUNTERS} for c in CAMERAS}
    return {
        "rows": run["rows"],
        "rss": rss_verdict(run["samples"], args.rss_tolerance),
        "rss_samples": [(round(t, 1), round(mb, 1)) for t, mb in run["samples"]],
        "sent": dict(zip(CAMERAS, player.sent, strict=True)),
        "published_hz_per_camera": run["published_hz_per_camera"],
        "late_ticks": run["late_ticks"],
        "final_counters": per_cam,
        "all_frames_accounted": all(
            v["received"] == sum(v[k] for k in COUNTERS[1:]) for v in per_cam.values()
        ),
        "sigint_exit_code": rc,
        "traceback_in_log": "Traceback" in text,
        "log_tail": text.splitlines()[-5:],
    }


HEAD = (
    f"{'min':>3} | {'RSS MB':>7} | {'results':>7} | {'lat p50 ms':>10} {'p95 ms':>7} | "
    f"{'node p50 ms':>11} {'p95 ms':>7} | {'fps':>5} | {'received':>8} {'dropped':>8} {'bad':>6}"
)


def fmt_row(r: dict) -> str:
    def ms(v) -> str:
        return f"{v:.1f}" if v is not None else "-"

    return (
        f"{r['minute']:>3} | {r['rss_mb']:>7.1f} | {r['results']:>7} | {ms(r['latency_p50_ms']):>10} "
        f"{ms(r['latency_p95_ms']):>7} | {r['node_stamp_to_publish_p50_ms']:>11.1f} "
        f"{r['node_stamp_to_publish_p95_ms']:>7.1f} | {r['processed_fps']:>5.2f} | {r['received']:>8} "
        f"{r['dropped']:>8} {r['bad']:>6}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=60.0, help="Hz per camera (default: 2x 30 Hz)")
    parser.add_argument("--tiny", action="store_true", help="tiny random CLIP instead of ViT-B/32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rss-tolerance", type=float, default=0.02, help="allowed RSS growth, 2nd half")
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "soak_cpu.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from av_scene_vlm.random_weights import build_clip_b32, build_tiny_clip

    with tempfile.TemporaryDirectory() as tmp:
        build = build_tiny_clip if args.tiny else build_clip_b32
        model = str(build(Path(tmp) / "clip"))
        result = soak(args, model)
    import torch

    hw = torch.cuda.get_device_name(0) if torch.cuda.is_available() and args.device != "cpu" else hardware()
    rss = result["rss"]
    print(
        f"\nclip_node soak — {'tiny CLIP' if args.tiny else 'ViT-B/32'} (random weights), vehicle config, "
        f"2 cameras 640×480 rgb8 at {args.rate:g} Hz, 1 frame in 3 malformed, {args.minutes:g} min — {hw}\n"
    )
    print(HEAD)
    print("-" * len(HEAD))
    for r in result["rows"]:
        print(fmt_row(r))
    print(
        f"\nRSS {rss['rss_start_mb']:.0f} -> {rss['rss_mid_mb']:.0f} (middle) -> "
        f"{rss['rss_end_mb']:.0f} MB (end), "
        f"peak {rss['rss_peak_mb']:.0f}; second half {rss['growth_second_half_mb']:+.1f} MB "
        f"({rss['growth_second_half_pct']:+.2f} %, fit {rss['slope_second_half_mb_per_min']:+.2f} MB/min): "
        + ("bounded" if rss["bounded"] else f"NOT shown bounded (tolerance {rss['tolerance_pct']:g} %)")
    )
    for cam, sent in result["sent"].items():
        c = result["final_counters"][cam]
        print(
            f"{cam}: sent {sent['good']} good + {sent['malformed']} malformed; node: "
            + ", ".join(f"{k} {v}" for k, v in c.items())
        )
    print(
        f"published {result['published_hz_per_camera']} Hz per camera "
        f"({result['late_ticks']} late ticks skipped); "
        f"every frame accounted for: {result['all_frames_accounted']}"
    )
    clean = result["sigint_exit_code"] == 0 and not result["traceback_in_log"]
    print(
        f"SIGINT: exit code {result['sigint_exit_code']}, traceback: {result['traceback_in_log']}"
        f" -> {'clean' if clean else 'NOT clean'}"
    )
    out = {
        "hardware": hw,
        "model": "tiny" if args.tiny else "vit-b32",
        "minutes": args.minutes,
        "rate_hz_per_camera": args.rate,
        "cameras": CAMERAS,
        "malformed_every": 3,
        "python": platform.python_version(),
        "torch": torch.__version__,
        **result,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"\nwrote {args.json}")
    return 0 if clean and result["all_frames_accounted"] else 1


if __name__ == "__main__":
    sys.exit(main())
