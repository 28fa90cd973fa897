"""clip_node's runtime parameters over the real parameter service: label sets changed and invalid
ones rejected, smoothing and min_publish_period; and the service never waits for inference (issue 11,
point 6):

The classifier's vision tower is made to block, inside a batch, on an event the test controls (a
forward pre-hook on the real tiny model: the batch holds the engine lock for as long as the test
wants). While it is blocked, labels change over the real parameter service: the service must answer
before the batch is released (no timing is measured: the batch cannot finish until the test lets
it), the blocked batch then publishes with the old labels and the next frame with the new ones.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from av_scene_vlm.core.engine import ZeroShotEngine  # noqa: E402
from av_scene_vlm.core.tasks import parse_tasks  # noqa: E402
from av_scene_vlm.ros.clip_node import ClipNode  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402
from ros_helpers import Probe, header, image_msg, make_clip_node, wait_for, wait_matched  # noqa: E402
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


def _set_params(probe, spinner, params: dict) -> list:
    client = probe.create_client(SetParameters, "/clip_node/set_parameters")
    assert client.wait_for_service(timeout_sec=10)
    req = SetParameters.Request()
    for name, value in params.items():
        if isinstance(value, list):
            pv = ParameterValue(type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=value)
        else:
            pv = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        req.parameters.append(ParameterMsg(name=name, value=pv))
    future = client.call_async(req)
    assert wait_for(future.done, timeout=10)
    return future.result().results


def test_runtime_relabel_and_invalid_rejected(ros, tiny_clip, rng) -> None:
    ctx, spinner = ros
    node = make_clip_node(
        ctx, spinner, tiny_clip, image_topics=["/cam/image_raw"], labels=["car", "truck"], tasks=""
    )
    probe = spinner.add(Probe(ctx))
    probe.listen(ClassificationArray, "/cam/scene/classification")
    pub = probe.camera_publisher(Image, "/cam/image_raw")
    spinner.start()
    assert wait_matched(node, pub)
    frame = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)

    def publish_and_get(i: int) -> ClassificationArray:
        n = len(probe.messages("/cam/scene/classification"))
        pub.publish(image_msg(frame, "rgb8", header(i, "cam")))
        assert wait_for(lambda: len(probe.messages("/cam/scene/classification")) > n)
        return probe.messages("/cam/scene/classification")[-1]

    assert list(publish_and_get(1).results[0].labels) == ["car", "truck"]
    calls = node.engine.text_encoder_calls
    results = _set_params(probe, spinner, {"labels": ["bus", "pedestrian", "animal"]})
    assert results[0].successful, results[0].reason
    msg = publish_and_get(2)
    assert list(msg.results[0].labels) == ["bus", "pedestrian", "animal"]
    assert node.engine.text_encoder_calls == calls + 1
    # Invalid: a one-label task, and broken YAML -> rejected with a reason, old labels stay.
    bad = _set_params(probe, spinner, {"labels": ["only"]})
    assert not bad[0].successful and "at least 2 labels" in bad[0].reason
    bad = _set_params(probe, spinner, {"tasks": "weather: [clear, rain"})
    assert not bad[0].successful and "YAML" in bad[0].reason
    assert node.get_parameter("labels").value == ["bus", "pedestrian", "animal"]
    assert list(publish_and_get(3).results[0].labels) == ["bus", "pedestrian", "animal"]
    # Multi-task YAML at runtime.
    ok = _set_params(probe, spinner, {"tasks": "weather: [clear, fog]", "labels": [""]})
    assert all(r.successful for r in ok), [r.reason for r in ok]
    assert [r.task for r in publish_and_get(4).results] == ["weather"]


def test_smoothing_and_min_publish_period(ros, tiny_clip, rng) -> None:
    ctx, spinner = ros
    node = make_clip_node(
        ctx, spinner, tiny_clip, image_topics=["/ema/image_raw"], labels=["car", "truck", "bus"], tasks="",
        smoothing=0.5, heatmap=False,
    )  # fmt: skip
    probe = spinner.add(Probe(ctx))
    probe.listen(ClassificationArray, "/ema/scene/classification")
    pub = probe.camera_publisher(Image, "/ema/image_raw")
    spinner.start()
    assert wait_matched(node, pub)
    frames = [rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(3)]
    reference = ZeroShotEngine(str(tiny_clip), tasks=parse_tasks({"default": ["car", "truck", "bus"]}))
    raw = [reference.classify(f)[0].tasks[0].probabilities for f in frames]
    for i, frame in enumerate(frames):
        pub.publish(image_msg(frame, "rgb8", header(i, f"ema{i}")))
        assert wait_for(lambda i=i: len(probe.messages("/ema/scene/classification")) == i + 1)
    got = [np.array(m.results[0].probabilities) for m in probe.messages("/ema/scene/classification")]
    expected = raw[0]
    np.testing.assert_allclose(got[0], expected, atol=1e-5)  # the first frame starts the average
    for k in (1, 2):
        expected = 0.5 * expected + 0.5 * raw[k]
        np.testing.assert_allclose(got[k], expected, atol=1e-5)
    assert (
        probe.messages("/ema/scene/classification")[2].results[0].top_label
        == ["car", "truck", "bus"][int(np.argmax(expected))]
    )

    # min_publish_period: within the period every frame is skipped and counted, none published.
    assert not node.set_parameters([Parameter("min_publish_period", value=-1.0)])[0].successful
    assert not node.set_parameters([Parameter("smoothing", value=1.0)])[0].successful
    assert node.set_parameters([Parameter("min_publish_period", value=3600.0)])[0].successful
    cam = node.cameras[0]
    skipped = cam.skipped_period
    for k in range(3):
        pub.publish(image_msg(frames[k], "rgb8", header(10 + k, f"p{k}")))
        assert wait_for(lambda k=k: cam.skipped_period == skipped + k + 1), cam.skipped_period
        if k == 0:  # the worker skipped p0, so it had finished publishing ema2 before now (same clock)
            after_last_publish = time.monotonic()
    # A period that has already passed since the last result (half the time measured since): the
    # next frame is published. It is also the sentinel for the negative check: the worker takes
    # frames in order, so once it is out, the skipped frames have had every chance to appear.
    elapsed = time.monotonic() - after_last_publish
    assert node.set_parameters([Parameter("min_publish_period", value=elapsed / 2)])[0].successful
    pub.publish(image_msg(frames[0], "rgb8", header(20, "sentinel")))

    def ids() -> list[str]:
        return [m.header.frame_id for m in probe.messages("/ema/scene/classification")]

    assert wait_for(lambda: "sentinel" in ids()), ids()
    assert ids() == ["ema0", "ema1", "ema2", "sentinel"]
    assert cam.skipped_period == skipped + 3
