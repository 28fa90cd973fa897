"""Scene events end to end: clip_node over real DDS with a tiny CLIP on a synthetic drive whose scene
changes (bright dry day <-> dark rainy night) publishes the expected START/END pairs, the latched list of open
events and the /diagnostics counts; a runtime redefinition ends a removed event and a bad one is
refused with the reason; the same drive written to a bag and run through `av-scene-vlm bag --events`
gives the same intervals."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from av_scene_vlm.core.bag.typestore import IMAGE  # noqa: E402
from av_scene_vlm.core.engine import ZeroShotEngine  # noqa: E402
from av_scene_vlm.core.synthetic import drive_frame  # noqa: E402
from av_scene_vlm.core.tasks import parse_tasks_yaml  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from fleet_bags import header as bag_header  # noqa: E402
from fleet_bags import raw_image  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from ros_helpers import Probe, image_msg, make_clip_node, wait_for, wait_matched  # noqa: E402
from rosbags.rosbag2 import Reader, Writer  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from av_scene_vlm_msgs.msg import ClassificationArray, SceneEvent, SceneEventArray  # noqa: E402

TASKS = "weather: [clear, rain]\ntime_of_day: [day, night]\n"
CAMERA = "/front/image_raw"
NS = "/front/scene"
T0 = 1_700_000_000
STEP_NS = 250_000_000  # 4 frames per second of stamps
# The drive: (scene, frames). Short rain (0.75 s < min_duration) starts nothing; a short dry spell
# inside the rain (0.5 s < min_gap) does not end it.
SEGMENTS = [
    ("dry", 6),
    ("wet", 8),
    ("dry", 6),
    ("wet", 3),
    ("dry", 6),
    ("wet", 8),
    ("dry", 2),
    ("wet", 4),
    ("dry", 6),
]
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


def drive_frames() -> list[np.ndarray]:
    """The synthetic drive, frame by frame, exposed as a bright dry day or a dark rainy night per
    SEGMENTS: the tiny random CLIP tells those two apart (rain ~0.04 vs ~0.997), not the drive's own
    dusk and rain."""
    scenes = [s for s, n in SEGMENTS for _ in range(n)]
    out = []
    for k, scene in enumerate(scenes):
        rgb = drive_frame(k, len(scenes), 96, 128).astype(np.float32)
        out.append((rgb * 0.3 + 175 if scene == "dry" else rgb * 0.25).clip(0, 255).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def drive_and_events(tiny_clip) -> tuple[list[np.ndarray], str]:
    """The frames, and the events YAML with thresholds between what the tiny model gives the two
    scenes (its probabilities are its own, so the thresholds are measured, with a margin asserted)."""
    frames = drive_frames()
    engine = ZeroShotEngine(str(tiny_clip), tasks=parse_tasks_yaml(TASKS))
    rain = [r.tasks[0].probabilities[1] for r in engine.classify(frames)]
    scenes = [s for s, n in SEGMENTS for _ in range(n)]
    dry_max = max(p for p, s in zip(rain, scenes, strict=True) if s == "dry")
    wet_min = min(p for p, s in zip(rain, scenes, strict=True) if s == "wet")
    assert wet_min - dry_max > 0.2, (dry_max, wet_min)
    on, off = dry_max + 0.6 * (wet_min - dry_max), dry_max + 0.4 * (wet_min - dry_max)
    events = (
        f"wet: {{when: {{weather: rain}}, on: {on:.6f}, off: {off:.6f}, min_duration: 1.0, min_gap: 1.0}}\n"
    )
    return frames, events


def stamp(i: int) -> tuple[int, int]:
    ns = T0 * 1_000_000_000 + i * STEP_NS
    return ns // 1_000_000_000, ns % 1_000_000_000


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


@pytest.fixture(scope="module")
def drive_bag(tmp_path_factory, drive_and_events) -> Path:
    """The drive as a bag (raw Image, the frames' stamps as record times) beside events.yaml and
    tasks.yaml."""
    frames, events_yaml = drive_and_events
    root = tmp_path_factory.mktemp("events")
    (root / "events.yaml").write_text(events_yaml)
    (root / "tasks.yaml").write_text(TASKS)
    return _write_bag(root / "bags" / "drive", frames)


def test_drive_gives_start_end_pairs_live_and_from_the_bag(
    ros, tiny_clip, drive_and_events, drive_bag, tmp_path, run_cli
) -> None:
    frames, events_yaml = drive_and_events
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


def _write_bag(path: Path, frames: list[np.ndarray]) -> Path:
    from av_scene_vlm.core.bag.typestore import bag_typestore

    store = bag_typestore()
    writer = Writer(path, version=8)
    writer.open()
    conn = writer.add_connection(CAMERA, IMAGE, typestore=store)
    for i, rgb in enumerate(frames):
        sec, nanosec = stamp(i)
        msg, _ = raw_image(store, rgb, "rgb8", bag_header(store, sec, nanosec, f"f{i}"))
        writer.write(conn, sec * 1_000_000_000 + nanosec, store.serialize_cdr(msg, IMAGE))
    writer.close()
    return path


def test_fleet_index_stores_the_intervals_and_search_finds_frames_inside(
    tiny_clip, drive_and_events, drive_bag, tmp_path, run_cli
) -> None:
    from av_scene_vlm.core.fleet import FleetError, FleetIndex, search_index

    frames, _ = drive_and_events
    root, db = drive_bag.parents[1], tmp_path / "db"
    res = run_cli(
        "index", str(root / "bags"), "--db", str(db), "--model", str(tiny_clip),
        "--config", str(root / "tasks.yaml"), "--events", str(root / "events.yaml"), "--no-progress",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    index = FleetIndex.open(str(db))
    intervals = index.db.open_table("events").to_arrow().to_pylist()
    ns = [stamp(i)[0] * 1_000_000_000 + stamp(i)[1] for i in range(len(frames))]
    assert [
        (r["name"], r["topic"], r["start"], r["end"], r["duration"], r["open_at_end"]) for r in intervals
    ] == [
        ("wet", CAMERA, ns[10], ns[18], 2.0, False),
        ("wet", CAMERA, ns[33], ns[47], 3.5, False),
    ]
    inside = {ns[i] for i in [*range(10, 19), *range(33, 48)]}

    # Alone: every frame inside, in time order (the command: JSON lines).
    res = run_cli("search", "--db", str(db), "--event", "wet", "--top-k", "100", "--json")
    assert res.returncode == 0, res.stderr
    listed = [json.loads(line)["stamp"] for line in res.stdout.splitlines()]
    assert listed == sorted(inside)
    # With text, --where and --image: only frames inside, ranked by the query.
    from av_scene_vlm.core.engine import ZeroShotEngine

    engine = ZeroShotEngine(str(tiny_clip), tasks=parse_tasks_yaml(TASKS))
    text = engine.encode_texts(["rain at night"])[0]
    ranked = search_index(index, text, top_k=100, event="wet")
    assert {h.stamp for h in ranked} == inside and len(ranked) == len(inside)
    assert all(round(a.score, 6) >= round(b.score, 6) for a, b in pairwise(ranked))
    late = search_index(index, text, top_k=100, event="wet", where=f"stamp > {ns[30]}")
    assert {h.stamp for h in late} == {n for n in inside if n > ns[30]}
    image = engine.classify([frames[0]])[0].image_embedding
    by_image = search_index(index, image, top_k=3, event="wet")
    assert len(by_image) == 3 and {h.stamp for h in by_image} <= inside
    with pytest.raises(FleetError, match="has no event 'snow'"):
        search_index(index, None, event="snow")
    # Another run with other events is refused: bags indexed before would lack its intervals.
    other = tmp_path / "other.yaml"
    other.write_text("dry: {when: {weather: clear}}\n")
    res = run_cli(
        "index", str(root / "bags"), "--db", str(db), "--model", str(tiny_clip),
        "--config", str(root / "tasks.yaml"), "--events", str(other), "--no-progress",
    )  # fmt: skip
    assert res.returncode == 2 and "Use the same --events" in res.stderr
