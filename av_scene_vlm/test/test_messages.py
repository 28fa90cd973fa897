"""Every custom message travels over real Fast DDS, within one process and across two."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

rclpy = pytest.importorskip("rclpy")
msgs = pytest.importorskip("av_scene_vlm_msgs.msg")

from std_msgs.msg import Header  # noqa: E402


def _header(sec: int = 1700000000, nanosec: int = 123456789, frame: str = "camera_front") -> Header:
    h = Header()
    h.stamp.sec, h.stamp.nanosec, h.frame_id = sec, nanosec, frame
    return h


def _classification(task: str = "weather") -> msgs.Classification:
    return msgs.Classification(
        header=_header(),
        task=task,
        labels=["clear", "rain", "snow", "fog"],
        probabilities=[0.7, 0.2, 0.05, 0.05],
        top_label="clear",
        top_probability=0.7,
        model_id="openai/clip-vit-base-patch32",
        inference_latency=0.012,
    )


def sample_messages() -> dict[str, object]:
    """One filled instance of each message type."""
    return {
        "Classification": _classification(),
        "ClassificationArray": msgs.ClassificationArray(
            header=_header(), results=[_classification("weather"), _classification("time_of_day")]
        ),
        "Similarity": msgs.Similarity(
            header=_header(),
            texts=["car", "truck"],
            tasks=["road_user", "road_user"],
            cosine=[0.25, 0.125],
            logit_scale=100.0,
            image_embedding=[0.5, 0.5, 0.5, 0.5],
            model_id="m",
        ),
        "Caption": msgs.Caption(
            header=_header(),
            text="A truck on a wet highway at dusk.",
            prompt="Describe the scene.",
            model_id="Qwen/Qwen2.5-VL-3B-Instruct",
            latency=0.8,
            num_tokens=12,
        ),
        "LabelInfo": msgs.LabelInfo(
            header=_header(frame=""),
            tasks=[
                msgs.TaskInfo(
                    task="road_user",
                    labels=["car", "pedestrian"],
                    prompts=["a photo of a car.", "a baby crossing the road"],
                    prompt_label_index=[0, 1],
                )
            ],
            model_id="m",
        ),
    }


def _wait(predicate, timeout: float = 10.0, spin=None) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if spin is not None:
            spin()
        if predicate():
            return True
    return False


@pytest.fixture(scope="module")
def ros_context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.shutdown(context=ctx)


@pytest.mark.parametrize("name", list(sample_messages()))
def test_roundtrip_in_process(ros_context, name: str) -> None:
    from rclpy.executors import SingleThreadedExecutor

    sent = sample_messages()[name]
    msg_type = type(sent)
    node = rclpy.create_node(f"msg_test_{name.lower()}", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    received: list = []
    topic = f"/test_msgs/{name.lower()}"
    node.create_subscription(msg_type, topic, received.append, 10)
    pub = node.create_publisher(msg_type, topic, 10)
    try:
        assert _wait(
            lambda: pub.get_subscription_count() > 0, spin=lambda: executor.spin_once(timeout_sec=0.05)
        ), "subscriber never matched"

        def spin():
            pub.publish(sent)
            executor.spin_once(timeout_sec=0.05)

        assert _wait(lambda: bool(received), spin=spin), f"{name} never arrived"
        assert received[0] == sent
        assert received[0].header.stamp.nanosec == 123456789
    finally:
        executor.shutdown()
        node.destroy_node()


PUBLISHER = textwrap.dedent(
    """
    import sys, time
    import rclpy
    sys.path.insert(0, {testdir!r})
    from test_messages import sample_messages
    rclpy.init()
    node = rclpy.create_node("msg_test_publisher")
    samples = sample_messages()
    pubs = {{n: node.create_publisher(type(m), "/test_msgs_x/" + n.lower(), 10) for n, m in samples.items()}}
    end = time.monotonic() + 20
    while time.monotonic() < end:
        for n, m in samples.items():
            pubs[n].publish(m)
        time.sleep(0.05)
    """
)


def test_roundtrip_across_processes(ros_context) -> None:
    from rclpy.executors import SingleThreadedExecutor

    samples = sample_messages()
    node = rclpy.create_node("msg_test_receiver", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    received: dict[str, object] = {}
    for name, sent in samples.items():
        node.create_subscription(
            type(sent), f"/test_msgs_x/{name.lower()}", lambda m, n=name: received.setdefault(n, m), 10
        )
    code = PUBLISHER.format(testdir=os.path.dirname(__file__))
    proc = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ))
    try:
        ok = _wait(
            lambda: len(received) == len(samples),
            timeout=20,
            spin=lambda: executor.spin_once(timeout_sec=0.05),
        )
        assert ok, f"received only {sorted(received)} from the other process"
        for name, sent in samples.items():
            assert received[name] == sent, name
    finally:
        proc.kill()
        proc.wait()
        executor.shutdown()
        node.destroy_node()
