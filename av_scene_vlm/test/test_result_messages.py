"""core.result_messages: one result-to-message mapping for the live nodes and the bag writer.

Built once with the rclpy classes (the nodes' builder) and once with the rosbags typestore (the bag
writer's), every message serializes to the same CDR bytes (padding aside): a processed bag replays
exactly like a live run by construction, not by two copies kept in step.
"""

from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from av_scene_vlm.core import result_messages as M  # noqa: E402
from av_scene_vlm.core.bag import bag_typestore  # noqa: E402
from av_scene_vlm.core.engine import FrameResult, TaskResult  # noqa: E402
from av_scene_vlm.core.tasks import parse_tasks  # noqa: E402
from av_scene_vlm.ros.conversions import ros_message  # noqa: E402
from rclpy.serialization import serialize_message  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

TASKS = parse_tasks({"weather": ["clear", "rain", "fog"], "road_user": {"car": ["a car."], "bus": []}})
TEMPLATES = ("a photo of a {}.", "a dashcam photo of a {}.")


def _result() -> FrameResult:
    return FrameResult(
        tasks=[
            TaskResult(
                "weather",
                ["clear", "rain", "fog"],
                np.array([0.2, 0.7, 0.1]),
                np.array([0.1, 0.3, 0.0], np.float32),
            ),
            TaskResult("road_user", ["car", "bus"], np.array([0.6, 0.4]), np.array([0.25, 0.2], np.float32)),
        ],
        image_embedding=np.linspace(-1, 1, 16, dtype=np.float32),
        latency=0.0125,
    )


@pytest.fixture(scope="module")
def builders():
    store = bag_typestore()

    def bag_message(name, **fields):
        return store.types[f"av_scene_vlm_msgs/msg/{name}"](**fields)

    def ros_header():
        h = Header(frame_id="front_cam")
        h.stamp.sec, h.stamp.nanosec = 1_700_000_000, 42
        return h

    def bag_header():
        t = store.types
        return t["std_msgs/msg/Header"](
            stamp=t["builtin_interfaces/msg/Time"](sec=1_700_000_000, nanosec=42), frame_id="front_cam"
        )

    return store, (ros_message, ros_header), (bag_message, bag_header)


CASES = {
    "ClassificationArray": lambda make, h: M.classification_array(make, h, _result(), "acme/clip"),
    "ClassificationArray-smoothed": lambda make, h: M.classification_array(
        make, h, _result(), "acme/clip", [np.array([0.5, 0.2, 0.3]), np.array([0.1, 0.9])]
    ),
    "Similarity": lambda make, h: M.similarity(make, h, _result(), "acme/clip", 100.0, embedding=True),
    "Similarity-no-embedding": lambda make, h: M.similarity(
        make, h, _result(), "acme/clip", 100.0, embedding=False
    ),
    "LabelInfo": lambda make, h: M.label_info(make, h, TASKS, TEMPLATES, "acme/clip"),
    "Caption": lambda make, h: M.caption(make, h, "A wet road.", "Describe.", "acme/qwen", 0.5, 4),
}


@pytest.mark.parametrize("case", list(CASES))
def test_node_and_bag_messages_serialize_alike(builders, case: str) -> None:
    store, (ros_make, ros_header), (bag_make, bag_header) = builders
    ros_msg = CASES[case](ros_make, ros_header())
    bag_msg = CASES[case](bag_make, bag_header())
    msgtype = f"av_scene_vlm_msgs/msg/{case.split('-')[0]}"
    live, recorded = bytes(serialize_message(ros_msg)), bytes(store.serialize_cdr(bag_msg, msgtype))
    # Byte for byte, but for CDR's alignment padding (Fast DDS leaves whatever was in its buffer):
    # the live bytes read back and written by rosbags are the recorded bytes.
    assert len(live) == len(recorded)
    assert bytes(store.serialize_cdr(store.deserialize_cdr(live, msgtype), msgtype)) == recorded


def test_the_mapping_itself(builders) -> None:
    _, (make, header), _ = builders
    cls = M.classification_array(make, header(), _result(), "acme/clip")
    assert [(r.task, r.top_label) for r in cls.results] == [("weather", "rain"), ("road_user", "car")]
    assert all(r.header.frame_id == "front_cam" and r.inference_latency == 0.0125 for r in cls.results)
    smoothed = M.classification_array(
        make, header(), _result(), "m", [np.array([0.5, 0.2, 0.3]), np.array([0.1, 0.9])]
    )
    assert [r.top_label for r in smoothed.results] == ["clear", "bus"]  # the top label follows the override
    sim = M.similarity(make, header(), _result(), "m", 100.0, embedding=False)
    assert list(sim.texts) == ["clear", "rain", "fog", "car", "bus"] and len(sim.image_embedding) == 0
    assert list(sim.tasks) == ["weather"] * 3 + ["road_user"] * 2
    info = M.label_info(make, header(), TASKS, TEMPLATES, "m")
    weather, road_user = info.tasks
    assert list(weather.prompts)[:2] == ["a photo of a clear.", "a dashcam photo of a clear."]
    assert list(weather.prompt_label_index) == [0, 0, 1, 1, 2, 2]
    assert list(road_user.prompts) == ["a car.", "a photo of a bus.", "a dashcam photo of a bus."]
