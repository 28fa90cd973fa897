"""Hostile frames read from a bag (issue 18, point 5): `bag` and `index` count them as bad frames
without any large allocation (this process's peak RSS, reset before, within 200 MB), classify every
valid frame around them, and take --max-frame-pixels."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from av_scene_vlm.cli.main import main
from av_scene_vlm.core import bag as B
from av_scene_vlm.core.fleet import EngineSpec, FleetIndex, index_bags
from av_scene_vlm.core.tasks import parse_tasks
from fleet_bags import write_bag
from hostile_frames import Hostile, hostile_compressed, hostile_raw, proc_status_kib, refused, reset_peak_rss
from rosbags.rosbag2 import StoragePlugin, Writer

FRONT, REAR = "/front/image_raw", "/rear/image_raw/compressed"
T0 = 1_700_000_000
VALID = 3  # valid frames per camera
TASKS = parse_tasks({"road_user": ["car", "pedestrian"], "time_of_day": ["day", "night"]})


def write_hostile_bag(path: Path, storage: str = "sqlite3") -> tuple[int, int]:
    """VALID frames per camera with every hostile frame of the camera's type in between; returns
    (frames the codec accepts, frames it refuses)."""
    store = B.bag_typestore()
    t = store.types
    rng = np.random.default_rng(5)
    hostile = {FRONT: hostile_raw(), REAR: hostile_compressed()}
    ns = T0 * 10**9

    def header(frame_id: str):
        stamp = t["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9)
        return t["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)

    def image(h: Hostile | None, frame_id: str):
        if h is None:  # valid: 40 x 64 raw rgb8, or a PNG of it
            rgb = rng.integers(0, 256, (40, 64, 3), np.uint8)
            if frame_id.startswith("rear"):
                png = cv2.imencode(".png", rgb)[1].reshape(-1)
                return t[B.COMPRESSED_IMAGE](header=header(frame_id), format="png", data=png)
            return t[B.IMAGE](
                header=header(frame_id), height=40, width=64, encoding="rgb8", is_bigendian=0, step=192,
                data=rgb.reshape(-1),
            )  # fmt: skip
        data = np.frombuffer(h.data, np.uint8)
        if h.compressed:
            return t[B.COMPRESSED_IMAGE](header=header(frame_id), format=h.format, data=data)
        return t[B.IMAGE](
            header=header(frame_id), height=h.height, width=h.width, encoding=h.encoding, is_bigendian=0,
            step=h.step, data=data,
        )  # fmt: skip

    with Writer(path, version=9, storage_plugin=StoragePlugin[storage.upper()]) as w:
        conns = {FRONT: w.add_connection(FRONT, B.IMAGE, typestore=store)}
        conns[REAR] = w.add_connection(REAR, B.COMPRESSED_IMAGE, typestore=store)
        for i in range(VALID):
            for topic, conn in conns.items():
                cam = "front" if topic == FRONT else "rear"
                frames = [None, *hostile[topic]] if i < VALID - 1 else [None]
                for k, h in enumerate(frames):
                    ns += 10_000_000
                    msg = image(h, f"{cam}_{i}" if h is None else f"hostile_{k}_{i}")
                    w.write(conn, ns, store.serialize_cdr(msg, conn.msgtype))
    bad = (VALID - 1) * sum(refused(h) for v in hostile.values() for h in v)
    return 2 * VALID + (VALID - 1) * sum(len(v) for v in hostile.values()) - bad, bad


@pytest.fixture(scope="module")
def hostile_bag(tmp_path_factory) -> tuple[Path, int, int]:
    path = tmp_path_factory.mktemp("hostile") / "drive"
    return (path, *write_hostile_bag(path))


def test_bag_and_index_reject_hostile_frames_in_bounded_memory(tmp_path, tiny_clip, hostile_bag) -> None:
    bag, valid, bad = hostile_bag
    spec = EngineSpec.create(str(tiny_clip), tasks=TASKS, backend="torch")
    engine = spec.build()
    # Steady state: both tools once on a valid bag (loading LanceDB alone adds ~190 MB of RSS).
    write_bag(tmp_path / "valid", "mcap", 1, n=2)
    B.process_bag(tmp_path / "valid", tmp_path / "warm", engine, progress=False)
    index_bags([tmp_path / "valid"], tmp_path / "warm_db", spec, engine=engine, progress=False)
    exact = reset_peak_rss()
    before = proc_status_kib("self", "VmHWM")
    s = B.process_bag(bag, tmp_path / "out", engine, progress=False, summary_path=tmp_path / "out.csv")
    ix = index_bags([bag], tmp_path / "db", spec, engine=engine, progress=False)
    growth_mb = (proc_status_kib("self", "VmHWM") - before) / 1024
    print(f"\nbag + index of {valid} valid and {bad} hostile frames: peak RSS +{growth_mb:.1f} MB ({exact=})")
    assert growth_mb <= 200
    assert (s.frames, s.bad_frames) == (valid, bad)
    kinds = {FRONT: sum(map(refused, hostile_raw())), REAR: sum(map(refused, hostile_compressed()))}
    assert s.bad_by_topic == {t: (VALID - 1) * n for t, n in kinds.items() if n}
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    valid_ids = sorted(f"{c}_{i}" for c in ("front", "rear") for i in range(VALID))
    assert sorted(r["frame_id"] for r in rows if not r["frame_id"].startswith("hostile")) == valid_ids
    assert len(rows) == valid  # and any hostile frame the codec accepts (none today) classified
    assert (ix.frames, ix.bad_frames, ix.rows) == (valid, bad, valid) and not ix.failed
    ids = FleetIndex.open(str(tmp_path / "db")).frames.to_arrow().column("frame_id").to_pylist()
    assert sorted(ids) == sorted(r["frame_id"] for r in rows)


def test_max_frame_pixels_option(tmp_path, tiny_clip, hostile_bag, capsys) -> None:
    """40 x 64 = 2,560 pixels: --max-frame-pixels 2560 keeps the valid frames, 2559 refuses them too."""
    bag, valid, bad = hostile_bag
    common = ["--labels", "car", "truck", "--model", str(tiny_clip), "--backend", "torch", "--no-progress"]
    total = valid + bad  # every hostile frame claims more than 2,560 pixels
    for limit, frames, bad_frames in ((2560, 2 * VALID, total - 2 * VALID), (2559, 0, total)):
        out = tmp_path / f"out{limit}"
        assert main(["bag", str(bag), str(out), *common, "--max-frame-pixels", str(limit)]) == 0
        assert f"frames: {frames} " in capsys.readouterr().out.replace(
            f"frames: {frames} (", f"frames: {frames} "
        )
        s = B.process_bag(
            bag, tmp_path / f"api{limit}", _engine(tiny_clip), progress=False, max_frame_pixels=limit
        )
        assert (s.frames, s.bad_frames) == (frames, bad_frames)
        db = tmp_path / f"db{limit}"
        code = main(["index", str(bag), "--db", str(db), *common, "--max-frame-pixels", str(limit)])
        assert code == 0 and f"({frames} frames, {bad_frames} bad)" in capsys.readouterr().out
    for tool in (["bag", str(bag), str(tmp_path / "x")], ["index", str(bag), "--db", str(tmp_path / "y")]):
        assert main([*tool, *common, "--max-frame-pixels", "0"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--max-frame-pixels must be >= 1, got 0" in err


def _engine(tiny_clip):
    from av_scene_vlm.core.engine import ZeroShotEngine

    return ZeroShotEngine(str(tiny_clip), tasks=parse_tasks({"default": ["car", "truck"]}), backend="torch")
