"""Scene events end to end: clip_node over real DDS with a tiny CLIP on a synthetic drive whose scene
changes (bright dry day <-> dark rainy night) publishes the expected START/END pairs, the latched list of open
events and the /diagnostics counts; a runtime redefinition ends a removed event and a bad one is
refused with the reason; the same drive written to a bag and run through `av-scene-vlm bag --events`
gives the same intervals. (The fleet index's intervals: test_scene_events_fleet.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from event_drive import (  # noqa: E402
    CAMERA,
    STEP_NS,
    TASKS,
    drive_setup,
    stamp,
)
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from ros_helpers import Probe, image_msg, make_clip_node, wait_for, wait_matched  # noqa: E402
from rosbags.rosbag2 import Reader  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from av_scene_vlm_msgs.msg import ClassificationArray, SceneEvent, SceneEventArray  # noqa: E402

NS = "/front/scene"
# (frame index, transition, duration s): START at the 5th frame (1.0 s) of rain, END at the 5th
# frame (1.0 s) of dry weather; the second event spans the dry spell at frames 37-38.
EXPECTED = [
    (10, SceneEvent.START, 0.0),
    (18, SceneEvent.END, 2.0),
    (33, SceneEvent.START, 0.0),
    (47, SceneEvent.END, 3.5),
]
LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


@pytest.fixture(scope="module")
def drive(tmp_path_factory, tiny_clip) -> tuple[list[np.ndarray], str, Path]:
    return drive_setup(tmp_path_factory.mktemp("events"), tiny_clip)


def intervals(events: list) -> list[tuple]:
    """(start stamp, end stamp, duration) per START/END pair, from SceneEvent messages."""
    out, start = [], {}
    for e in events:
        s = (e.start_stamp.sec, e.start_stamp.nanosec)
        if e.transition == SceneEvent.START:
            start[e.name] = s
        else:
            assert start.pop(e.name) == s
            out.append((e.name, s, (e.header.stamp.sec, e.header.stamp.nanosec), round(e.duration, 6)))
    return out


def test_drive_gives_start_end_pairs_live_and_from_the_bag(ros, tiny_clip, drive, tmp_path, run_cli) -> None:
    frames, events_yaml, drive_bag = drive
    ctx, spinner = ros
    node = make_clip_node(
        ctx, spinner, tiny_clip, image_topics=[CAMERA], tasks=TASKS, events=events_yaml, heatmap=False
    )
    probe = spinner.add(Probe(ctx))
    probe.listen(ClassificationArray, f"{NS}/classification")
    probe.listen(SceneEvent, f"{NS}/events")
    probe.listen(SceneEventArray, f"{NS}/active_events", LATCHED)
    probe.listen(DiagnosticArray, "/diagnostics")
    pub = probe.camera_publisher(Image, CAMERA)
    client = AsyncParameterClient(probe, "/clip_node")
    spinner.start()
    assert wait_matched(node, pub) and client.wait_for_services(timeout_sec=15)
    # The probe hears the events before the first frame: the latched empty list has arrived, and the
    # node sees the probe's SceneEvent subscription.
    assert wait_for(lambda: probe.messages(f"{NS}/active_events"))
    assert wait_for(lambda: node._pubs[CAMERA]["events"].get_subscription_count() > 0)

    for i, rgb in enumerate(frames):  # one at a time: every frame classified, none dropped
        h = Header(frame_id=f"f{i}")
        h.stamp.sec, h.stamp.nanosec = stamp(i)
        pub.publish(image_msg(rgb, "rgb8", h))
        assert wait_for(lambda n=i + 1: len(probe.messages(f"{NS}/classification")) == n, timeout=30), i

    assert wait_for(lambda: len(probe.messages(f"{NS}/events")) == 4)
    live = probe.messages(f"{NS}/events")
    got = [(int(e.header.frame_id[1:]), e.transition, round(e.duration, 6)) for e in live]
    assert got == EXPECTED
    for e in live:
        assert (e.name, e.camera) == ("wet", CAMERA)
        assert (e.header.stamp.sec, e.header.stamp.nanosec) == stamp(int(e.header.frame_id[1:]))
        assert 0 < e.mean_probability <= e.peak_probability <= 1
    # Latched list: empty at activation, one open event after each START, empty after each END.
    assert wait_for(lambda: len(probe.messages(f"{NS}/active_events")) >= 5)
    lists = [[e.name for e in a.events] for a in probe.messages(f"{NS}/active_events")]
    assert lists[-4:] == [["wet"], [], ["wet"], []] and lists[0] == []

    def camera_values() -> dict[str, str]:
        for arr in reversed(probe.messages("/diagnostics")):
            for st in arr.status:
                if st.hardware_id == CAMERA and any(kv.key == "events_started" for kv in st.values):
                    return {kv.key: kv.value for kv in st.values}
        return {}

    assert wait_for(lambda: camera_values().get("events_ended") == "2", timeout=10), camera_values()
    assert camera_values()["events_started"] == "2"

    # Runtime: rain opens the event, then a redefinition without it ends it at once.
    for i in range(len(frames), len(frames) + 7):
        h = Header(frame_id=f"f{i}")
        h.stamp.sec, h.stamp.nanosec = stamp(i)
        pub.publish(image_msg(frames[6], "rgb8", h))
        assert wait_for(lambda n=i + 1: len(probe.messages(f"{NS}/classification")) == n, timeout=30), i
    assert wait_for(lambda: len(probe.messages(f"{NS}/events")) == 5)
    bad = client.set_parameters([Parameter("events", value="x: {when: {weather: hail}}")])
    assert wait_for(bad.done) and not bad.result().results[0].successful
    assert "no label(s) ['hail']" in bad.result().results[0].reason
    future = client.set_parameters(
        [Parameter("events", value="night: {when: {time_of_day: night}, on: 0.99}")]
    )
    assert wait_for(future.done) and future.result().results[0].successful, future.result().results[0].reason
    assert wait_for(lambda: len(probe.messages(f"{NS}/events")) == 6)
    end = probe.messages(f"{NS}/events")[-1]
    last = len(frames) + 6  # START at the 5th of these frames, END at the last one seen
    assert (end.name, end.transition, end.header.frame_id) == ("wet", SceneEvent.END, f"f{last}")
    assert end.duration == pytest.approx((last - (len(frames) + 4)) * STEP_NS / 1e9)
    assert wait_for(lambda: probe.messages(f"{NS}/active_events")[-1].events == [])

    # Offline: the same drive in a bag through `av-scene-vlm bag --events` gives the same intervals.
    bag, out, root = drive_bag, tmp_path / "out", drive_bag.parents[1]
    events_file = root / "events.yaml"
    summary = tmp_path / "out.json"
    args = ["bag", str(bag), str(out), "--model", str(tiny_clip), "--config", str(root / "tasks.yaml")]
    res = run_cli(*args, "--events", str(events_file), "--summary", str(summary), "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "events: 2 started, 2 ended" in res.stdout
    from av_scene_vlm.core.bag.typestore import bag_typestore

    store = bag_typestore()
    with Reader(out) as reader:
        conns = [c for c in reader.connections if c.topic == f"{NS}/events"]
        offline = [store.deserialize_cdr(raw, c.msgtype) for c, _, raw in reader.messages(connections=conns)]
    assert intervals(offline) == intervals(live[:4])
    rows = json.loads(summary.read_text())["events"]
    assert [(r["name"], r["start"], r["end"], r["duration"]) for r in rows] == [
        (
            "wet",
            dict(zip(("sec", "nanosec"), stamp(a), strict=True)),
            dict(zip(("sec", "nanosec"), stamp(b), strict=True)),
            d,
        )
        for a, b, d in ((10, 18, 2.0), (33, 47, 3.5))
    ]
