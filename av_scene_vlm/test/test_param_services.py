"""Parameter services never wait for inference (issue 11, point 6).

The classifier's vision tower is made to block, inside a batch, on an event the test controls (a
forward pre-hook on the real tiny model: the batch holds the engine lock for as long as the test
wants). While it is blocked, labels change over the real parameter service: the service must answer
before the batch is released (no timing is measured: the batch cannot finish until the test lets
it), the blocked batch then publishes with the old labels and the next frame with the new ones.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from av_scene_vlm.ros.clip_node import ClipNode  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402
from ros_helpers import Probe, header, image_msg, wait_for, wait_matched  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from av_scene_vlm_msgs.msg import ClassificationArray  # noqa: E402

TOPIC = "/gate/scene/classification"


class Gate:
    """A forward pre-hook that, while armed, stops the vision tower until `release` is set."""

    def __init__(self) -> None:
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, module, args):
        if self.armed:
            self.entered.set()
            self.release.wait()
        return None


def test_set_labels_answers_while_a_batch_is_running(ros, tiny_clip, rng) -> None:
    ctx, spinner = ros
    overrides = [
        Parameter("model", value=str(tiny_clip)),
        Parameter("image_topics", value=["/gate/image_raw"]),
        Parameter("labels", value=["car", "truck"]),
        Parameter("tasks", value=""),
        Parameter("heatmap", value=False),
        # The gate hooks the torch vision tower; backend auto would run the ONNX graph on a CPU.
        Parameter("backend", value="torch"),
    ]
    node = spinner.add(ClipNode("clip_node", context=ctx, parameter_overrides=overrides))
    gate = Gate()
    hook = node.engine.model.vision_model.register_forward_pre_hook(gate)
    probe = spinner.add(Probe(ctx))
    probe.listen(ClassificationArray, TOPIC)
    pub = probe.camera_publisher(Image, "/gate/image_raw")
    client = AsyncParameterClient(probe, "/clip_node")
    spinner.start()
    try:
        assert wait_matched(node, pub) and client.wait_for_services(timeout_sec=15)
        frame = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)

        gate.armed = True
        pub.publish(image_msg(frame, "rgb8", header(1, "blocked")))
        assert gate.entered.wait(30), "the worker never reached the vision tower"
        # The batch is inside the model now and holds the engine lock until the gate opens.
        future = client.set_parameters([Parameter("labels", value=["bus", "pedestrian", "animal"])])
        answered = wait_for(future.done, timeout=30)
        still_blocked = not gate.release.is_set() and not probe.messages(TOPIC)
        gate.armed = False
        gate.release.set()
        assert answered, "the parameter service waited for the running batch"
        assert still_blocked
        assert future.result().results[0].successful, future.result().results[0].reason
        assert node.get_parameter("labels").value == ["bus", "pedestrian", "animal"]

        assert wait_for(lambda: len(probe.messages(TOPIC)) == 1, timeout=30)
        first = probe.messages(TOPIC)[0]
        assert first.header.frame_id == "blocked"
        assert list(first.results[0].labels) == ["car", "truck"]  # the batch keeps the labels it began with

        pub.publish(image_msg(frame, "rgb8", header(2, "next")))
        assert wait_for(lambda: len(probe.messages(TOPIC)) == 2, timeout=30)
        second = probe.messages(TOPIC)[1]
        assert second.header.frame_id == "next"
        assert list(second.results[0].labels) == ["bus", "pedestrian", "animal"]
    finally:
        gate.armed = False
        gate.release.set()
        hook.remove()
