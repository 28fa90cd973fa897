"""The parts of the clip_node soak (benchmarks/bench_soak.py): cameras, controls and probes.

Cameras: four in mixed encodings (raw rgb8, bgr8, yuv422 / yuv422_yuy2, and a `.../compressed` topic
with JPEG or PNG), every stream's frames built once (only the header changes per publish, so the
publisher stays cheap on a small machine), one frame in three malformed or hostile in rotating kinds
(the hostile ones are issue 18's, from av_scene_vlm/test/hostile_frames.py), and restarts: a camera's
publisher destroyed, silent for a while, then back with the next resolution and encoding of its
rotation. Every frame's header.frame_id is "<camera>:<stream generation>:<seq>" and the node copies it
into its results, so each result says which stream and which frame it answers.
Controls: parameter changes and deactivate / activate cycles through the node's services.
Probes: the node process's RSS (/proc) and GPU memory (nvidia-smi), and the machine.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "av_scene_vlm"))
sys.path.insert(0, str(REPO / "av_scene_vlm" / "test"))  # hostile_frames: issue 18's hostile frames

# name -> (topic, streams in the order restarts go through them: width, height, encoding or format).
# Every stream of a camera has the same pixel count (640x480 = 800x384 = 480x640 = 307,200): a restart
# changes the resolution, the shape and the encoding but not the work per frame, so the load is the
# same in every minute and a minute's p95 can be compared with the first minute's (the rule).
# With 1280x720 streams after restarts, on a CPU the node cannot keep up with, the p95 rose with the
# extra pixels (docs/PERFORMANCE.md, the 10-minute run); larger streams after a restart are
# test_camera_restart's (1920x1080 -> 1280x720 -> jpeg).
CAMERAS: dict[str, tuple[str, list[tuple[int, int, str]]]] = {
    "front": ("/soak/front/image_raw", [(640, 480, "rgb8"), (800, 384, "bgr8"), (480, 640, "yuv422")]),
    "rear": ("/soak/rear/image_raw", [(640, 480, "bgr8"), (800, 384, "yuv422_yuy2"), (480, 640, "rgb8")]),
    "left": ("/soak/left/image_raw", [(640, 480, "yuv422"), (800, 384, "rgb8"), (480, 640, "bgr8")]),
    "right": (
        "/soak/right/image_raw/compressed",
        [(640, 480, "jpeg"), (800, 384, "jpeg"), (480, 640, "png")],
    ),
}
TOPICS = {name: topic for name, (topic, _) in CAMERAS.items()}
COUNTERS = ("received", "processed", "dropped", "bad_frames", "skipped_by_period", "failed")
GOOD_FRAMES = 6  # distinct frames per stream, cycled
BAD_EVERY = 3  # frames with seq % 3 == 2 are malformed or hostile
MATCH_WAIT_S = (
    10.0  # a restarted camera starts its stream once the node's subscription matched, or after this
)


def valid_through(seq: int) -> int:
    """Valid frames among seq 0..seq of a stream (every third one is bad)."""
    return seq + 1 - (seq + 1) // BAD_EVERY


def good_messages(name: str, width: int, height: int, fmt: str) -> list:
    from av_scene_vlm.core.image_encode import encode_compressed, encode_raw
    from av_scene_vlm.core.synthetic import drive_frame
    from sensor_msgs.msg import CompressedImage, Image

    out = []
    for i in range(GOOD_FRAMES):
        rgb = drive_frame(i * 9, 60, height, width, name)
        if fmt in ("jpeg", "png"):
            out.append(CompressedImage(format=fmt, data=encode_compressed(rgb, fmt)))
        else:
            data, step = encode_raw(rgb, fmt)
            out.append(Image(height=height, width=width, encoding=fmt, step=step, data=data))
    return out


def bad_messages(compressed: bool) -> list[tuple[str, Any]]:
    """(kind, message): malformed frames, then issue 18's hostile ones, for a raw or compressed camera."""
    from av_scene_vlm.core.image_encode import encode_compressed
    from hostile_frames import hostile_compressed, hostile_raw
    from sensor_msgs.msg import CompressedImage, Image

    if compressed:
        jpeg = encode_compressed(np.full((480, 640, 3), 90, np.uint8), "jpeg")
        kinds = [
            ("jpeg cut inside its header", "jpeg", jpeg[:120]),
            ("jpeg cut after its header", "jpeg", jpeg[: len(jpeg) // 3]),  # refused by the decoder
            ("random bytes after SOI", "jpeg", b"\xff\xd8\xff" + np.random.default_rng(3).bytes(4000)),
            ("empty", "jpeg", b""),
            *((h.name, h.format, h.data) for h in hostile_compressed()),
        ]
        return [(k, CompressedImage(format=f, data=d)) for k, f, d in kinds]
    malformed = [
        ("truncated data", Image(height=480, width=640, encoding="rgb8", step=1920, data=bytes(192000))),
        ("rows too short", Image(height=480, width=640, encoding="rgb8", step=640, data=bytes(307200))),
        ("unknown encoding", Image(height=4, width=4, encoding="rgb9000", step=12, data=bytes(48))),
        ("odd-width yuv422", Image(height=4, width=3, encoding="yuv422", step=6, data=bytes(24))),
    ]
    hostile = [
        (h.name, Image(height=h.height, width=h.width, encoding=h.encoding, step=h.step, data=h.data))
        for h in hostile_raw()
    ]
    return malformed + hostile


class Camera:
    """One camera: its streams' messages, publisher, stream generation and what it sent."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.topic, self.rotation = CAMERAS[name]
        self.compressed = self.topic.endswith("/compressed")
        self.streams = [good_messages(name, *s) for s in self.rotation]
        self.bad = bad_messages(self.compressed)
        self.stream = self.gen = self.seq = 0
        self.pub: Any = None
        self.created = self.started = self.silent_until = 0.0  # monotonic
        self.waiting = False  # recreated, not yet sending (waits for the node's subscription)
        self.sent: Counter[str] = Counter()  # good, bad, and per bad kind

    def describe(self) -> str:
        w, h, fmt = self.rotation[self.stream]
        return f"{w}x{h} {fmt}"


class Player:
    """Publishes every camera on the caller's ticks; restarts cameras; resolves restarts from results."""

    def __init__(self, node, silence_s: float) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        self.node, self.silence_s = node, silence_s
        self.qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)  # as a camera driver
        self.cams = [Camera(name) for name in CAMERAS]
        for cam in self.cams:
            cam.pub = self._publisher(cam)
        self.lock = threading.Lock()
        self.restarts: list[dict] = []
        self.pending: dict[str, dict] = {}  # camera -> its restart waiting for a result of the new stream
        self.bad_answered: Counter[str] = Counter()  # results for frames sent as bad (expected: none)

    def _publisher(self, cam: Camera):
        from sensor_msgs.msg import CompressedImage, Image

        return self.node.create_publisher(CompressedImage if cam.compressed else Image, cam.topic, self.qos)

    def publish(self, now: float, warm: bool = False) -> None:
        """One frame per sending camera; `warm`: good frames only, not counted (seq -1)."""
        for cam in self.cams:
            if cam.pub is None:
                if now >= cam.silent_until:  # back, with the next stream
                    cam.pub, cam.created, cam.waiting = self._publisher(cam), now, True
                continue
            if cam.waiting:
                if not cam.pub.get_subscription_count() and now - cam.created < MATCH_WAIT_S:
                    continue
                cam.waiting, cam.started = False, now
                with self.lock:
                    if cam.name in self.pending:
                        self.pending[cam.name]["match_s"] = round(now - cam.created, 3)
            bad = not warm and cam.seq % BAD_EVERY == BAD_EVERY - 1
            if bad:
                kind, msg = cam.bad[(cam.seq // BAD_EVERY) % len(cam.bad)]
            else:
                msg = cam.streams[cam.stream][cam.seq % GOOD_FRAMES]
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(time.time_ns(), 10**9)
            msg.header.frame_id = f"{cam.name}:{cam.gen}:{-1 if warm else cam.seq}"
            cam.pub.publish(msg)
            if not warm:
                cam.seq += 1
                cam.sent["bad" if bad else "good"] += 1
                if bad:
                    cam.sent[kind] += 1

    def restart(self, n: int, now: float, t0: float) -> None:
        """Restart camera n % 4: publisher gone, silent for silence_s, back with its next stream."""
        cam = self.cams[n % len(self.cams)]
        self.node.destroy_publisher(cam.pub)
        before = cam.describe()
        cam.pub, cam.silent_until = None, now + self.silence_s
        cam.stream, cam.gen, cam.seq = (cam.stream + 1) % len(cam.rotation), cam.gen + 1, 0
        record = {"n": n + 1, "camera": cam.name, "at_s": round(now - t0, 1), "from": before}
        record.update(to=cam.describe(), gen=cam.gen, silent_s=self.silence_s, resumed=False)
        with self.lock:
            self.restarts.append(record)
            self.pending[cam.name] = record
        print(f"[soak] {record['at_s']:7.1f} s restart {cam.name}: {before} -> {record['to']}", flush=True)

    def on_result(self, frame_id: str, now: float) -> dict | None:
        """A result arrived (recorder thread): the first one of a restarted camera's new stream
        resolves its restart (returned)."""
        try:
            name, gen, seq = frame_id.split(":")
            gen_n, seq_n = int(gen), int(seq)
        except ValueError:
            return None
        if seq_n >= 0 and seq_n % BAD_EVERY == BAD_EVERY - 1:
            self.bad_answered[name] += 1
        with self.lock:
            record = self.pending.get(name)
            if record is None or gen_n != record["gen"] or seq_n < 0:
                return None
            del self.pending[name]
            cam = next(c for c in self.cams if c.name == name)
            record.update(
                resumed=True,
                frames_until_result=seq_n + 1,
                valid_frames_until_result=valid_through(seq_n),
                resume_s=round(now - cam.started, 3),
            )
        return record


# ---- what the soak does to the node: parameter changes, deactivate / activate --------------------------
NODE = "/clip_node"
PARAM_CHANGES = [  # (name, values in turn, valid)
    ("smoothing", (0.5, 0.0), True),
    ("labels", (["car", "truck", "bus"], [""]), True),
    ("smoothing", (1.5,), False),  # outside [0, 1): refused, the old value kept
]


def done(future, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while not future.done() and time.monotonic() < end:
        time.sleep(0.02)
    return future.done()


class Control:
    """Parameter changes and lifecycle cycles on their schedule, in a thread of their own (a
    transition waits for the node's worker; the cameras must not)."""

    def __init__(self, node, recorder, args, t0: float) -> None:
        from lifecycle_msgs.srv import ChangeState
        from rclpy.parameter_client import AsyncParameterClient

        self.recorder, self.args, self.t0 = recorder, args, t0
        self.params = AsyncParameterClient(node, NODE)
        self.change = node.create_client(ChangeState, f"{NODE}/change_state")
        self.param_log: list[dict] = []
        self.lifecycle_log: list[dict] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        end, k_param, k_life = self.t0 + self.args.minutes * 60, 1, 0
        while not self.stop.is_set():
            t_param = self.t0 + k_param * self.args.param_every
            t_life = self.t0 + (k_life + 0.5) * self.args.lifecycle_every
            if t_life + 2 * self.args.silence + 10 > end:
                t_life = float("inf")  # a cycle must end well before the soak does
            t_next = min(t_param, t_life)
            if t_next >= end or self.stop.wait(max(0.0, t_next - time.monotonic())):
                return
            if t_next == t_life:
                self._cycle()
                k_life += 1
            else:
                self._param(k_param)
                k_param += 1

    def _param(self, k: int) -> None:
        from rclpy.parameter import Parameter

        name, values, valid = PARAM_CHANGES[(k - 1) % len(PARAM_CHANGES)]
        value = values[((k - 1) // len(PARAM_CHANGES)) % len(values)]
        start = time.monotonic()
        future = self.params.set_parameters([Parameter(name, value=value)])
        result = future.result().results[0] if done(future, 30) else None
        answer = "timeout" if result is None else "accepted" if result.successful else "refused"
        entry = dict(at_s=round(start - self.t0, 1), name=name, value=value, answer=answer)
        entry.update(expected="accepted" if valid else "refused", reason=getattr(result, "reason", ""))
        self.param_log.append({**entry, "ms": round((time.monotonic() - start) * 1e3, 1)})

    def _transition(self, label: str) -> tuple[bool, float]:
        from lifecycle_msgs.srv import ChangeState

        start = time.monotonic()
        request = ChangeState.Request()
        request.transition.label = label
        if not self.change.wait_for_service(timeout_sec=10):
            return False, 0.0
        future = self.change.call_async(request)
        ok = done(future, 120) and bool(future.result().success)
        return ok, round(time.monotonic() - start, 3)

    def _cycle(self) -> None:
        start, before = time.monotonic(), self.recorder.counters()
        print(f"[soak] {start - self.t0:7.1f} s deactivate / activate", flush=True)
        deactivated, d_s = self._transition("deactivate")
        inactive_from = time.monotonic()
        self.stop.wait(self.args.silence)
        inactive_to = time.monotonic()
        activated, a_s = self._transition("activate")
        after_act = time.monotonic()  # the first diagnostics after it, with the cameras back
        while time.monotonic() - after_act < 10:
            d = self.recorder.snapshot()
            if self.recorder.diag_time > after_act and d.get("engine", {}).get("lifecycle_state") == "active":
                break
            time.sleep(0.1)
        after = self.recorder.counters()
        with self.recorder.lock:
            while_inactive = sum(inactive_from <= t < inactive_to for t, _, _ in self.recorder.results)
        kept = all(after[n][k] >= before[n][k] for n in TOPICS for k in ("received", "processed"))
        entry = dict(at_s=round(start - self.t0, 1), deactivate_ok=deactivated, deactivate_s=d_s)
        entry.update(activate_ok=activated, activate_s=a_s, results_while_inactive=while_inactive)
        entry["received_before"] = {n: before[n]["received"] for n in TOPICS}
        entry["received_after"] = {n: after[n]["received"] for n in TOPICS}
        self.lifecycle_log.append({**entry, "counters_kept": kept})


# ---- the node process and the machine ---------------------------------------------------------------
def rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB (Linux /proc), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used (Linux /proc), 0 when it is gone. Per minute it
    tells a slow minute in which the node did more work from one in which the machine ran it slower."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


_PROBE = np.random.default_rng(0).random(1_000_000, dtype=np.float32)


def probe_ms() -> float:
    """CPU milliseconds this thread needs for a fixed, single-threaded job (4 sorts of 1M floats): the
    machine's own speed. Thread CPU time does not depend on the share of the cores the job gets, only
    on how fast the CPU executes it, so it rises when a neighbour on the host or a lower clock slows
    every process here, the node included, and stays put when the node merely did more work."""
    start = time.thread_time()
    for _ in range(4):
        np.sort(_PROBE)
    return (time.thread_time() - start) * 1e3


def gpu_mb(pid: int) -> float | str:
    """GPU memory the driver reports for `pid` (MiB), or why there is no number."""
    if shutil.which("nvidia-smi") is None:
        return "n/a (CPU: no nvidia-smi)"
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"n/a (nvidia-smi failed: {exc})"
    for line in out.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 2 and fields[0] == str(pid) and fields[1].replace(".", "").isdigit():
            return float(fields[1])
    return "n/a (node pid not listed by nvidia-smi: CPU device, or another PID namespace)"


class Monitor:
    """Samples the node's RSS and CPU time every second, its GPU memory every 5 s and the machine's
    speed (probe_ms) every 10 s, in a thread of its own (nvidia-smi takes a while; the cameras must
    not wait for it)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.rss: list[tuple[float, float]] = []  # (monotonic s, MiB)
        self.cpu: list[tuple[float, float, float]] = []  # (monotonic s, node CPU s, this process's CPU s)
        self.gpu: list[tuple[float, float]] = []
        self.probe: list[tuple[float, float]] = []  # (monotonic s, probe_ms)
        self.gpu_note = ""  # why there are no GPU samples
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            now = time.monotonic()
            self.rss.append((now, rss_mb(self.pid)))
            self.cpu.append((now, cpu_s(self.pid), cpu_s(os.getpid())))
            if n % 5 == 0 and not self.gpu_note.startswith("n/a (CPU"):
                value = gpu_mb(self.pid)
                if isinstance(value, float):
                    self.gpu.append((now, value))
                    self.gpu_note = ""
                else:
                    self.gpu_note = value
            if n % 10 == 0:
                self.probe.append((now, probe_ms()))
            n += 1
            self._stop.wait(max(0.0, now + 1.0 - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def hardware() -> dict[str, Any]:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if "model name" in ln), platform.processor())
    mem = next(ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in ln)
    gpu = None
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu or "unknown CPU",
        "cores": os.cpu_count(),
        "ram_gib": round(int(mem) / 2**20),
        "gpu": gpu,
        "python": platform.python_version(),
    }
