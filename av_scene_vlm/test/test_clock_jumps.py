"""clip_node and caption_node with `use_sim_time` on a /clock this test publishes the way `ros2 bag
play --loop --clock` does — it goes back at every loop — and then pauses (real DDS):
classification keeps publishing, captions keep coming at `caption_period` (bounded from both sides:
never faster than the period, never stalled), /diagnostics keeps coming at its period while /clock
is paused, and no rate or latency in it is negative or NaN; a frame stamped ahead of the clock is
counted, not turned into a negative latency."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from av_scene_vlm.ros.caption_node import CaptionNode  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from ros_helpers import Probe, image_msg, make_clip_node, wait_for, wait_matched  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from av_scene_vlm_msgs.msg import Caption, ClassificationArray  # noqa: E402

CAMERA = "/clk/image_raw"
PERIOD = 1.0  # caption_period, s
LOOP_S = 1.5  # the bag's length in wall seconds: then /clock goes 30 s back
NUMERIC_SUFFIXES = ("_ms", "_hz", "_fps", "_s", "_per_min")


class SimClock:
    """Publishes /clock every 20 ms (1x), jumping back 30 s every LOOP_S, silent while paused."""

    def __init__(self, probe: Probe) -> None:
        self._pub = probe.create_publisher(Clock, "/clock", 10)
        self.ns = 1_800_000_000 * 10**9
        self.paused = threading.Event()
        self.loops = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> SimClock:
        self._thread.start()
        return self

    def _run(self) -> None:
        loop_start = time.monotonic()
        while not self._stop.wait(0.02):
            if self.paused.is_set():
                continue
            self.ns += 20_000_000
            if time.monotonic() - loop_start > LOOP_S:
                loop_start, self.ns, self.loops = time.monotonic(), self.ns - 30 * 10**9, self.loops + 1
            msg = Clock()
            msg.clock.sec, msg.clock.nanosec = divmod(self.ns, 10**9)
            self._pub.publish(msg)

    def header(self, ahead_s: float = 0.0) -> Header:
        h = Header(frame_id="clk")
        h.stamp.sec, h.stamp.nanosec = divmod(self.ns + int(ahead_s * 1e9), 10**9)
        return h

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def arrivals(probe: Probe, topic: str, times: dict[str, list[float]]) -> None:
    """Record the monotonic arrival time of each message on `topic` into `times[topic]`."""
    times[topic] = []
    probe.create_subscription(
        Caption if "caption" in topic else ClassificationArray,
        topic,
        lambda msg: times[topic].append(time.monotonic()),
        10,
    )


def test_looping_and_paused_sim_clock(ros, tiny_clip, tiny_qwen, rng) -> None:
    ctx, spinner = ros
    common = {"image_topics": [CAMERA], "use_sim_time": True, "diagnostics_period": 0.2}
    clip = make_clip_node(ctx, spinner, tiny_clip, labels=["car", "truck"], tasks="", heatmap=False, **common)
    values = {"caption_model": str(tiny_qwen), "caption_max_new_tokens": 3, "caption_max_pixels": 112 * 112,
              "caption_period": PERIOD, **common}  # fmt: skip
    overrides = [Parameter(k, value=v) for k, v in values.items()]
    caption = spinner.add(CaptionNode("caption_node", context=ctx, parameter_overrides=overrides))
    probe = spinner.add(Probe(ctx))
    times: dict[str, list[float]] = {}
    arrivals(probe, "/clk/scene/classification", times)
    arrivals(probe, "/clk/scene/caption", times)
    probe.listen(DiagnosticArray, "/diagnostics", 200)
    pub = probe.camera_publisher(Image, CAMERA)
    spinner.start()
    assert wait_matched(clip, pub) and wait_matched(caption, pub)
    clock = SimClock(probe).start()
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)

    def feed(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pub.publish(image_msg(rgb, "rgb8", clock.header()))
            time.sleep(0.05)

    try:
        feed(1.0)
        assert wait_for(lambda: times["/clk/scene/caption"], timeout=30), "no caption at all"
        start = time.monotonic()
        feed(4.0)  # looping: the clock goes back twice or more
        pub.publish(image_msg(rgb, "rgb8", clock.header(ahead_s=100.0)))  # stamped ahead of the clock
        clock.paused.set()
        diagnostics_before = len(probe.messages("/diagnostics"))
        feed(2.0)  # /clock paused
        diagnostics_paused = len(probe.messages("/diagnostics")) - diagnostics_before
        clock.paused.clear()
        feed(3.0)  # looping again
        end = time.monotonic()
    finally:
        clock.stop()
    assert clock.loops >= 4, clock.loops

    results = [t for t in times["/clk/scene/classification"] if start <= t <= end]
    gaps = np.diff([start, *results, end])
    assert gaps.max() < 1.0, f"classification stalled for {gaps.max():.2f} s"

    captions = [t for t in times["/clk/scene/caption"] if start <= t <= end + 0.5]
    intervals = np.diff(captions)
    assert len(captions) >= 6, captions  # 9 s at one per second
    assert intervals.min() >= 0.8 * PERIOD, intervals  # never faster than the period
    assert intervals.max() <= PERIOD + 1.5, intervals  # never stalled by the clock going back

    # /diagnostics on steady time: at its period (0.2 s, two nodes) while /clock did not move.
    assert diagnostics_paused >= 10, diagnostics_paused
    bad = []
    for arr in probe.messages("/diagnostics"):
        for status in arr.status:
            for kv in status.values:
                if kv.key.endswith(NUMERIC_SUFFIXES) and kv.value:
                    value = float(kv.value)
                    if not math.isfinite(value) or value < 0:
                        bad.append((status.name, kv.key, kv.value))
    assert not bad, bad
    ahead = [
        int(kv.value)
        for arr in probe.messages("/diagnostics")
        for status in arr.status
        if status.name.startswith("/clip_node") and status.hardware_id == CAMERA
        for kv in status.values
        if kv.key == "stamp_ahead_of_clock"
    ]
    assert ahead and ahead[-1] >= 1, ahead[-5:]
