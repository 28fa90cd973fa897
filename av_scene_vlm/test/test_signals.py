"""SIGINT and SIGTERM at any moment (ros/signals.py): during imports, during the model load, while
classifying and captioning, during the captioner's compilation, and `ros2 launch`'s SIGINT -> SIGTERM
escalation. Each: exit within 5 s, exit code 0, no traceback, nothing of the nodes left in the ROS graph
(`CameraProbe.wait_gone`: no endpoint of theirs; the last test shows that check failing for a node
killed without its goodbye).

The nodes run as users start them: the console scripts (`ros2 run` runs the same files), over real
DDS, with tiny models."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")

from launch_helpers import CameraProbe, ament_env, interrupt_group, start_group, tool  # noqa: E402

from av_scene_vlm_msgs.msg import Caption, ClassificationArray  # noqa: E402

EXIT_WITHIN_S = 5.0
CAMERA = "/sig/image_raw"
NODES = {"/clip_node", "/caption_node"}
CLIP_ARGS = ["labels:=[car, truck]", "tasks:=''", "heatmap:=false", f"image_topics:=[{CAMERA}]"]
QWEN_ARGS = ["caption_max_new_tokens:=3", f"caption_max_pixels:={112 * 112}", "caption_period:=0.0"]


def ros_args(params: list[str]) -> list[str]:
    return ["--ros-args", *(arg for p in params for arg in ("-p", p))]


class Started:
    """A node console script in a process group of its own, its output in a file read while it runs."""

    def __init__(self, executable: str, params: list[str], log: Path) -> None:
        self.log = log
        self._out = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [tool(executable), *ros_args(params)],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, HF_HUB_OFFLINE="1"),
            start_new_session=True,
        )

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text()

    def wait_output(self, text: str, timeout: float = 120.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.proc.poll() is None:
            if text in self.output():
                return True
            time.sleep(0.05)
        return text in self.output()

    def catches(self, signum: int) -> bool:
        """The process has a handler for `signum` (/proc SigCgt): the node's policy is installed."""
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return False
        caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
        return bool(int(caught.split()[1], 16) >> (signum - 1) & 1)

    def stop(self, signum: int) -> tuple[int | None, float, str]:
        """Send `signum` to the node process: (exit code or None if it outlived 5 s, seconds, output)."""
        start = time.monotonic()
        self.proc.send_signal(signum)
        try:
            code: int | None = self.proc.wait(timeout=EXIT_WITHIN_S)
        except subprocess.TimeoutExpired:
            code = None
        elapsed = time.monotonic() - start
        if code is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._out.close()
        return code, elapsed, self.log.read_text()


def assert_clean(code: int | None, elapsed: float, out: str) -> None:
    assert code == 0, f"exit code {code} after {elapsed:.1f} s:\n{out}"
    assert elapsed < EXIT_WITHIN_S, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_imports(tiny_clip, tmp_path, signum) -> None:
    """The console script takes SIGINT and SIGTERM before importing rclpy, numpy or the node: a signal
    the moment the policy is installed lands in the imports."""
    node = Started("clip_node", [f"model:={tiny_clip}", *CLIP_ARGS], tmp_path / "node.log")
    deadline = time.monotonic() + 30
    while not node.catches(signal.SIGTERM) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert node.catches(signal.SIGTERM), "the SIGTERM handler was never installed"
    code, elapsed, out = node.stop(signum)
    assert_clean(code, elapsed, out)
    assert "loading CLIP model" not in out  # it really was stopped before configure


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_model_load(tiny_clip, tmp_path, signum) -> None:
    """A signal while configure imports torch and loads the model (autostart)."""
    node = Started("clip_node", [f"model:={tiny_clip}", *CLIP_ARGS], tmp_path / "node.log")
    assert node.wait_output("loading CLIP model"), node.output()
    code, elapsed, out = node.stop(signum)
    assert_clean(code, elapsed, out)
    assert "classifying" not in out  # stopped before configure finished (torch import, model load)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_while_classifying_and_captioning(tiny_clip, tiny_qwen, tmp_path, signum) -> None:
    """scene_vlm with frames coming in and captions made back to back: a signal lands during a batch
    or a caption; both nodes leave the graph."""
    params = [f"model:={tiny_clip}", f"caption_model:={tiny_qwen}", *CLIP_ARGS, *QWEN_ARGS]
    node = Started("scene_vlm", params, tmp_path / "node.log")
    probe = CameraProbe("signal_probe")
    try:
        probe.listen(ClassificationArray, "/sig/scene/classification")
        probe.listen(Caption, "/sig/scene/caption")

        def working() -> bool:
            captions = probe.messages("/sig/scene/caption")
            return len(captions) >= 2 and bool(probe.messages("/sig/scene/classification"))

        assert probe.feed(CAMERA, working, period=0.05), node.output()
        assert probe.wait_for_nodes(NODES) >= NODES
        code, elapsed, out = node.stop(signum)
        assert_clean(code, elapsed, out)
        left = probe.wait_gone(NODES)
        assert not left, left
    finally:
        probe.close()
        if node.proc.poll() is None:
            os.killpg(node.proc.pid, signal.SIGKILL)


def test_signal_during_caption_compilation(tiny_qwen, tmp_path) -> None:
    """caption_compile:=on compiles the decoding step on the worker (tens of seconds on a CPU, which no
    signal can cut short): SIGTERM then ends the process within 5 s, without waiting for it."""
    params = [f"caption_model:={tiny_qwen}", f"image_topics:=[{CAMERA}]", *QWEN_ARGS, "caption_compile:=on"]
    node = Started("caption_node", params, tmp_path / "node.log")
    assert node.wait_output("compiling the caption decoder"), node.output()
    time.sleep(1.0)
    assert "caption model compiled" not in node.output(), "compiled too fast to test the signal"
    code, elapsed, out = node.stop(signal.SIGTERM)
    assert_clean(code, elapsed, out)
    assert "still busy" in out


def test_launch_escalation_ends_both_nodes_cleanly(tiny_clip, tiny_qwen, tmp_path) -> None:
    """Ctrl-C on `ros2 launch` with sigterm_timeout:=0.2: each node gets the terminal's SIGINT, launch's
    SIGINT and, 0.2 s later, launch's SIGTERM while it is still stopping; it stops once, exit code 0."""
    params = tmp_path / "params.yaml"
    params.write_text(
        "/**:\n  ros__parameters:\n"
        f"    caption_model: {tiny_qwen}\n    caption_period: 0.0\n    caption_max_new_tokens: 3\n"
        f"    caption_max_pixels: {112 * 112}\n    heatmap: false\n"
        "    tasks: ''\n    labels: [car, truck]\n"
    )
    cmd = [
        tool("ros2"), "launch", "av_scene_vlm", "scene_vlm.launch.py", f"model:={tiny_clip}",
        f"params_file:={params}", f"image_topics:=['{CAMERA}']", "sigterm_timeout:=0.2",
    ]  # fmt: skip
    launch = start_group(cmd, env=ament_env(HF_HUB_OFFLINE="1"))
    probe = CameraProbe("launch_signal_probe")
    try:
        probe.listen(Caption, "/sig/scene/caption")
        probe.listen(ClassificationArray, "/sig/scene/classification")

        def working() -> bool:
            return bool(probe.messages("/sig/scene/caption") and probe.messages("/sig/scene/classification"))

        assert probe.feed(CAMERA, working, period=0.05), launch.poll()
        start = time.monotonic()
        code, out = interrupt_group(launch, timeout=30)
        elapsed = time.monotonic() - start
        assert code == 0, out
        assert elapsed < EXIT_WITHIN_S + 1.0, (elapsed, out)  # the nodes, then launch itself
        assert out.count("process has finished cleanly") == 2, out
        assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
        left = probe.wait_gone(NODES)
        assert not left, left
    finally:
        probe.close()
        if launch.poll() is None:
            os.killpg(launch.pid, signal.SIGKILL)


KILLED_NODE = """
import rclpy
from std_msgs.msg import String
rclpy.init()
node = rclpy.create_node("killed_node")
node.create_publisher(String, "/sig/killed", 1)
rclpy.spin(node)
"""


def test_a_node_killed_without_goodbye_is_seen_left() -> None:
    """The graph check the tests above end with can fail: a process killed with SIGKILL, whose DDS
    participant never said goodbye, keeps its endpoints in the graph for the lease (20 s), longer than
    the 10 s `wait_gone` waits."""
    name = "/killed_node"
    probe = CameraProbe("killed_probe")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_NODE], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not probe.endpoints_left({name}) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert probe.endpoints_left({name}) == {name}, proc.poll()
        proc.kill()
        proc.wait()
        assert probe.wait_gone({name}) == {name}
    finally:
        probe.close()
        if proc.poll() is None:
            proc.kill()
