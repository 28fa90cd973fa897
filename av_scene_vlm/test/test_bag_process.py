"""Offline bag processing (core.bag: process, reading, writing, summary; `av-scene-vlm bag`) on bags
the tests write.

Bags are written with rosbags in both storage formats (sqlite3, mcap): two cameras (raw Image in
several encodings with row padding, CompressedImage jpeg) plus a std_msgs/String topic that must be
copied through. Everything runs on the tiny random CLIP, without ROS.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from av_scene_vlm.cli.main import main
from av_scene_vlm.core import bag as B
from av_scene_vlm.core.engine import ZeroShotEngine
from clip_reference import clip_reference, photo_prompts
from fleet_bags import CHATTER, FRONT, REAR, STRING, FakeCaptioner, header, jpeg_image, raw_image, write_drive
from rosbags.rosbag2 import Reader, Writer

T0 = 1_700_000_000
SUFFIX = {"sqlite3": ".db3", "mcap": ".mcap"}


# ---- helpers ------------------------------------------------------------------------------------------
def read_all(path: Path) -> dict[str, list[tuple[int, bytes, str]]]:
    out: dict[str, list] = {}
    with Reader(path) as r:
        for conn, ts, raw in r.messages():
            out.setdefault(conn.topic, []).append((ts, bytes(raw), conn.msgtype))
    return out


def leftovers(directory: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


# ---- processing ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_process_bag(tmp_path, store, engine, tiny_clip, rng, storage) -> None:
    frames = write_drive(tmp_path / "in", store, storage, rng)
    summary_path = tmp_path / "summary.csv"
    s = B.process_bag(tmp_path / "in", tmp_path / "out", engine, batch_size=3, summary_path=summary_path)
    assert (s.frames, s.bad_frames, s.storage) == (8, 0, storage)
    assert s.topics == {FRONT: 4, REAR: 4}
    assert s.namespaces == {FRONT: "/front/scene", REAR: "/rear/scene"}
    assert s.messages == 12 and s.fps > 0 and s.output == tmp_path / "out"
    assert list((tmp_path / "out").glob("*" + SUFFIX[storage])), "same storage format as the input"
    assert leftovers(tmp_path, set()) == ["in", "out", "summary.csv"]

    src, out = read_all(tmp_path / "in"), read_all(tmp_path / "out")
    for topic in (FRONT, REAR, CHATTER):  # originals: same count, same bytes, same times
        assert out[topic] == src[topic]
    # Expected values from transformers' CLIPModel (an independent reference), not from the engine.
    spec = {
        "road_user": photo_prompts("car", "truck", "bus"),
        "weather": photo_prompts("clear", "rain", "fog"),
    }
    expected = [clip_reference(tiny_clip).classify(f["rgb"], spec) for f in frames]
    for ns, topic in (("/front/scene", FRONT), ("/rear/scene", REAR)):
        mine = [(f, r) for f, r in zip(frames, expected, strict=True) if f["topic"] == topic]
        cls = out[f"{ns}/classification"]
        sim = out[f"{ns}/similarity"]
        assert len(cls) == len(sim) == len(mine) == 4
        for (f, res), (ts, raw, msgtype), (ts2, raw2, _) in zip(mine, cls, sim, strict=True):
            assert ts == ts2 == f["ts"]  # record time of the source image
            msg = store.deserialize_cdr(raw, msgtype)
            assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == f["stamp"]
            assert msg.header.frame_id == f["frame_id"]
            assert [c.task for c in msg.results] == ["road_user", "weather"]
            for c, t in zip(msg.results, res.tasks.values(), strict=True):
                assert c.header.frame_id == f["frame_id"] and list(c.labels) == t.labels
                np.testing.assert_allclose(c.probabilities, t.probabilities, atol=1e-4)
                assert c.top_label == t.label
                assert c.model_id == engine.model_id and c.inference_latency > 0
            sm = store.deserialize_cdr(raw2, B.SIMILARITY)
            assert sm.header.frame_id == f["frame_id"]
            assert list(sm.texts) == ["car", "truck", "bus", "clear", "rain", "fog"]
            assert list(sm.tasks) == ["road_user"] * 3 + ["weather"] * 3
            np.testing.assert_allclose(sm.image_embedding, res.image_embedding, atol=1e-5)
            assert np.linalg.norm(sm.image_embedding) == pytest.approx(1.0, abs=1e-5)
            cosine = np.concatenate([t.cosine for t in res.tasks.values()])
            np.testing.assert_allclose(sm.cosine, cosine, atol=1e-5)
        (labels,) = out[f"{ns}/labels"]
        info = store.deserialize_cdr(labels[1], B.LABEL_INFO)
        assert [t.task for t in info.tasks] == ["road_user", "weather"]
        assert labels[0] == mine[0][0]["ts"]
    assert f"{'/front/scene'}/caption" not in out

    with summary_path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == s.frames
    assert rows[0]["topic"] == FRONT and int(rows[0]["sec"]) == T0 and rows[0]["frame_id"] == "front_cam"
    assert rows[0]["road_user.label"] == expected[0].tasks["road_user"].label
    assert float(rows[1]["weather.probability"]) == pytest.approx(
        expected[1].tasks["weather"].probabilities.max(), abs=1e-4
    )


def test_bad_frames_json_summary_and_storage_override(tmp_path, store, engine, rng) -> None:
    frames = write_drive(tmp_path / "in", store, "sqlite3", rng, bad=True)
    s = B.process_bag(
        tmp_path / "in",
        tmp_path / "out",
        engine,
        batch_size=8,
        storage="mcap",
        progress=False,
        summary_path=tmp_path / "s.json",
    )
    assert (s.frames, s.bad_frames, s.bad_by_topic) == (6, 2, {FRONT: 1, REAR: 1})
    assert list((tmp_path / "out").glob("*.mcap")) and s.storage == "mcap"
    out = read_all(tmp_path / "out")
    assert len(out[FRONT]) == len(out[REAR]) == 4  # bad frames are still copied
    stamps = [
        store.deserialize_cdr(raw, t).header.stamp.nanosec for _, raw, t in out["/front/scene/classification"]
    ]
    good = [f["stamp"][1] for f in frames if f["topic"] == FRONT and f["rgb"] is not None]
    assert stamps == good
    data = json.loads((tmp_path / "s.json").read_text())
    assert len(data["frames"]) == 6 and data["model_id"] == engine.model_id
    assert set(data["frames"][0]["tasks"]) == {"road_user", "weather"}


def test_captions_every_period_of_bag_time(tmp_path, store, engine, rng) -> None:
    write_drive(tmp_path / "in", store, "mcap", rng, n=5)
    cap = FakeCaptioner()
    s = B.process_bag(
        tmp_path / "in", tmp_path / "out", engine, captioner=cap, caption_every=1.5, progress=False
    )
    assert s.captions == 6  # frames 1 s apart, every 1.5 s: t = 0, 2, 4 per camera
    out = read_all(tmp_path / "out")
    front = [store.deserialize_cdr(raw, t) for _, raw, t in out["/front/scene/caption"]]
    assert [m.header.stamp.sec - T0 for m in front] == [0, 2, 4]
    assert [m.header.frame_id for m in front] == ["front_cam"] * 3
    assert (
        front[0].text.startswith("scene ") and front[0].model_id == "fake" and front[0].prompt == "describe"
    )
    assert [ts for ts, _, _ in out["/rear/scene/caption"]] == [(T0 + i) * 10**9 + 500 for i in (0, 2, 4)]
    assert sorted(set(cap.shapes)) == [(40, 64, 3), (48, 32, 3)]


def test_topics_and_raw_over_compressed(tmp_path, store, engine, rng) -> None:
    with Writer(tmp_path / "in", version=9) as w:
        raw = w.add_connection("/cam/image_raw", B.IMAGE, typestore=store)
        comp = w.add_connection("/cam/image_raw/compressed", B.COMPRESSED_IMAGE, typestore=store)
        for i in range(2):
            rgb = rng.integers(0, 256, (32, 32, 3), np.uint8)
            hdr = header(store, T0 + i, 0, "cam")
            w.write(
                raw, (T0 + i) * 10**9, store.serialize_cdr(raw_image(store, rgb, "rgb8", hdr)[0], B.IMAGE)
            )
            msg = jpeg_image(store, rgb, hdr)[0]
            w.write(comp, (T0 + i) * 10**9 + 1, store.serialize_cdr(msg, B.COMPRESSED_IMAGE))
    s = B.process_bag(tmp_path / "in", tmp_path / "a", engine, progress=False)
    assert s.topics == {"/cam/image_raw": 2} and s.skipped_topics == ["/cam/image_raw/compressed"]
    s = B.process_bag(
        tmp_path / "in", tmp_path / "b", engine, progress=False, topics=["/cam/image_raw/compressed"]
    )
    assert s.topics == {"/cam/image_raw/compressed": 2}
    with pytest.raises(B.BagError, match="would all write to '/cam/scene'"):
        B.process_bag(
            tmp_path / "in", tmp_path / "c", engine, topics=["/cam/image_raw", "/cam/image_raw/compressed"]
        )
    with pytest.raises(B.BagError, match="'/nope' is not in bag"):
        B.process_bag(tmp_path / "in", tmp_path / "c", engine, topics=["/nope"])
    with pytest.raises(B.BagError, match="already has '/cam/scene/classification'"):
        B.process_bag(tmp_path / "a", tmp_path / "c", engine, progress=False)
    assert leftovers(tmp_path, set()) == ["a", "b", "in"]


# ---- errors: BagError, exit 1 (input) or 2 (usage), nothing left behind ------------------------------------
def test_missing_input_and_existing_output(tmp_path, store, engine, rng, capsys) -> None:
    with pytest.raises(B.BagError, match="does not exist"):
        B.process_bag(tmp_path / "nope", tmp_path / "out", engine)
    write_drive(tmp_path / "in", store, "sqlite3", rng, n=1)
    (tmp_path / "out").mkdir()
    with pytest.raises(B.BagError, match="exists already"):
        B.process_bag(tmp_path / "in", tmp_path / "out", engine)
    assert leftovers(tmp_path, set()) == ["in", "out"] and not any((tmp_path / "out").iterdir())
    code = main(["bag", str(tmp_path / "nope"), str(tmp_path / "x"), "--labels", "a", "b"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "does not exist" in err  # an input that is not there


def _metadata(storage: str, rel: str) -> str:
    return (
        "rosbag2_bagfile_information:\n"
        "  version: 5\n"
        f"  storage_identifier: {storage}\n"
        f"  relative_file_paths: [{rel}]\n"
        "  duration: {nanoseconds: 10}\n"
        "  starting_time: {nanoseconds_since_epoch: 0}\n"
        "  message_count: 3\n"
        "  topics_with_message_count:\n"
        "    - topic_metadata: {name: /cam/image_raw, type: sensor_msgs/msg/Image,"
        " serialization_format: cdr, offered_qos_profiles: ''}\n"
        "      message_count: 3\n"
        "  compression_format: ''\n"
        "  compression_mode: ''\n"
    )


@pytest.mark.parametrize("kind", ["db3", "mcap", "bare_mcap", "bad_yaml", "unknown_storage", "no_metadata"])
def test_corrupt_input(tmp_path, engine, rng, kind, capsys) -> None:
    bag = tmp_path / "in"
    bag.mkdir()
    junk = rng.integers(0, 256, 4096, np.uint8).tobytes()
    if kind in ("db3", "mcap"):
        (bag / f"in_0.{kind}").write_bytes(junk)
        storage = "sqlite3" if kind == "db3" else "mcap"
        (bag / "metadata.yaml").write_text(_metadata(storage, f"in_0.{kind}"))
    elif kind == "bare_mcap":
        bag = tmp_path / "in.mcap"
        bag.write_bytes(junk)
    elif kind == "bad_yaml":
        (bag / "in_0.db3").write_bytes(junk)
        (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: [unclosed\n  : :")
    elif kind == "unknown_storage":
        (bag / "in_0.bag").write_bytes(junk)
        (bag / "metadata.yaml").write_text(_metadata("rosbag_v2", "in_0.bag"))
    else:
        (bag / "in_0.db3").write_bytes(junk)
    before = leftovers(tmp_path, set())
    with pytest.raises(B.BagError, match=r"cannot read bag|not a rosbag2 bag") as exc:
        B.process_bag(bag, tmp_path / "out", engine)
    assert str(bag) in str(exc.value)
    if kind == "unknown_storage":
        assert "unknown storage 'rosbag_v2' (supported: sqlite3, mcap)" in str(exc.value)
    code = main(
        ["bag", str(bag), str(tmp_path / "out"), "--labels", "a", "b", "--model", str(engine.model_id)]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("av-scene-vlm bag: error: ") and err.count("\n") == 1  # unreadable
    assert leftovers(tmp_path, set()) == before  # no output, no hidden temp dir


def test_no_image_topics(tmp_path, store, engine) -> None:
    with Writer(tmp_path / "in", version=9) as w:
        c = w.add_connection(CHATTER, STRING, typestore=store)
        w.write(c, 1, store.serialize_cdr(store.types[STRING](data="x"), STRING))
    with pytest.raises(B.BagError, match=r"no image topics .*/chatter \[std_msgs/msg/String\]"):
        B.process_bag(tmp_path / "in", tmp_path / "out", engine)
    assert leftovers(tmp_path, set()) == ["in"]
    with pytest.raises(B.BagError, match="no image or similarity topics"):
        B.search_bag(tmp_path / "in", "a car", engine)


def test_failure_midway_leaves_nothing(tmp_path, store, engine, rng, monkeypatch) -> None:
    write_drive(tmp_path / "in", store, "mcap", rng)
    calls = []

    def boom(frames, **kw):
        calls.append(len(frames))
        if len(calls) > 1:
            raise RuntimeError("device lost")
        return ZeroShotEngine.submit(engine, frames, **kw)

    monkeypatch.setattr(engine, "submit", boom)
    with pytest.raises(RuntimeError, match="device lost"):
        B.process_bag(
            tmp_path / "in", tmp_path / "sub" / "out", engine, batch_size=2, summary_path=tmp_path / "s.csv"
        )
    assert leftovers(tmp_path, set()) == ["in"]  # not even the parent directory it created


def test_find_msg_dir(tmp_path, monkeypatch) -> None:
    d = B.find_msg_dir()
    assert (d / "Similarity.msg").is_file()
    with pytest.raises(B.BagError, match="does not contain"):
        B.find_msg_dir(tmp_path)
    monkeypatch.setenv(B.MSGS_DIR_ENV, str(d))
    assert B.find_msg_dir() == d


# ---- CLI ------------------------------------------------------------------------------------------------
def test_cli_bag(tmp_path, store, tiny_clip, rng, capsys) -> None:
    write_drive(tmp_path / "in", store, "sqlite3", rng, n=2)
    args = ["bag", str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(tiny_clip), "--no-progress"]
    code = main([*args, "--labels", "car", "truck", "--batch-size", "3"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "frames: 4 (/front/image_raw 2, /rear/image_raw/compressed 2)" in out
    assert "frames/s" in out and str(tmp_path / "out") in out
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))  # default summary beside the bag
    assert len(rows) == 4 and "default.label" in rows[0]
    # tasks + templates from the node's params file
    cfg = tmp_path / "params.yaml"
    cfg.write_text(
        "/**:\n  ros__parameters:\n    template: ['a dashcam photo of a {}.']\n"
        "    tasks: |\n      weather: [clear, rain]\n      light: {day: ['daylight'], night: []}\n"
    )
    from av_scene_vlm.cli.bag import config_templates

    assert config_templates(cfg) == ["a dashcam photo of a {}."]
    o2 = [str(tmp_path / "in"), str(tmp_path / "o2"), "--summary", str(tmp_path / "o2.json")]
    code = main(["bag", *o2, "--model", str(tiny_clip), "--config", str(cfg), "--no-progress"])
    assert code == 0
    data = json.loads((tmp_path / "o2.json").read_text())
    assert set(data["frames"][0]["tasks"]) == {"weather", "light"}
    labels = read_all(tmp_path / "o2")["/front/scene/labels"]
    info = store.deserialize_cdr(labels[0][1], B.LABEL_INFO)
    assert list(info.tasks[1].prompts) == ["daylight", "a dashcam photo of a night."]
    capsys.readouterr()
    assert main([*args, "--labels", "car", "truck"]) == 2  # out exists now
    assert "exists already" in capsys.readouterr().err


def test_events_open_at_the_end_and_csv_column(tmp_path, store, engine, rng) -> None:
    """An event whose condition always holds (every weather label summed = 1): one START per camera on
    its first frame, no END, `end` None in the intervals, its name in every frame's CSV `events` cell."""
    from av_scene_vlm.core.events import parse_events_yaml

    write_drive(tmp_path / "in", store, "sqlite3", rng, n=3)
    events = parse_events_yaml("any_weather: {when: {weather: [clear, rain, fog]}, on: 0.99, off: 0.5}")
    s = B.process_bag(
        tmp_path / "in", tmp_path / "out", engine, summary_path=tmp_path / "s.csv", events=events
    )
    assert [(e["topic"], e["start"], e["end"]) for e in s.events] == [
        (FRONT, {"sec": T0, "nanosec": 1000}, None),
        (REAR, {"sec": T0, "nanosec": 2000}, None),
    ]
    rows = list(csv.DictReader((tmp_path / "s.csv").open()))
    assert len(rows) == 6 and {r["events"] for r in rows} == {"any_weather"}
    out = read_all(tmp_path / "out")
    for ns, topic in (("/front/scene", FRONT), ("/rear/scene", REAR)):
        (start,) = [store.deserialize_cdr(raw, t) for _, raw, t in out[f"{ns}/events"]]
        assert (start.name, start.transition, start.camera, start.header.stamp.sec) == (
            "any_weather",
            0,
            topic,
            T0,
        )
        (active,) = [store.deserialize_cdr(raw, t) for _, raw, t in out[f"{ns}/active_events"]]
        assert [e.name for e in active.events] == ["any_weather"]
    bad = parse_events_yaml("x: {when: {weather: hail}}")
    with pytest.raises(B.BagError, match=r"has no label\(s\) \['hail'\]"):
        B.process_bag(tmp_path / "in", tmp_path / "out2", engine, events=bad)
    assert not (tmp_path / "out2").exists()
