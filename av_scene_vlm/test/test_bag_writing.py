"""core.bag.writing: the processed bag's result messages are what ROS reads (rclpy's classes
deserialize our CDR, our RIHS01 hashes are ROS's), and copied connections keep or derive their
definitions (Humble-era bags record none)."""

from __future__ import annotations

import re

import pytest
from av_scene_vlm.core import bag as B
from fleet_bags import FakeCaptioner, write_drive
from rosbags.rosbag2 import Reader


def ros_type_hashes(msgs, names: list[str]) -> dict[str, str]:
    """RIHS01 hash of each message type as ROS itself reports it (`ros2 topic info -v`): from the
    rosidl-generated type support, read off a publisher of that type in a private rclpy context."""
    import rclpy
    from ros_helpers import wait_for

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        node = rclpy.create_node("type_hash_probe", context=ctx)
        out = {}
        for name in names:
            topic = f"/type_hash_probe/{name}"
            node.create_publisher(getattr(msgs, name), topic, 1)
            assert wait_for(lambda topic=topic: node.get_publishers_info_by_topic(topic), timeout=10)
            (info,) = node.get_publishers_info_by_topic(topic)
            out[info.topic_type] = str(info.topic_type_hash)
        node.destroy_node()
        return out
    finally:
        rclpy.shutdown(context=ctx)


def test_output_matches_ros_types(tmp_path, store, engine, rng) -> None:
    """The CDR we write is what rclpy's generated classes read, and our RIHS01 hashes are ROS's."""
    pytest.importorskip("rclpy")
    msgs = pytest.importorskip("av_scene_vlm_msgs.msg")
    from rclpy.serialization import deserialize_message

    names = ["ClassificationArray", "Similarity", "Caption", "LabelInfo"]
    ros_hashes = ros_type_hashes(msgs, names)
    assert sorted(ros_hashes) == sorted(f"av_scene_vlm_msgs/msg/{n}" for n in names)
    assert all(re.fullmatch(r"RIHS01_[0-9a-f]{64}", h) for h in ros_hashes.values()), ros_hashes
    write_drive(tmp_path / "in", store, "sqlite3", rng, n=2)
    B.process_bag(tmp_path / "in", tmp_path / "out", engine, progress=False, captioner=FakeCaptioner())
    seen = set()
    with Reader(tmp_path / "out") as r:
        for conn, _, raw in r.messages():
            if conn.msgtype.startswith("av_scene_vlm_msgs/"):
                name = conn.msgtype.rsplit("/", 1)[1]
                ros = deserialize_message(bytes(raw), getattr(msgs, name))
                mine = store.deserialize_cdr(raw, conn.msgtype)
                assert ros.header.frame_id == mine.header.frame_id
                assert conn.digest == ros_hashes[conn.msgtype], conn.msgtype
                seen.add(name)
    assert seen == set(names)


def test_copied_definitions_fall_back_for_humble_bags(store) -> None:
    """Humble-era bags record neither definitions nor hashes: derive them, never drop the topic."""
    from rosbags.interfaces import Connection, ConnectionExtRosbag2, MessageDefinition
    from rosbags.interfaces import MessageDefinitionFormat as Fmt

    def conn(msgtype: str, msgdef: MessageDefinition, digest: str = "") -> Connection:
        ext = ConnectionExtRosbag2("cdr", [])
        return Connection(1, "/t", msgtype, msgdef, digest, 0, ext, None)

    none = MessageDefinition(Fmt.NONE, "")
    assert B._definition(conn(B.IMAGE, none), store) == (
        store.generate_msgdef(B.IMAGE, ros_version=2)[0],
        store.hash_rihs01(B.IMAGE),
    )
    custom = MessageDefinition(Fmt.MSG, "int32 x\nstring name\n")
    msgdef, digest = B._definition(conn("vendor_msgs/msg/Thing", custom), store)
    assert msgdef == custom.data and digest.startswith("RIHS01_") and digest != B._UNKNOWN_HASH
    assert B._definition(conn("vendor_msgs/msg/Thing", none), store) == ("", B._UNKNOWN_HASH)
    assert B._definition(conn(B.IMAGE, custom, "RIHS01_abc"), store) == (custom.data, "RIHS01_abc")
