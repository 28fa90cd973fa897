"""Helpers for node tests over real DDS: a node under test spun in its own thread, a probe node, a
node executable in a process of its own with parameter and lifecycle clients."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rclpy
from av_scene_vlm.core.image_encode import encode_compressed, encode_raw
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Parameter as ParameterMsg
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header


class OutOfMemoryError(RuntimeError):
    """Raised by tests' failing models; named like torch.cuda.OutOfMemoryError, on whose name the
    nodes give cached memory back."""


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0, interval: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def wait_matched(node: Node, *publishers, timeout: float = 15.0) -> bool:
    """Wait until each publisher and the node's subscription to its topic have matched each other.

    Discovery is not symmetric: a publisher can see the subscription before the subscription sees the
    publisher, and a best-effort subscription drops whatever arrives in between.
    """

    def seen_by_node(pub) -> bool:
        return any(s.topic_name == pub.topic_name and s.get_publisher_count() > 0 for s in node.subscriptions)

    def both_ways() -> bool:
        return all(pub.get_subscription_count() > 0 and seen_by_node(pub) for pub in publishers)

    return wait_for(both_ways, timeout)


def run_node_offline(module: str, *params: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run a node module as `ros2 run` would, with HF_HUB_OFFLINE=1 and `-p` params; (result, seconds)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    args = [arg for param in params for arg in ("-p", param)]
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", module, "--ros-args", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    return proc, time.monotonic() - start


class Spinner:
    """Spins nodes of one context in a background thread (like `ros2 run`, but in-process)."""

    def __init__(self, context) -> None:
        self.executor = SingleThreadedExecutor(context=context)
        self.nodes: list[Node] = []
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._stop = threading.Event()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.02)

    def add(self, node: Node) -> Node:
        self.executor.add_node(node)
        self.nodes.append(node)
        return node

    def start(self) -> Spinner:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop spinning and destroy the nodes added. The executor's shutdown forgets its nodes, and a
        node never destroyed stays in the ROS graph (on Jazzy) for every later test to find."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.executor.shutdown()
        for node in self.nodes:
            node.destroy_node()


def make_clip_node(ctx, spinner: Spinner, model, engine=None, **params):  # -> ClipNode
    """clip_node in this process (started: autostart), with `model` and `params` as parameter
    overrides, spun by `spinner`; `engine`: an already loaded engine to use."""
    from av_scene_vlm.ros.clip_node import ClipNode
    from rclpy.parameter import Parameter

    overrides = [Parameter(k, value=v) for k, v in {"model": str(model), **params}.items()]
    return spinner.add(ClipNode("clip_node", context=ctx, parameter_overrides=overrides, engine=engine))


def header(i: int, frame_id: str) -> Header:
    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = 1_700_000_000 + i, 1000 * i + 7
    return h


def image_msg(rgb: np.ndarray, encoding: str, hdr: Header, padding: int = 0) -> Image:
    data, step = encode_raw(rgb, encoding, step_padding=padding)
    return Image(
        header=hdr,
        height=rgb.shape[0],
        width=rgb.shape[1],
        encoding=encoding,
        is_bigendian=0,
        step=step,
        data=data,
    )


def compressed_msg(rgb: np.ndarray, hdr: Header, fmt: str = "jpeg") -> CompressedImage:
    return CompressedImage(header=hdr, format=fmt, data=encode_compressed(rgb, fmt))


class Probe(Node):
    """Publishes camera frames and records everything the node under test publishes."""

    def __init__(self, context, name: str = "probe") -> None:
        super().__init__(name, context=context)
        self.received: dict[str, list] = {}
        self._lock = threading.Lock()

    def listen(self, msg_type, topic: str, qos: QoSProfile | int = 10) -> None:
        self.received.setdefault(topic, [])

        def cb(msg, topic=topic):
            with self._lock:
                self.received[topic].append(msg)

        self.create_subscription(msg_type, topic, cb, qos)

    def messages(self, topic: str) -> list:
        with self._lock:
            return list(self.received.get(topic, []))

    def status_values(self, suffix: str = ": engine") -> dict[str, str]:
        """The key/values of the newest /diagnostics status whose name ends with `suffix` ({} if none)."""
        for arr in reversed(self.messages("/diagnostics")):
            for status in arr.status:
                if status.name.endswith(suffix):
                    return {kv.key: kv.value for kv in status.values}
        return {}

    def camera_publisher(self, msg_type, topic: str, depth: int = 10):
        return self.create_publisher(
            msg_type, topic, QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)
        )


class Lifecycle:
    """The lifecycle services of one node (`ros2 lifecycle get|set` over DDS), from a spun node."""

    def __init__(self, node: Node, target: str) -> None:
        self._change = node.create_client(ChangeState, f"{target}/change_state")
        self._get = node.create_client(GetState, f"{target}/get_state")

    def _call(self, client, request, timeout: float):
        assert client.wait_for_service(timeout_sec=timeout), f"no {client.srv_name} service"
        future = client.call_async(request)
        assert wait_for(future.done, timeout), f"no answer from {client.srv_name}"
        return future.result()

    def set(self, transition: str, timeout: float = 120.0) -> bool:
        """Trigger a transition by its label (configure, activate, ...); True when it succeeded."""
        request = ChangeState.Request()
        request.transition.label = transition
        return bool(self._call(self._change, request, timeout).success)

    def state(self, timeout: float = 30.0) -> str:
        """The current state's label. Asked again every 5 s: a request sent the moment the service
        shows up can be lost while discovery completes the other way; asking is harmless."""
        assert self._get.wait_for_service(timeout_sec=timeout), f"no {self._get.srv_name} service"
        end = time.monotonic() + timeout
        while True:
            future = self._get.call_async(GetState.Request())
            if wait_for(future.done, min(5.0, max(0.1, end - time.monotonic()))):
                return str(future.result().current_state.label)
            assert time.monotonic() < end, f"no answer from {self._get.srv_name}"


class NodeProcess:
    """A node executable running as a subprocess, and a parameter client per node it serves."""

    def __init__(self, module: str, nodes: list[str], args: list[str], log: Path) -> None:
        self.log = log
        self._out = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--ros-args", *args],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, HF_HUB_OFFLINE="1"),
            start_new_session=True,
        )
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.spinner = Spinner(self.ctx)
        self.client_node = self.spinner.add(
            rclpy.create_node(f"test_client_{os.getpid()}_{id(self)}", context=self.ctx)
        )
        self.spinner.start()
        self.clients = {n: AsyncParameterClient(self.client_node, f"/{n}") for n in nodes}
        for name, client in self.clients.items():
            up = wait_for(lambda c=client: c.services_are_ready() or self.proc.poll() is not None, 180)
            assert up and self.proc.poll() is None, f"{name} did not start:\n{self.output()}"

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text()

    def call(self, future):
        assert wait_for(future.done, 30), "no answer from the parameter service"
        return future.result()

    def get(self, node: str, name: str) -> Parameter:
        value = self.call(self.clients[node].get_parameters([name])).values[0]
        return Parameter.from_parameter_msg(ParameterMsg(name=name, value=value))

    def set(self, node: str, name: str, value) -> object:
        return self.call(self.clients[node].set_parameters([Parameter(name, value=value)])).results[0]

    def delete(self, node: str, name: str) -> object:
        return self.call(self.clients[node].delete_parameters([name])).results[0]

    def lifecycle(self, node: str) -> Lifecycle:
        return Lifecycle(self.client_node, f"/{node}")

    def resources(self) -> dict[str, int]:
        """The process's threads, open file descriptors and resident memory (bytes), from /proc."""
        proc = Path(f"/proc/{self.proc.pid}")
        status = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines())
        return {
            "threads": int(status["Threads"]),
            "fds": len(list((proc / "fd").iterdir())),
            "rss": int(status["VmRSS"].split()[0]) * 1024,
        }

    def stop(self) -> str:
        self.spinner.stop()
        rclpy.shutdown(context=self.ctx)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._out.close()
        return self.log.read_text()
