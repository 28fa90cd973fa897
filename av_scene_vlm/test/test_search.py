"""`av-scene-vlm search` (cli/search.py, cli/search_db.py): one interface for a bag and a fleet index.

The same options on both — a QUERY or `--image IMG`, `--where`, `--top-k`, `--json`, `--out` — and
the same answers: one drive processed into a bag and indexed into a fleet index, with the same model
and tasks, gives the same frames, scores and labels either way, in the same JSON objects.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from av_scene_vlm.cli.main import main
from av_scene_vlm.core import bag as B
from av_scene_vlm.core.fleet import EngineSpec
from av_scene_vlm.core.tasks import parse_tasks
from fleet_bags import FRONT, REAR, write_bag

QUERY = "a child crossing the road at night"
TASKS = parse_tasks({"road_user": ["car", "pedestrian", "bus"], "time_of_day": ["day", "night"]})
KEYS = {"bag", "bag_hash", "topic", "stamp", "frame_id", "bag_time", "score", "labels", "caption"}


@pytest.fixture(scope="module")
def drive(tmp_path_factory, tiny_clip):
    """One drive (two cameras, 4 frames each), raw and processed with the tiny CLIP and TASKS."""
    root = tmp_path_factory.mktemp("search")
    frames = write_bag(root / "raw", "mcap", 3, n=4)
    spec = EngineSpec.create(str(tiny_clip), tasks=TASKS)
    engine = spec.build()
    B.process_bag(root / "raw", root / "processed", engine, progress=False)
    return root, frames, spec, engine


@pytest.fixture(scope="module")
def db(drive) -> str:
    """The same drive in a fleet index."""
    pytest.importorskip("lancedb")
    from av_scene_vlm.core.fleet import index_bags

    root, _, spec, engine = drive
    index_bags([root / "raw"], root / "db", spec, engine=engine, progress=False)
    return str(root / "db")


def _run(capsys, *argv: str) -> tuple[int, list[str], str]:
    code = main(["search", *argv])
    out = capsys.readouterr()
    return code, out.out.splitlines(), out.err


def _json(capsys, *argv: str) -> list[dict]:
    code, lines, err = _run(capsys, *argv, "--json")
    assert code == 0, err
    return [json.loads(line) for line in lines]


def test_a_bag_and_an_index_take_the_same_options_alike(drive, db, capsys) -> None:
    root, frames, _, engine = drive
    everything = _json(capsys, "--db", db, QUERY, "--top-k", "100")
    label = everything[0]["labels"]["road_user"]["label"]
    where = f"road_user = '{label}' AND stamp > {frames[0].stamp}"
    png = root / "frame.png"
    cv2.imwrite(str(png), cv2.cvtColor(frames[5].rgb, cv2.COLOR_RGB2BGR))  # lossless
    for query in ([QUERY], ["--image", str(png)]):
        options = [*query, "--top-k", "3", "--where", where]
        from_bag = _json(capsys, str(root / "processed"), *options)
        from_db = _json(capsys, "--db", db, *options)
        assert from_bag and all(set(o) == KEYS for o in from_bag + from_db)
        frame = ("topic", "stamp", "frame_id", "bag_time", "labels")
        assert [[o[k] for k in frame] for o in from_bag] == [[o[k] for k in frame] for o in from_db]
        np.testing.assert_allclose([o["score"] for o in from_bag], [o["score"] for o in from_db], atol=1e-5)
        assert all(o["labels"]["road_user"]["label"] == label for o in from_bag)
        assert all(o["bag"] == str((root / "processed").resolve()) for o in from_bag)
    target = frames[5]  # --image: that frame first, as good as a match gets
    first = _json(capsys, str(root / "raw"), "--image", str(png), "--top-k", "2", "--model", engine.model_id)[
        0
    ]
    assert [first[k] for k in ("topic", "stamp", "frame_id")] == [target.topic, target.stamp, target.frame_id]
    assert first["score"] == pytest.approx(1.0, abs=1e-4) and first["labels"] == {}  # a raw bag: no labels


def test_where_on_a_bag(drive, capsys) -> None:
    root, _, _, engine = drive
    raw = [str(root / "raw"), QUERY, "--model", engine.model_id]
    rear = _json(capsys, *raw, "--where", f"topic = '{REAR}'", "--top-k", "100")
    assert len(rear) == 4 and {o["topic"] for o in rear} == {REAR}
    code, _, err = _run(capsys, *raw, "--where", "road_user = 'car'")
    assert code == 2 and "no such column: road_user" in err and "columns: bag, topic, stamp" in err, err
    code, _, err = _run(capsys, str(root / "processed"), QUERY, "--where", "road_user = ")
    assert code == 2 and "cannot search" in err and err.count("\n") == 1, err


def test_bag_table_and_contact_sheet(drive, tiny_clip, tmp_path, capsys) -> None:
    root, _, _, engine = drive
    png = tmp_path / "matches.png"
    code, out, err = _run(
        capsys, str(root / "raw"), QUERY, "--model", str(tiny_clip), "--top-k", "3", "--out", str(png)
    )
    assert code == 0, err
    assert out[0].split() == ["rank", "topic", "stamp", "frame_id", "score"]
    best = B.search_bag(root / "raw", QUERY, engine, top_k=1)[0]
    assert out[1].split()[:4] == ["1", best.topic, best.stamp_str, best.frame_id]
    assert len(out) == 5 and out[4].startswith("saved ") and png.stat().st_size > 0
    code, _, err = _run(capsys, str(tmp_path / "nope"), QUERY, "--model", str(tiny_clip))
    assert code == 1 and "does not exist" in err


def test_a_processed_bag_is_searched_with_its_recorded_model(drive, capsys) -> None:
    """A bag processed with a local model is searched with that model, offline, without --model."""
    root, _, _, engine = drive
    assert B.recorded_model(root / "processed") == engine.model_id
    assert B.recorded_model(root / "raw") is None
    code, out, err = _run(capsys, str(root / "processed"), QUERY, "--top-k", "2")
    assert code == 0 and len(out) == 3, err
    want = B.search_bag(root / "processed", QUERY, engine, top_k=1)[0]
    assert out[1].split()[1:3] == [want.topic, want.stamp_str]


def test_index_table_contact_sheet_and_errors(drive, db, tiny_clip, tiny_clip_2, tmp_path, capsys) -> None:
    root, _, _, _ = drive
    png = tmp_path / "sheet.png"
    where = ["--where", "frame_id = 'rear_cam'", "--topics", REAR, FRONT]
    code, out, err = _run(capsys, "--db", db, QUERY, "--top-k", "3", "--out", str(png), *where)
    assert code == 0, err
    assert out[0].split() == ["rank", "score", "bag", "topic", "stamp", "frame_id"]
    assert len(out) == 5 and all(line.split()[3] == REAR for line in out[1:4])
    assert out[4].startswith(f"saved {png}") and png.stat().st_size > 0
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 100
    only_front = _json(capsys, "--db", db, QUERY, "--topics", FRONT, "--top-k", "100")
    assert len(only_front) == 4 and {o["topic"] for o in only_front} == {FRONT}  # --topics applies
    assert _run(capsys, "--db", db, QUERY, "--model", str(tiny_clip))[0] == 0  # the index's own model
    for argv, message, expected in [  # README, "Exit codes": 1 an input that is not there, 2 usage
        (["--db", db, QUERY, "--model", str(tiny_clip_2)], "would compare embeddings of two models", 2),
        (["--db", str(tmp_path / "none"), QUERY], "is not a fleet index", 1),
        (["--db", db], "give either a QUERY or --image", 2),
        (["--db", db, QUERY, "--where", "road_user = "], "cannot search", 2),
        (["--db", db, QUERY, "--no-embeddings"], "--no-embeddings is for one bag", 2),
        ([str(root / "raw"), QUERY, "--image", str(Path(db) / "x.png")], "give either a QUERY or --image", 2),
    ]:
        code, _, err = _run(capsys, *argv)
        assert code == expected and err.count("\n") == 1 and message in err, (argv, err)
