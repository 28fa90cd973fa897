"""Scene events in the fleet index: `index --events` stores the intervals of the synthetic drive (the
ones clip_node and `bag --events` give, test_scene_events_node.py), on Ray as in one process, and
`search --event NAME` finds the frames inside them alone or with text, `--where` and `--image`."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from av_scene_vlm.core.engine import ZeroShotEngine
from av_scene_vlm.core.events import parse_events_yaml
from av_scene_vlm.core.fleet import EngineSpec, FleetError, FleetIndex, RayOptions, index_bags, search_index
from av_scene_vlm.core.tasks import parse_tasks_yaml
from event_drive import CAMERA, INTERVALS, TASKS, drive_setup, stamp_ns

pytest.importorskip("lancedb")


@pytest.fixture(scope="module")
def drive(tmp_path_factory, tiny_clip) -> tuple[list[np.ndarray], str, Path]:
    return drive_setup(tmp_path_factory.mktemp("events"), tiny_clip)


def rows_of(intervals: list[dict]) -> list[tuple]:
    return [(r["name"], r["topic"], r["start"], r["end"], r["duration"], r["open_at_end"]) for r in intervals]


def test_fleet_index_stores_the_intervals_and_search_finds_frames_inside(
    tiny_clip, drive, tmp_path, run_cli
) -> None:
    frames, _, drive_bag = drive
    root, db = drive_bag.parents[1], tmp_path / "db"
    res = run_cli(
        "index", str(root / "bags"), "--db", str(db), "--model", str(tiny_clip),
        "--config", str(root / "tasks.yaml"), "--events", str(root / "events.yaml"), "--no-progress",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    index = FleetIndex.open(str(db))
    intervals = index.db.open_table("events").to_arrow().to_pylist()
    ns = [stamp_ns(i) for i in range(len(frames))]
    assert rows_of(intervals) == [("wet", CAMERA, ns[a], ns[b], d, False) for a, b, d in INTERVALS]
    inside = {ns[i] for a, b, _ in INTERVALS for i in range(a, b + 1)}

    # Alone: every frame inside, in time order (the command: JSON lines).
    res = run_cli("search", "--db", str(db), "--event", "wet", "--top-k", "100", "--json")
    assert res.returncode == 0, res.stderr
    listed = [json.loads(line)["stamp"] for line in res.stdout.splitlines()]
    assert listed == sorted(inside)
    # With text, --where and --image: only frames inside, ranked by the query.
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


def test_ray_stores_the_intervals_of_the_single_process_path(tiny_clip, drive, tmp_path) -> None:
    ray = pytest.importorskip("ray")
    frames, events_yaml, drive_bag = drive
    spec = EngineSpec.create(str(tiny_clip), tasks=parse_tasks_yaml(TASKS))
    events = parse_events_yaml(events_yaml)
    ray.init(num_cpus=2, object_store_memory=200 * 1024**2, include_dashboard=False, log_to_driver=False)
    try:
        # Batches of 3 from 2 CPUs: the frames reach the store in several batches, in any order.
        s = index_bags(
            [drive_bag], tmp_path / "ray", spec, progress=False, batch_size=3, ray=RayOptions(), events=events
        )
    finally:
        ray.shutdown()
    assert s.frames == len(frames) and not s.failed
    found = FleetIndex.open(str(tmp_path / "ray")).db.open_table("events").to_arrow().to_pylist()
    ns = [stamp_ns(i) for i in range(len(frames))]
    assert rows_of(found) == [("wet", CAMERA, ns[a], ns[b], d, False) for a, b, d in INTERVALS]
