"""The fleet index (`core.fleet.index_bags`, `av-scene-vlm index`) on bags written with rosbags in both
storages and a real LanceDB: one row per frame, incremental re-runs, a corrupt bag skipped, an
interrupted run resumed without duplicates, another model refused."""

from __future__ import annotations

import numpy as np
import pytest
from av_scene_vlm.cli.main import main
from av_scene_vlm.core.fleet import EngineSpec, FleetError, FleetIndex, RayOptions, content_hash, index_bags
from av_scene_vlm.core.tasks import parse_tasks
from fleet_bags import FRONT, REAR, write_bag, write_corrupt

pytest.importorskip("lancedb")

TASKS = parse_tasks({"road_user": ["car", "pedestrian", "bus"], "time_of_day": ["day", "night"]})


@pytest.fixture(scope="module")
def spec(tiny_clip) -> EngineSpec:
    return EngineSpec.create(str(tiny_clip), tasks=TASKS)


@pytest.fixture(scope="module")
def engine(spec):
    return spec.build()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Three good bags (sqlite3, mcap, one nested in a sub-directory) and a corrupt one."""
    root = tmp_path_factory.mktemp("fleet")
    frames = write_bag(root / "drive_a", "sqlite3", 1)
    frames += write_bag(root / "2026" / "drive_b", "mcap", 2)
    frames += write_bag(root / "2026" / "drive_c", "mcap", 3, n=2)
    write_corrupt(root / "broken")
    return root, frames


def rows(db) -> list[dict]:
    return FleetIndex.open(str(db)).frames.to_arrow().to_pylist()


def keys(table: list[dict]) -> list[tuple]:
    return sorted((r["bag_hash"], r["topic"], r["stamp"]) for r in table)


def test_index_every_frame_once_and_rerun_adds_nothing(tmp_path, fleet, spec, engine) -> None:
    root, frames = fleet
    db = tmp_path / "db"
    s = index_bags([root], db, spec, engine=engine, progress=False, batch_size=4)
    assert sorted(s.indexed) == sorted(str(root / p) for p in ("drive_a", "2026/drive_b", "2026/drive_c"))
    assert list(s.failed) == [str(root / "broken")] and "cannot read bag" in s.failed[str(root / "broken")]
    assert s.frames == s.rows == len(frames) == 16 and not s.ann_index

    table = rows(db)
    assert len(table) == 16 and len(set(keys(table))) == 16
    hashes = {str(root / p): content_hash(root / p) for p in ("drive_a", "2026/drive_b", "2026/drive_c")}
    expected = engine.classify([f.rgb for f in frames])
    by_key = {(r["bag_hash"], r["topic"], r["stamp"]): r for r in table}
    for f, res in zip(frames, expected, strict=True):
        r = by_key[(hashes[str(f.bag)], f.topic, f.stamp)]
        assert r["bag"] == str(f.bag) and r["frame_id"] == f.frame_id
        assert r["bag_time"] == f.stamp + (0 if f.topic == FRONT else 1000)
        assert np.allclose(r["vector"], res.image_embedding, atol=1e-5)
        assert np.linalg.norm(r["vector"]) == pytest.approx(1.0, abs=1e-5)
        for task in ("road_user", "time_of_day"):
            assert r[task] == res.task(task).label
            assert r[f"{task}_prob"] == pytest.approx(res.task(task).probability, abs=1e-5)
        assert r["caption"] is None and r["thumbnail"][:2] == b"\xff\xd8"  # a JPEG
    info = FleetIndex.open(str(db)).info
    assert info.model_id == str(spec.model) and info.dim == len(table[0]["vector"])
    assert info.tasks == {"road_user": ["car", "pedestrian", "bus"], "time_of_day": ["day", "night"]}

    again = index_bags([root], db, spec, engine=engine, progress=False)
    assert again.indexed == [] and again.frames == 0 and len(again.skipped) == 3 and again.rows == 16
    assert keys(rows(db)) == keys(table)


def test_a_copied_bag_is_the_same_bag(tmp_path, fleet, spec, engine) -> None:
    import shutil

    root, _ = fleet
    shutil.copytree(root / "drive_a", tmp_path / "copy_of_a")
    s = index_bags(
        [root / "drive_a", tmp_path / "copy_of_a"], tmp_path / "db", spec, engine=engine, progress=False
    )
    assert s.indexed == [str(root / "drive_a")] and s.skipped == [str(tmp_path / "copy_of_a")] and s.rows == 6


def test_interrupted_run_resumes_without_duplicates(tmp_path, fleet, spec, engine) -> None:
    root, frames = fleet
    clean = tmp_path / "clean"
    index_bags([root], clean, spec, engine=engine, progress=False)

    db = tmp_path / "db"
    commits: list[tuple[str, int]] = []

    def crash_in_second_bag(bag: str, written: int) -> None:
        commits.append((bag, written))
        if len({b for b, _ in commits}) == 2:
            raise KeyboardInterrupt("power cut")

    with pytest.raises(KeyboardInterrupt):
        index_bags(
            [root],
            db,
            spec,
            engine=engine,
            progress=False,
            commit_rows=2,
            batch_size=2,
            on_rows=crash_in_second_bag,
        )
    partial_bag = commits[-1][0]
    index = FleetIndex.open(str(db))
    assert list(index.completed().values()) == [commits[0][0]]  # only the first bag is complete
    assert 0 < index.count(f"bag_hash = '{content_hash(partial_bag)}'") < 6  # rows of a half-done bag

    s = index_bags([root], db, spec, engine=engine, progress=False)
    assert s.skipped == [commits[0][0]] and partial_bag in s.indexed
    table = rows(db)
    assert len(table) == len(set(keys(table))) == len(frames)
    assert keys(table) == keys(rows(clean))


def test_second_model_is_refused(tmp_path, fleet, spec, engine, tiny_clip_2, capsys) -> None:
    root, _ = fleet
    index_bags([root / "drive_a"], tmp_path / "db", spec, engine=engine, progress=False)
    other = EngineSpec.create(str(tiny_clip_2), tasks=TASKS)
    with pytest.raises(
        FleetError, match=r"holds embeddings of model .*tiny-clip.* this run uses .*tiny-clip-2"
    ):
        index_bags([root / "2026" / "drive_b"], tmp_path / "db", other, progress=False)
    other_tasks = EngineSpec.create(spec.model, tasks=parse_tasks({"weather": ["clear", "rain"]}))
    with pytest.raises(FleetError, match="was built with tasks"):
        index_bags([root / "2026" / "drive_b"], tmp_path / "db", other_tasks, engine=engine, progress=False)
    assert FleetIndex.open(str(tmp_path / "db")).count() == 6  # nothing was added

    code = main(["index", str(root / "drive_a"), "--db", str(tmp_path / "db"), "--model", str(tiny_clip_2)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("av-scene-vlm index: error: index ") and err.count("\n") == 1


def test_cli_index(tmp_path, fleet, tiny_clip, capsys) -> None:
    root, _ = fleet
    cfg = tmp_path / "tasks.yaml"
    cfg.write_text("road_user: [car, pedestrian, bus]\ntime_of_day: [day, night]\n")
    args = ["index", str(root), "--db", str(tmp_path / "db"), "--model", str(tiny_clip), "--config", str(cfg)]
    code = main([*args, "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1, out  # the corrupt bag is reported, the others indexed
    assert "indexed 3 bags (16 frames, 0 bad)" in out and f"failed: {root / 'broken'}: cannot read bag" in out
    assert "index: " in out and "16 frames" in out and "exact search" in out
    assert main([*args, "--no-progress"]) == 1
    assert "skipped 3 already indexed" in capsys.readouterr().out

    assert main(["index", str(tmp_path / "nope"), "--db", str(tmp_path / "x"), "--labels", "a", "b"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err
    bad_task = tmp_path / "bad.yaml"
    bad_task.write_text("Road-User: [car, bus]\n")
    assert (
        main(
            [
                "index",
                str(root / "drive_a"),
                "--db",
                str(tmp_path / "y"),
                "--model",
                str(tiny_clip),
                "--config",
                str(bad_task),
            ]
        )
        == 2
    )
    assert "cannot be an index column" in capsys.readouterr().err


def test_frames_of_requested_topics_only(tmp_path, fleet, spec, engine) -> None:
    root, _ = fleet
    s = index_bags(
        [root / "drive_a", root / "2026"], tmp_path / "db", spec, engine=engine, progress=False, topics=[REAR]
    )
    assert s.frames == 8 and {r["topic"] for r in rows(tmp_path / "db")} == {REAR}


class FakeCaptioner:
    """Anything with `.caption(rgb)` returning an object with `.text` serves (as in `bag`)."""

    def __init__(self) -> None:
        self.calls = 0

    def caption(self, rgb: np.ndarray):
        from types import SimpleNamespace

        self.calls += 1
        return SimpleNamespace(text=f"scene {rgb.shape[1]}x{rgb.shape[0]}")


def test_captions_every_period_of_bag_time(tmp_path, fleet, spec, engine) -> None:
    root, _ = fleet
    cap = FakeCaptioner()
    index_bags(
        [root / "drive_a"],
        tmp_path / "db",
        spec,
        engine=engine,
        captioner=cap,
        caption_every=1.0,
        progress=False,
    )
    table = sorted(rows(tmp_path / "db"), key=lambda r: (r["topic"], r["stamp"]))
    # frames 0.5 s apart, a caption per camera every 1 s of bag time: frames 0 and 2 of each camera
    assert [r["caption"] for r in table] == [
        "scene 64x40",
        None,
        "scene 64x40",
        "scene 32x48",
        None,
        "scene 32x48",
    ]
    assert cap.calls == 4


def test_missing_extra_is_one_line(tmp_path, tiny_clip) -> None:
    """Without LanceDB (the `fleet` extra) `index` and `search --db` say what to install."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['lancedb'] = None\n"
        "from av_scene_vlm.cli.main import main\n"
        f"rc = main(['index', {str(tmp_path)!r}, '--db', {str(tmp_path / 'db')!r}, '--labels', 'a', 'b'])\n"
        f"rc2 = main(['search', '--db', {str(tmp_path / 'db')!r}, 'a car'])\n"
        "sys.exit(10 * rc + rc2)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 11, proc.stderr  # 1 each: README, Exit codes
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and all("pip install 'av_scene_vlm[fleet]'" in line for line in lines), lines
    assert lines[0].startswith("av-scene-vlm index: error: lancedb is not installed")


def test_ray_actor_resources() -> None:
    from av_scene_vlm.core.fleet.ray_index import actor_resources

    assert actor_resources(RayOptions(num_gpus=4)) == (4, {"num_gpus": 1.0, "num_cpus": 1.0})
    assert actor_resources(RayOptions(num_gpus=0.5)) == (1, {"num_gpus": 0.5, "num_cpus": 1.0})
    assert actor_resources(RayOptions(actors=3)) == (3, {"num_cpus": 1.0})
