"""The fleet index on Ray Data (a local Ray: 2 CPUs, a small object store) gives the rows of the
single-process path. One Ray instance for the module; two index runs (API and CLI) keep it short."""

from __future__ import annotations

import numpy as np
import pytest
from av_scene_vlm.cli.main import main
from av_scene_vlm.core.fleet import EngineSpec, FleetIndex, RayOptions, index_bags
from av_scene_vlm.core.tasks import parse_tasks
from fleet_bags import write_bag, write_corrupt

pytest.importorskip("lancedb")
ray = pytest.importorskip("ray")

TASKS = parse_tasks({"road_user": ["car", "pedestrian", "bus"], "time_of_day": ["day", "night"]})


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, object_store_memory=200 * 1024**2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray_bags")
    write_bag(root / "a", "sqlite3", 1)
    write_bag(root / "b", "mcap", 2, n=4)
    write_corrupt(root / "broken")
    return root


def table(db) -> dict[tuple, dict]:
    rows = FleetIndex.open(str(db)).frames.to_arrow().to_pylist()
    out = {(r["bag_hash"], r["topic"], r["stamp"]): r for r in rows}
    assert len(out) == len(rows)  # no duplicates
    return out


def test_ray_gives_the_rows_of_the_single_process_path(tmp_path, bags, tiny_clip, local_ray, capsys) -> None:
    spec = EngineSpec.create(str(tiny_clip), tasks=TASKS)
    local = index_bags([bags], tmp_path / "local", spec, progress=False)
    on_ray = index_bags([bags], tmp_path / "ray", spec, progress=False, batch_size=3, ray=RayOptions())
    assert sorted(on_ray.indexed) == sorted(local.indexed) and on_ray.frames == local.frames == 14
    assert list(on_ray.failed) == [str(bags / "broken")]
    a, b = table(tmp_path / "local"), table(tmp_path / "ray")
    assert set(a) == set(b)
    for key, row in a.items():
        other = b[key]
        assert np.allclose(row["vector"], other["vector"], atol=1e-5)
        for col in ("bag", "frame_id", "bag_time", "road_user", "time_of_day", "thumbnail"):
            assert row[col] == other[col], col
    assert (
        FleetIndex.open(str(tmp_path / "ray")).completed()
        == FleetIndex.open(str(tmp_path / "local")).completed()
    )

    # The CLI on the same (already running) Ray: everything already indexed is skipped.
    labels = ["--labels", "car", "pedestrian", "bus", "--model", str(tiny_clip)]
    code = main(["index", str(bags), "--db", str(tmp_path / "ray"), *labels, "--ray"])
    assert code == 2 and "was built with tasks" in capsys.readouterr().err  # other tasks: refused
    cfg = tmp_path / "tasks.yaml"
    cfg.write_text("road_user: [car, pedestrian, bus]\ntime_of_day: [day, night]\n")
    argv = [
        "index",
        str(bags),
        "--db",
        str(tmp_path / "ray"),
        "--config",
        str(cfg),
        "--model",
        str(tiny_clip),
    ]
    code = main([*argv, "--ray", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1 and "skipped 2 already indexed; failed 1" in out and "14 frames" in out
