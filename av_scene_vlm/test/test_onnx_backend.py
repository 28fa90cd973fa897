"""The onnxruntime image-tower backend: parity with the pipeline and the torch backend, the graph cache
(reuse, corrupt entries rebuilt), deterministic offline export, options and their errors.

Tests that run ONNX Runtime skip (with the reason) only where onnxruntime or the exporter is not
installed; requirements/dev.txt installs both, so they run in CI.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from av_scene_vlm.core import onnx_export
from av_scene_vlm.core.backend_options import BackendError, normalize_providers
from av_scene_vlm.core.engine import ZeroShotEngine
from av_scene_vlm.core.models import ModelLoadError, load_clip
from av_scene_vlm.core.tasks import parse_tasks, tasks_from_labels

HAVE_ORT = all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnxscript"))
needs_ort = pytest.mark.skipif(
    not HAVE_ORT, reason="onnxruntime/onnxscript not installed (requirements/dev.txt installs them)"
)

LABELS = ["car", "truck", "bus", "cycle"]
TEMPLATE = "a photo of a {}."
SHAPES = [(1, 1), (7, 300), (300, 7), (1080, 1920), (480, 640), (224, 224)]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


def _engine(model, backend: str, cache: Path | None = None, **kw) -> ZeroShotEngine:
    kw.setdefault("tasks", tasks_from_labels(LABELS))
    kw.setdefault("templates", [TEMPLATE])
    return ZeroShotEngine(str(model), backend=backend, onnx_cache_dir=cache, **kw)


@pytest.fixture(scope="module")
def torch_engine(tiny_clip) -> ZeroShotEngine:
    return _engine(tiny_clip, "torch")


@pytest.fixture(scope="module")
def ort_engine(tiny_clip, cache_dir) -> ZeroShotEngine:
    if not HAVE_ORT:
        pytest.skip("onnxruntime/onnxscript not installed (requirements/dev.txt installs them)")
    return _engine(tiny_clip, "onnxruntime", cache_dir)


@pytest.fixture(scope="module")
def pipe(tiny_clip):
    from transformers import pipeline

    return pipeline("zero-shot-image-classification", model=str(tiny_clip), device="cpu")


def _reference(pipe, image: np.ndarray) -> np.ndarray:
    from PIL import Image

    out = pipe(Image.fromarray(image), candidate_labels=LABELS, hypothesis_template=TEMPLATE)
    scores = {d["label"]: d["score"] for d in out}
    return np.array([scores[label] for label in LABELS])


# ---- parity ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["torch", pytest.param("onnxruntime", marks=needs_ort)])
@pytest.mark.parametrize("shape", SHAPES)
def test_probabilities_match_the_pipeline(request, pipe, rng, backend, shape) -> None:
    engine = request.getfixturevalue("ort_engine" if backend == "onnxruntime" else "torch_engine")
    assert engine.backend == backend
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    result = engine.classify(image)[0].tasks[0]
    ref = _reference(pipe, image)
    np.testing.assert_allclose(result.probabilities, ref, atol=1e-4, rtol=0)
    assert result.label == LABELS[int(np.argmax(ref))]
    assert result.probabilities.sum() == pytest.approx(1.0, abs=1e-9)


@needs_ort
@pytest.mark.parametrize("shape", [(1, 1), (7, 300), (120, 200), (1080, 1920)])
def test_heatmaps_match_the_torch_backend(ort_engine, torch_engine, rng, shape) -> None:
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    for label in (None, "bus"):
        a = ort_engine.classify(image, heatmap=True, heatmap_label=label)[0]
        b = torch_engine.classify(image, heatmap=True, heatmap_label=label)[0]
        assert a.heatmap is not None and a.heatmap.shape == shape
        assert (a.heatmap_task, a.heatmap_label) == (b.heatmap_task, b.heatmap_label)
        np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-4, rtol=0)
        assert np.ptp(a.heatmap) > 0 or shape == (1, 1)  # a real map, not a constant


@needs_ort
def test_batches_embeddings_and_similarity_match_the_torch_backend(ort_engine, torch_engine, rng) -> None:
    frames = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(480, 640, 3), (90, 200, 3), (480, 640, 3)]]
    want = [True, False, True]
    a = ort_engine.classify(frames, heatmap=want)
    b = torch_engine.classify(frames, heatmap=want)
    for ra, rb, w in zip(a, b, want, strict=True):
        np.testing.assert_allclose(ra.image_embedding, rb.image_embedding, atol=1e-5)
        np.testing.assert_allclose(ra.tasks[0].cosine, rb.tasks[0].cosine, atol=1e-5)
        assert (ra.heatmap is not None) == w == (rb.heatmap is not None)
    texts = ["a truck on a highway", "a baby crossing the road"]
    np.testing.assert_allclose(
        ort_engine.similarity(frames, texts), torch_engine.similarity(frames, texts), atol=1e-5
    )
    np.testing.assert_allclose(
        ort_engine.encode_images(frames), torch_engine.encode_images(frames), atol=1e-5
    )


# ---- the graph cache ---------------------------------------------------------------------------------
@needs_ort
def test_graph_is_exported_once_then_reused(tiny_clip, tmp_path, rng) -> None:
    first = _engine(tiny_clip, "onnxruntime", tmp_path)
    info = first.backend_info()
    assert info["backend"] == "onnxruntime" and info["cache_hit"] is False
    graph = Path(info["graph"])
    assert graph.parent.parent == tmp_path and graph.is_file()
    stamp = graph.stat().st_mtime_ns
    second = _engine(tiny_clip, "onnxruntime", tmp_path)
    again = second.backend_info()
    assert again["cache_hit"] is True and again["graph"] == str(graph)
    assert graph.stat().st_mtime_ns == stamp, "a cache hit rewrote the graph"
    assert sorted(p.name for p in tmp_path.iterdir()) == [graph.parent.name], "leftover temporary folders"
    meta = json.loads((graph.parent / "meta.json").read_text())
    assert meta["versions"]["onnxruntime"] != "-" and meta["key"].startswith(graph.parent.name)
    image = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        first.classify(image)[0].image_embedding, second.classify(image)[0].image_embedding
    )


def _damage(graph: Path, how: str) -> None:
    good = graph.read_bytes()
    if how == "truncated":
        graph.write_bytes(good[: len(good) // 3])
    elif how == "bit_flip":  # still a loadable graph, with one weight changed: only the sha256 sees it
        data = bytearray(good)
        data[len(data) // 2] ^= 0x40
        graph.write_bytes(bytes(data))
    elif how == "meta_missing":
        (graph.parent / onnx_export.META_FILE).unlink()
    elif how == "unloadable":  # the recorded checksum matches, but ONNX Runtime cannot load it
        garbage = b"this is not an ONNX graph"
        graph.write_bytes(garbage)
        meta_path = graph.parent / onnx_export.META_FILE
        meta = json.loads(meta_path.read_text())
        meta.update(size=len(garbage), sha256=onnx_export._sha256(graph))
        meta_path.write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def pristine(ort_engine) -> Path:
    """The cache entry the module's onnxruntime engine exported (copied, never modified)."""
    return Path(ort_engine.backend_info()["graph"]).parent


@needs_ort
@pytest.mark.parametrize("how", ["truncated", "bit_flip", "meta_missing", "unloadable"])
def test_a_corrupt_cached_graph_is_rebuilt_with_a_warning(
    tiny_clip, ort_engine, pristine, tmp_path, caplog, rng, how
) -> None:
    shutil.copytree(pristine, tmp_path / pristine.name)
    graph = tmp_path / pristine.name / onnx_export.GRAPH_FILE
    good = graph.read_bytes()
    _damage(graph, how)
    with caplog.at_level(logging.WARNING, logger="av_scene_vlm.onnx"):
        engine = _engine(tiny_clip, "onnxruntime", tmp_path)
    assert "is corrupt" in caplog.text and "rebuilding" in caplog.text, caplog.text
    assert engine.backend_info()["cache_hit"] is False
    assert engine.backend_info()["graph"] == str(graph)
    assert graph.read_bytes() == good, "the rebuilt graph differs from the first export"
    image = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        engine.classify(image)[0].image_embedding, ort_engine.classify(image)[0].image_embedding
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="av_scene_vlm.onnx"):
        assert _engine(tiny_clip, "onnxruntime", tmp_path).backend_info()["cache_hit"] is True
    assert "corrupt" not in caplog.text


@needs_ort
def test_export_is_deterministic_and_needs_no_network(tiny_clip, pristine, tmp_path, monkeypatch) -> None:
    """A second export (here with every network connection refused) is byte-identical to the first."""

    def no_network(*args, **kwargs):
        raise OSError("network access during export")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    clip = load_clip(str(tiny_clip), "cpu")
    onnx_export.export_graph(clip.model, tmp_path / "again.onnx")
    assert (tmp_path / "again.onnx").read_bytes() == (pristine / onnx_export.GRAPH_FILE).read_bytes()


def test_cache_key_follows_the_weights_and_the_versions(tiny_clip, tiny_clip_2, monkeypatch) -> None:
    model = load_clip(str(tiny_clip), "cpu").model
    key = onnx_export.cache_key(model)
    assert onnx_export.cache_key(load_clip(str(tiny_clip), "cpu").model) == key  # same weights, same key
    assert onnx_export.cache_key(load_clip(str(tiny_clip_2), "cpu").model) != key
    with torch.no_grad():
        model.visual_projection.weight[0, 0] += 1e-3
    assert onnx_export.cache_key(model) != key
    with torch.no_grad():
        model.visual_projection.weight[0, 0] -= 1e-3
    real = onnx_export.versions()
    monkeypatch.setattr(onnx_export, "versions", lambda: {**real, "onnxruntime": "0.0.1"})
    assert onnx_export.cache_key(model) != key


# ---- choosing the backend ----------------------------------------------------------------------------
def test_auto_picks_onnxruntime_on_a_cpu_where_installed_and_torch_for_bfloat16(tiny_clip, cache_dir) -> None:
    auto = _engine(tiny_clip, "auto", cache_dir)
    assert auto.backend == ("onnxruntime" if HAVE_ORT else "torch")
    assert auto.providers == (["CPUExecutionProvider"] if HAVE_ORT else [])
    assert _engine(tiny_clip, "auto", cache_dir, dtype="bfloat16").backend == "torch"


def test_without_onnxruntime_auto_is_torch_and_onnxruntime_a_clear_error(tiny_clip) -> None:
    code = f"""
import sys
sys.modules["onnxruntime"] = None  # as if it were not installed
import numpy as np
from av_scene_vlm.core.backend_options import BackendError
from av_scene_vlm.core.engine import ZeroShotEngine
from av_scene_vlm.core.tasks import tasks_from_labels
engine = ZeroShotEngine({str(tiny_clip)!r}, tasks=tasks_from_labels(["car", "bus"]))
label = engine.classify(np.zeros((8, 8, 3), np.uint8))[0].tasks[0].label
print("auto:", engine.backend, label)
try:
    ZeroShotEngine({str(tiny_clip)!r}, backend="onnxruntime")
except BackendError as exc:
    print("error:", exc)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "auto: torch " in proc.stdout
    assert "error: backend 'onnxruntime' needs the onnxruntime package" in proc.stdout


def test_bad_options_fail_before_the_model_loads(tmp_path) -> None:
    missing = str(tmp_path / "no-model-here")
    with pytest.raises(BackendError, match="unknown backend 'tensorflow'"):
        ZeroShotEngine(missing, backend="tensorflow")
    with pytest.raises(BackendError, match="unknown ONNX Runtime provider 'gpu'"):
        ZeroShotEngine(missing, onnx_providers=["gpu"])
    with pytest.raises(BackendError, match="onnx_threads must be an integer >= 0"):
        ZeroShotEngine(missing, onnx_threads=-1)
    with pytest.raises(BackendError, match="cannot be combined"):
        normalize_providers(["auto", "cpu"])
    assert normalize_providers(["cuda", "CPU", "TensorrtExecutionProvider"]) == (
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
        "TensorrtExecutionProvider",
    )
    assert normalize_providers([""]) == ("auto",)


@needs_ort
def test_auto_falls_back_to_torch_where_the_graph_cannot_be_cached(tiny_clip, tmp_path, caplog) -> None:
    not_a_dir = tmp_path / "cache-is-a-file"
    not_a_dir.write_text("")
    with caplog.at_level(logging.WARNING, logger="av_scene_vlm.onnx"):
        engine = _engine(tiny_clip, "auto", not_a_dir)
    assert engine.backend == "torch"
    assert (
        "backend auto: onnxruntime unavailable" in caplog.text
        and "cannot write the ONNX cache" in caplog.text
    )
    with pytest.raises(ModelLoadError, match="cannot write the ONNX cache"):
        _engine(tiny_clip, "onnxruntime", not_a_dir)


@needs_ort
def test_providers_and_threads_reach_the_session(tiny_clip, cache_dir) -> None:
    import onnxruntime as ort

    engine = _engine(tiny_clip, "onnxruntime", cache_dir, onnx_providers=["cpu"], onnx_threads=1)
    info = engine.backend_info()
    assert info["providers"] == ["CPUExecutionProvider"] and info["threads"] == 1
    assert engine._tower.session.get_session_options().intra_op_num_threads == 1
    for name, alias in (("CUDAExecutionProvider", "cuda"), ("TensorrtExecutionProvider", "tensorrt")):
        if name in ort.get_available_providers():
            continue
        with pytest.raises(BackendError, match=f"'{name}' is not available in onnxruntime"):
            _engine(tiny_clip, "onnxruntime", cache_dir, onnx_providers=[alias])
    with pytest.raises(BackendError, match="float32 or float16"):
        _engine(tiny_clip, "onnxruntime", cache_dir, dtype="bfloat16")


def test_multitask_label_embeddings_are_exposed(tiny_clip) -> None:
    spec = {"road_user": ["car", "truck", "bus"], "weather": ["clear", "rain"]}
    engine = ZeroShotEngine(str(tiny_clip), tasks=parse_tasks(spec), backend="torch")
    embeds = engine.label_embeddings()
    assert [e.shape[0] for e in embeds] == [3, 2]
    np.testing.assert_allclose(np.linalg.norm(embeds[0], axis=1), 1.0, atol=1e-6)
    image = np.full((32, 32, 3), 127, np.uint8)
    result = engine.classify(image)[0]
    np.testing.assert_allclose(result.tasks[1].cosine, embeds[1] @ result.image_embedding, atol=1e-6)
