"""Searching the fleet index (core.fleet.search) against an independent computation with transformers'
CLIPModel on the same frames, its filters, and the ANN index. (The command, `av-scene-vlm search
--db`, is test_search.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from av_scene_vlm.core.fleet import EngineSpec, FleetError, FleetIndex, index_bags, search_index
from av_scene_vlm.core.tasks import parse_tasks
from fleet_bags import write_bag

pytest.importorskip("lancedb")

QUERY = "a child crossing the road at night"
TASKS = parse_tasks({"road_user": ["car", "pedestrian", "bus"], "time_of_day": ["day", "night"]})


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_clip):
    """Two bags (sqlite3 + mcap) indexed once for every test of this module."""
    root = tmp_path_factory.mktemp("search")
    frames = write_bag(root / "bags" / "a", "sqlite3", 1, n=4) + write_bag(
        root / "bags" / "b", "mcap", 2, n=4
    )
    spec = EngineSpec.create(str(tiny_clip), tasks=TASKS)
    engine = spec.build()
    index_bags([root / "bags"], root / "db", spec, engine=engine, progress=False)
    return root, frames, engine


def independent_scores(model_dir, frames, text: str) -> np.ndarray:
    """Cosine of each frame with `text`, straight from transformers (no project code)."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(str(model_dir)).eval()
    proc = CLIPProcessor.from_pretrained(str(model_dir))
    with torch.inference_mode():
        img = model.get_image_features(**proc(images=[f.rgb for f in frames], return_tensors="pt"))
        txt = model.get_text_features(**proc(text=[text], return_tensors="pt", padding=True))
    img = getattr(img, "pooler_output", img)
    txt = getattr(txt, "pooler_output", txt)
    img = img / img.norm(dim=-1, keepdim=True)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    return (img @ txt[0]).numpy()


def test_text_ranking_equals_transformers(indexed, tiny_clip) -> None:
    root, frames, engine = indexed
    index = FleetIndex.open(str(root / "db"))
    hits = search_index(index, engine.encode_texts([QUERY])[0], top_k=100)
    assert len(hits) == len(frames) == 16
    ref = independent_scores(tiny_clip, frames, QUERY)
    ref_by_key = {(f.topic, f.stamp): s for f, s in zip(frames, ref, strict=True)}
    got = np.array([h.score for h in hits])
    want = np.array([ref_by_key[(h.topic, h.stamp)] for h in hits])
    assert np.allclose(got, want, atol=1e-5)  # same score for every frame
    assert np.all(np.diff(want) <= 1e-6)  # and the index's order is transformers' order
    assert (hits[0].topic, hits[0].stamp) == max(ref_by_key, key=ref_by_key.get)


def test_filters_return_exactly_the_matching_rows(indexed) -> None:
    root, _, engine = indexed
    index = FleetIndex.open(str(root / "db"))
    table = index.frames.to_arrow().to_pylist()
    q = engine.encode_texts([QUERY])[0]
    for where, match in [
        ("topic = '/front/image_raw'", lambda r: r["topic"] == "/front/image_raw"),
        (f"road_user = '{table[0]['road_user']}'", lambda r: r["road_user"] == table[0]["road_user"]),
        (
            f"road_user = '{table[0]['road_user']}' AND time_of_day = '{table[-1]['time_of_day']}'",
            lambda r: (
                r["road_user"] == table[0]["road_user"] and r["time_of_day"] == table[-1]["time_of_day"]
            ),
        ),
        (
            f"stamp >= {table[3]['stamp']} AND frame_id = 'rear_cam'",
            lambda r: r["stamp"] >= table[3]["stamp"] and r["frame_id"] == "rear_cam",
        ),
    ]:
        want = {(r["bag_hash"], r["topic"], r["stamp"]) for r in table if match(r)}
        got = {(h.bag_hash, h.topic, h.stamp) for h in search_index(index, q, top_k=100, where=where)}
        assert got == want and len(want) > 0, where
    assert len({r["topic"] for r in table}) == 2 and 0 < len(want) < len(table)
    with pytest.raises(FleetError, match="No field named nope"):
        search_index(index, q, where="nope = 1")


def test_ann_index_above_the_threshold(tmp_path) -> None:
    """Many synthetic rows: the ANN index is built and finds what exact search finds."""
    from av_scene_vlm.core.fleet import IndexInfo

    rng = np.random.default_rng(0)
    dim, n = 32, 3000
    vec = rng.normal(size=(n, dim)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    index = FleetIndex.open_or_create(
        str(tmp_path / "db"), IndexInfo("synthetic", dim, {"road_user": ["car", "bus"]})
    )
    labels = np.where(np.arange(n) % 3 == 0, "bus", "car")
    index.add(
        {
            "bag": ["b"] * n,
            "bag_hash": ["ab"] * n,
            "topic": ["/cam"] * n,
            "stamp": np.arange(n, dtype=np.int64),
            "frame_id": ["cam"] * n,
            "bag_time": np.arange(n, dtype=np.int64),
            "vector": vec,
            "road_user": labels,
            "road_user_prob": np.ones(n, np.float32),
            "thumbnail": [b""] * n,
        }
    )
    index.finish_bag("ab", "b", n, 0, 0.0)  # search returns rows of complete bags only
    assert not index.maybe_build_ann_index(None, threshold=n + 1) and not index.has_ann_index()
    assert index.maybe_build_ann_index(None, threshold=n) and index.has_ann_index()
    q = vec[:20] + rng.normal(scale=0.05, size=(20, dim)).astype(np.float32)
    recall = []
    for i, v in enumerate(q):
        exact = [h.stamp for h in search_index(index, v, top_k=10, exact=True)]
        ann = [h.stamp for h in search_index(index, v, top_k=10)]
        assert exact[0] == ann[0] == i  # the frame the query was made from
        recall.append(len(set(exact) & set(ann)) / 10)
    # Uniform random 32-d vectors are ANN's hardest case; the 1M × 512-d benchmark measures >= 0.95.
    assert np.mean(recall) >= 0.8
    hits = search_index(index, q[0], top_k=5, where="road_user = 'bus'")
    assert hits[0].stamp == 0 and all(h.stamp % 3 == 0 for h in hits)
