"""Searching one bag (core.bag.search, core.bag.where): stored embeddings or the images encoded, a
frame planted to be the best match, ties, errors, another model, and the recorded results as columns
for `where`. (The command, `av-scene-vlm search`, is test_search.py.)"""

from __future__ import annotations

import re

import numpy as np
import pytest
from av_scene_vlm.core import bag as B
from av_scene_vlm.core.engine import ZeroShotEngine
from fleet_bags import header, raw_image
from rosbags.rosbag2 import StoragePlugin, Writer

FRONT = "/front/image_raw"
T0 = 1_700_000_000


QUERY = "a pedestrian crossing at night"


@pytest.fixture
def planted(tmp_path, store, engine, rng):
    """A bag of lossless frames (rgb8/bgr8) where one frame, in the middle of the front camera, is
    by construction the closest to QUERY: it is the best of all candidate images."""
    cands = rng.integers(0, 256, (10, 56, 56, 3), np.uint8)
    cands[::2] //= 2  # vary brightness a bit, so scores spread
    scores = engine.encode_images(list(cands)) @ engine.encode_texts([QUERY])[0]
    order = np.argsort(-scores)
    assert scores[order[0]] - scores[order[1]] > 1e-4  # a clear winner, robust to batching noise
    best = int(order[0])
    rest = [i for i in range(10) if i != best]
    front = [*rest[:2], best, *rest[2:4]]  # winner in the middle of the front camera
    rear = rest[4:]
    with Writer(tmp_path / "drive", version=9, storage_plugin=StoragePlugin.MCAP) as w:
        cf = w.add_connection(FRONT, B.IMAGE, typestore=store)
        cr = w.add_connection("/rear/image_raw", B.IMAGE, typestore=store)
        for k, i in enumerate(front):
            msg, _ = raw_image(store, cands[i], "bgr8", header(store, T0 + k, 7, "front_cam"), 2)
            w.write(cf, (T0 + k) * 10**9, store.serialize_cdr(msg, B.IMAGE))
        for k, i in enumerate(rear):
            msg, _ = raw_image(store, cands[i], "rgb8", header(store, T0 + k, 9, "rear_cam"))
            w.write(cr, (T0 + k) * 10**9 + 1, store.serialize_cdr(msg, B.IMAGE))
    return tmp_path / "drive", cands[best], (T0 + 2, 7)


def test_search_finds_planted_frame_raw_and_processed(tmp_path, engine, planted) -> None:
    drive, best_rgb, best_stamp = planted
    raw = B.search_bag(drive, QUERY, engine, top_k=5, batch_size=3)
    assert [m.source for m in raw] == ["image"] * 5
    assert raw[0].stamp == best_stamp and raw[0].topic == FRONT and raw[0].frame_id == "front_cam"
    scores = [m.score for m in raw]
    assert scores == sorted(scores, reverse=True)
    assert np.array_equal(raw[0].image(), best_rgb)

    B.process_bag(drive, tmp_path / "processed", engine, progress=False)
    done = B.search_bag(tmp_path / "processed", QUERY, engine, top_k=5)
    assert [m.source for m in done] == ["embedding"] * 5
    assert [(m.topic, m.stamp) for m in done] == [(m.topic, m.stamp) for m in raw]
    assert np.allclose([m.score for m in done], scores, atol=1e-5)
    assert np.array_equal(done[0].image(), best_rgb)  # re-read lazily from the bag
    forced = B.search_bag(tmp_path / "processed", QUERY, engine, top_k=5, use_embeddings=False)
    assert [m.source for m in forced] == ["image"] * 5 and forced[0].stamp == best_stamp

    only_rear = B.search_bag(drive, QUERY, engine, top_k=100, topics=["/rear/image_raw"])
    assert len(only_rear) == 5 and {m.topic for m in only_rear} == {"/rear/image_raw"}
    assert [m.timestamp for m in B.search_bag(drive, QUERY, engine, top_k=100)] != []


def test_search_ties_are_deterministic(tmp_path, store, engine, rng) -> None:
    rgb = rng.integers(0, 256, (32, 32, 3), np.uint8)
    with Writer(tmp_path / "same", version=9) as w:
        c = w.add_connection(FRONT, B.IMAGE, typestore=store)
        for k in (3, 1, 2):  # written out of time order on purpose
            msg, _ = raw_image(store, rgb, "rgb8", header(store, k, 0, "f"))
            w.write(c, k * 10**9, store.serialize_cdr(msg, B.IMAGE))
    got = B.search_bag(tmp_path / "same", "a car", engine, top_k=3, batch_size=1)
    assert [m.timestamp for m in got] == [10**9, 2 * 10**9, 3 * 10**9]


def test_search_errors(tmp_path, engine, planted) -> None:
    drive = planted[0]
    with pytest.raises(B.BagError, match="query is empty"):
        B.search_bag(drive, "  ", engine)
    with pytest.raises(B.BagError, match="top_k"):
        B.search_bag(drive, QUERY, engine, top_k=0)
    with pytest.raises(B.BagError, match=r"no usable stored embeddings .* no Similarity messages"):
        B.search_bag(drive, QUERY, engine, use_embeddings=True)


def test_search_other_model_ignores_stored_embeddings(tmp_path, engine, tiny_clip_2, planted) -> None:
    """Embeddings of another model live in another space: encode the images again (or refuse)."""
    B.process_bag(planted[0], tmp_path / "processed", engine, progress=False)
    other = ZeroShotEngine(str(tiny_clip_2))
    got = B.search_bag(tmp_path / "processed", QUERY, other, top_k=3)
    assert [m.source for m in got] == ["image"] * 3
    with pytest.raises(B.BagError, match=r"no usable stored embeddings .*" + re.escape(engine.model_id)):
        B.search_bag(tmp_path / "processed", QUERY, other, use_embeddings=True)


def test_recorded_results_are_columns_for_where(tmp_path, engine, planted) -> None:
    """A processed bag's ClassificationArray gives each match its top labels, and `where` filters on
    them (and on topic, stamp, ...) before the ranking, as on a fleet index."""
    B.process_bag(planted[0], tmp_path / "processed", engine, progress=False)
    every = B.search_bag(tmp_path / "processed", QUERY, engine, top_k=100)
    assert len(every) == 10 and all(set(m.labels) == {"road_user", "weather"} for m in every)
    label = every[-1].labels["weather"]["label"]
    where = f"weather = '{label}' AND topic = '{FRONT}' AND stamp >= 0"
    kept = B.search_bag(tmp_path / "processed", QUERY, engine, top_k=100, where=where)
    want = [m.key for m in every if m.labels["weather"]["label"] == label and m.topic == FRONT]
    assert [m.key for m in kept] == want and want
    assert B.search_bag(tmp_path / "processed", QUERY, engine, top_k=1, where=where)[0].key == want[0]
    with pytest.raises(B.BagError, match="no such column: road"):
        B.search_bag(planted[0], QUERY, engine, where="road = 'x'")  # raw: no task columns
