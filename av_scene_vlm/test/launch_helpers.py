"""Helpers for tests that start the nodes the way users do (launch files, `ros2 launch`, `ros2 run`).

A camera probe that keeps publishing frames until the wanted results came back (frames sent before a
model has loaded are, correctly, never answered), the ROS 2 command-line tools of this environment,
and process groups stopped as Ctrl-C stops them.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node, NodeNameNonExistentError
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_helpers import header, image_msg
from sensor_msgs.msg import Image

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
STARTUP_S = 180.0  # process start + torch import + model load on a slow, shared CI CPU


_TEMP_DIRS: list[Path] = []


def temp_dir() -> Path:
    """A temporary directory for a launch test's models and files: removed by `remove_temp_dirs` (the
    post-shutdown tests' tearDownClass) or, should the run stop before, when the interpreter exits."""
    path = Path(tempfile.mkdtemp(prefix="av_scene_vlm_launch_"))
    _TEMP_DIRS.append(path)
    atexit.register(shutil.rmtree, path, True)
    return path


def remove_temp_dirs() -> None:
    while _TEMP_DIRS:
        shutil.rmtree(_TEMP_DIRS.pop(), ignore_errors=True)


def tool(name: str) -> str:
    """An executable of this environment: on PATH, else beside the running Python (venv not activated)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"'{name}' not found on PATH or in {Path(sys.executable).parent}"
    return found


def ament_env(*prefixes: Path | str, **extra: str) -> dict[str, str]:
    """os.environ with `prefixes` first on AMENT_PREFIX_PATH and this venv last (as the README says)."""
    paths = [str(p) for p in prefixes]
    paths += [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p and p not in paths]
    if sys.prefix not in paths and (Path(sys.prefix) / "share" / "ament_index").is_dir():
        paths.append(sys.prefix)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "AMENT_PREFIX_PATH": os.pathsep.join(paths), "PATH": path, **extra}


class CameraProbe:
    """A node in its own context and thread that publishes camera frames and records results."""

    def __init__(self, name: str = "camera_probe") -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._lock = threading.Lock()
        self._received: dict[str, list] = {}
        self.sent: list = []  # headers of every frame published
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.02)

    def listen(self, msg_type, topic: str) -> None:
        with self._lock:
            self._received.setdefault(topic, [])

        def store(msg, topic=topic) -> None:
            with self._lock:
                self._received[topic].append(msg)

        self.node.create_subscription(msg_type, topic, store, RELIABLE)

    def messages(self, topic: str) -> list:
        with self._lock:
            return list(self._received.get(topic, []))

    def feed(
        self, camera: str, done: Callable[[], bool], timeout: float = STARTUP_S, period: float = 0.3
    ) -> bool:
        """Publish a frame to `camera` every `period` s until `done()` or the timeout; True if done."""
        pub = self.node.create_publisher(Image, camera, RELIABLE)
        rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if done():
                    return True
                msg = image_msg(rgb, "rgb8", header(len(self.sent), "launch_test_camera"))
                self.sent.append(msg.header)
                pub.publish(msg)
                time.sleep(period)
            return done()
        finally:
            self.node.destroy_publisher(pub)

    def sent_stamps(self) -> set[tuple[int, int]]:
        return {(h.stamp.sec, h.stamp.nanosec) for h in self.sent}

    def node_names(self) -> set[str]:
        return {ns.rstrip("/") + "/" + name for name, ns in self.node.get_node_names_and_namespaces()}

    def wait_for_nodes(
        self, present: set[str], absent: set[str] = frozenset(), timeout: float = 30.0
    ) -> set[str]:
        """Wait until every node in `present` and none in `absent` is in the graph; the names seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            names = self.node_names()
            if present <= names and not (absent & names):
                return names
            time.sleep(0.2)
        return self.node_names()

    def endpoints_left(self, names: set[str]) -> set[str]:
        """Those of `names` the graph lists with an endpoint still there (publisher, subscription,
        service or client): a node that is still alive, or whose process left without its participant's
        goodbye and stays until the DDS lease ends (20 s).

        Why not the names alone, after a process has ended: a long-lived observer's rmw graph cache can
        take a late `ros_discovery_info` sample after it removed the participant and list the node's
        name again, for good, with no endpoint. Seen once in CI (Jazzy) and in 4 of 52 escalation tests
        on Jazzy with two busy loops beside them: names listed 25-70 s after a clean exit, every
        endpoint gone, a new observer not listing them; `ros2 node list` through the daemon does the
        same. Upstream rmw behaviour, not the node's: the name is no evidence of a node left behind."""
        by_node = (
            self.node.get_publisher_names_and_types_by_node,
            self.node.get_subscriber_names_and_types_by_node,
            self.node.get_service_names_and_types_by_node,
            self.node.get_client_names_and_types_by_node,
        )
        left = set()
        for full in names & self.node_names():
            namespace, _, name = full.rpartition("/")
            try:
                if any(query(name, namespace or "/") for query in by_node):
                    left.add(full)
            except NodeNameNonExistentError:  # gone between the two questions
                continue
        return left

    def wait_gone(self, names: set[str], timeout: float = 10.0) -> set[str]:
        """Wait until none of `names` has an endpoint in the graph (`endpoints_left`); those left."""
        deadline = time.monotonic() + timeout
        while (left := self.endpoints_left(names)) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def has_source_header(msg, probe: CameraProbe) -> bool:
    """The message carries the header of a frame the probe sent (stamp and frame_id)."""
    stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
    return msg.header.frame_id == "launch_test_camera" and stamp in probe.sent_stamps()


def start_group(cmd: list[str] | str, **kwargs) -> subprocess.Popen:
    """Start `cmd` in a process group of its own (as a terminal runs a foreground command)."""
    return subprocess.Popen(
        cmd,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def interrupt_group(proc: subprocess.Popen, timeout: float = 120.0) -> tuple[int, str]:
    """SIGINT to the process group, as Ctrl-C does; (exit code, output). Kills it if it hangs."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return -9, out
    return proc.returncode, out


def group_alive(pgid: int) -> bool:
    """True while any process of the group is left (including zombies not yet reaped)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
