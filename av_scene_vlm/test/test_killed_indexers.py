"""Killed indexers lose nothing (issue 18, point 6).

`av-scene-vlm index` and `av-scene-vlm bag` run in child processes (forked from a forkserver that
has imported torch, transformers and LanceDB's dependencies once: see kill_harness) and are killed
with SIGKILL at points chosen with a fixed seed among the events of a clean run — while decoding a
frame, classifying a batch, writing (for the index: creating the tables, deleting a half-indexed
bag's rows, committing rows, marking a bag complete, compacting) — a few milliseconds after the
event, so the kill lands inside the work. Run again, each gives what one clean run gives.

A disk that fills up is simulated with RLIMIT_FSIZE in the child (writes past the limit fail with
EFBIG; SIGXFSZ ignored): deterministic, and possible for any user, unlike mounting a small tmpfs.
A read-only output directory is a read-only bind mount in the child's own mount namespace (root
ignores permission bits), or a directory without write permission where the tests do not run as
root.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from av_scene_vlm.core.fleet import FleetIndex, content_hash, search_index
from fleet_bags import write_bag

pytest.importorskip("lancedb")
import kill_harness as K

KEY = ("bag_hash", "topic", "stamp")


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("drives")
    write_bag(root / "a", "sqlite3", 1, n=2)
    write_bag(root / "b", "mcap", 2, n=2)
    return root


def common(model: Path) -> list[str]:
    return ["--labels", "car", "truck", "--model", str(model), "--backend", "torch", "--no-progress"]


def index_rows(db: Path) -> dict[tuple, dict]:
    """Every row of the index by (bag_hash, topic, stamp), opening every table LanceDB lists."""
    import lancedb

    conn = lancedb.connect(str(db))
    for name in conn.list_tables().tables:
        conn.open_table(name).to_arrow()  # every table opens and reads
    table = FleetIndex.open(str(db)).frames.to_arrow().to_pylist()
    rows = {tuple(r[k] for k in KEY): r for r in table}
    assert len(rows) == len(table), "duplicate rows"
    return rows


def same_rows(got: dict[tuple, dict], want: dict[tuple, dict]) -> None:
    assert sorted(got) == sorted(want)
    for key, row in want.items():
        for col, value in row.items():
            if col == "vector":
                np.testing.assert_allclose(got[key][col], value, atol=1e-6)
            else:
                assert got[key][col] == value, (key, col)


def visible_rows(db: Path) -> set[tuple] | None:
    """What a search sees of the index (None: no index yet): rows of complete bags only."""
    from av_scene_vlm.core.fleet import FleetError

    try:
        index = FleetIndex.open(str(db))
    except FleetError:
        return None
    query = np.ones(index.info.dim, np.float32) / np.sqrt(index.info.dim)
    return {(h.bag_hash, h.topic, h.stamp) for h in search_index(index, query, top_k=1000, thumbnails=False)}


def input_hashes(root: Path) -> dict[str, str]:
    return {p.name: content_hash(p) for p in sorted(root.iterdir())}


def test_index_killed_at_random_points_loses_nothing(tmp_path, bags, tiny_clip) -> None:
    before = input_hashes(bags)
    argv = ["index", str(bags), *common(tiny_clip), "--batch-size", "2", "--db"]
    clean = K.run([*argv, str(tmp_path / "clean")])
    assert clean.exitcode == 0, clean.output
    want = index_rows(tmp_path / "clean")
    assert len(want) == 8
    by_bag = {h: {k for k in want if k[0] == h} for h in {k[0] for k in want}}
    rng = np.random.default_rng(18)
    points = [("write", 1)]  # the first write creates the tables
    points += [(s, int(rng.integers(1, clean.count(s) + 1))) for s in ["decode"] * 4 + ["embed"] * 3]
    points += [("write", int(rng.integers(2, clean.count("write")))) for _ in range(2)]  # not the last
    report = []
    for trial, point in enumerate(points):
        db = tmp_path / f"db{trial}"
        killed = K.run([*argv, str(db)], kill_at=point, delay=float(rng.uniform(0, 0.01)))
        assert killed.killed_at and killed.exitcode in (-9, 0), (point, killed.exitcode, killed.output)
        seen = visible_rows(db)  # a search never sees rows of a bag the run did not finish
        assert seen is None or (seen <= set(want) and all(by_bag[k[0]] <= seen for k in seen)), point
        again = K.run([*argv, str(db)])
        assert again.exitcode == 0, (point, again.output)
        same_rows(index_rows(db), want)
        report.append(f"{killed.killed_at} ({killed.exitcode}): {len(seen or ())} rows visible")
    print("\n" + "\n".join(report))
    assert input_hashes(bags) == before


def bag_state(directory: Path) -> tuple[list[str], str, dict[str, int]]:
    """(entries of the directory, the summary CSV's text, message count per topic of the output)."""
    from rosbags.rosbag2 import Reader

    counts: dict[str, int] = {}
    with Reader(directory / "out") as reader:
        for conn in reader.connections:
            counts[conn.topic] = counts.get(conn.topic, 0) + conn.msgcount
    rows = (directory / "out.csv").read_text()
    return sorted(os.listdir(directory)), rows, counts


def test_bag_killed_at_random_points_appears_whole_or_not_at_all(tmp_path, bags, tiny_clip) -> None:
    before = input_hashes(bags)
    (tmp_path / "clean").mkdir()
    argv = ["bag", str(bags / "a"), *common(tiny_clip), "--batch-size", "1"]
    clean = K.run([*argv, str(tmp_path / "clean" / "out")])
    assert clean.exitcode == 0, clean.output
    want = bag_state(tmp_path / "clean")
    assert want[0] == ["out", "out.csv"] and len(list(csv.reader(want[1].splitlines()))) == 5
    rng = np.random.default_rng(6)
    points = [(s, int(rng.integers(1, clean.count(s) + 1))) for s in ("decode", "embed", "write") * 2]
    for trial, point in enumerate(points):
        d = tmp_path / f"t{trial}"
        d.mkdir()
        killed = K.run([*argv, str(d / "out")], kill_at=point, delay=float(rng.uniform(0, 0.01)))
        assert killed.killed_at, (point, killed.output)
        visible = [p for p in os.listdir(d) if not p.startswith(".")]
        if killed.exitcode == 0:  # it finished within the delay: whole
            assert bag_state(d) == want
            continue
        assert visible == [], (point, visible)  # nothing, not even the summary
        again = K.run([*argv, str(d / "out")])
        assert again.exitcode == 0, (point, again.output)
        assert bag_state(d) == want  # whole, and the killed run's staging directory is gone
    assert input_hashes(bags) == before


def error_lines(output: str, tool: str) -> list[str]:
    assert "Traceback" not in output, output
    return [line for line in output.splitlines() if line.startswith(f"av-scene-vlm {tool}: error: ")]


def test_disk_full_is_one_line_exit_1_and_nothing_half_written(tmp_path, tiny_clip) -> None:
    """A small bag whose index data fits under the limit, then one whose data does not: the first
    stays indexed and searchable, the second leaves no rows; run again with room, it is indexed."""
    drives = tmp_path / "drives"
    write_bag(drives / "a_small", "mcap", 1, n=1)
    write_bag(drives / "b_large", "mcap", 2, n=20)
    write_bag(tmp_path / "in", "sqlite3", 3, n=10)
    before = {**input_hashes(drives), "in": content_hash(tmp_path / "in")}
    limit = 40_000  # bytes per file: a_small's index files fit, b_large's rows and the bag output do not

    out = tmp_path / "outdir"
    out.mkdir()
    bag = K.run(["bag", str(tmp_path / "in"), str(out / "out"), *common(tiny_clip)], file_size=limit)
    (line,) = error_lines(bag.output, "bag")
    assert bag.exitcode == 1 and "cannot write output bag" in line, bag.output  # sqlite: "disk I/O error"
    assert os.listdir(out) == []  # no output, no summary, no staging directory

    db = tmp_path / "db"
    argv = ["index", str(drives), "--db", str(db), *common(tiny_clip)]
    index = K.run(argv, file_size=limit)
    (line,) = error_lines(index.output, "index")
    assert index.exitcode == 1 and f"cannot write index '{db}'" in line, index.output
    small = content_hash(drives / "a_small")
    assert visible_rows(db) == {k for k in index_rows(db) if k[0] == small} and len(index_rows(db)) == 2
    assert list(FleetIndex.open(str(db)).completed()) == [small]

    again = K.run(argv)
    assert again.exitcode == 0, again.output
    assert len(index_rows(db)) == 42 and len(visible_rows(db) or ()) == 42
    assert {**input_hashes(drives), "in": content_hash(tmp_path / "in")} == before


def test_read_only_output_is_one_line_exit_1(tmp_path, bags, tiny_clip) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    first = K.run(["index", str(bags / "a"), "--db", str(ro / "db"), *common(tiny_clip)])
    assert first.exitcode == 0, first.output
    rows = index_rows(ro / "db")
    if K.can_mount_read_only():
        read_only = str(ro)
    elif os.geteuid() != 0:
        read_only = None
        ro.chmod(0o555)
    else:
        pytest.skip("running as root without mount namespaces: no way to make a directory read-only")
    try:
        bag = K.run(["bag", str(bags / "a"), str(ro / "out"), *common(tiny_clip)], read_only=read_only)
        (line,) = error_lines(bag.output, "bag")
        assert bag.exitcode == 1 and f"cannot create output next to '{ro / 'out'}'" in line, bag.output
        new = K.run(
            ["index", str(bags / "a"), "--db", str(ro / "new_db"), *common(tiny_clip)], read_only=read_only
        )
        (line,) = error_lines(new.output, "index")
        assert new.exitcode == 1 and "cannot open index" in line, new.output
        more = K.run(["index", str(bags), "--db", str(ro / "db"), *common(tiny_clip)], read_only=read_only)
        (line,) = error_lines(more.output, "index")
        assert more.exitcode == 1 and f"index '{ro / 'db'}'" in line, more.output
    finally:
        ro.chmod(0o755)
    assert sorted(os.listdir(ro)) == ["db"]
    same_rows(index_rows(ro / "db"), rows)  # the index is as it was
