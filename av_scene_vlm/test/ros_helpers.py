"""Helpers for node tests over real DDS: a node under test spun in its own thread, a probe node."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
from av_scene_vlm.core.image_codec import encode_compressed, encode_raw
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header


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

    def camera_publisher(self, msg_type, topic: str, depth: int = 10):
        return self.create_publisher(
            msg_type, topic, QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)
        )
