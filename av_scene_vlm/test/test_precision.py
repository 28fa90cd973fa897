"""The image tower's `precision` (fp32, bf16, int8, auto): parity bounds on the tiny model, the int8
graph's cache, `check-precision` (passing, recording, failing on a broken graph), `auto` on a CPU with
and without the instructions (simulated through $AV_SCENE_VLM_CPU_FLAGS, the option's own check), and
the option through the front ends (CLI errors, export bundle, the Ray index spec, clip_node).
"""

from __future__ import annotations

import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from av_scene_vlm.cli.main import main
from av_scene_vlm.core import onnx_export
from av_scene_vlm.core.agreement import Bounds, compare
from av_scene_vlm.core.engine import ZeroShotEngine
from av_scene_vlm.core.models import load_clip
from av_scene_vlm.core.precision import FLAGS_ENV, cpu_flags, cpu_supports
from av_scene_vlm.core.tasks import parse_tasks
from conftest import write_images

HAVE_ORT = all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnxscript"))
needs_ort = pytest.mark.skipif(not HAVE_ORT, reason="onnxruntime/onnxscript not installed")
TASKS = {"road_user": ["car", "truck", "bus", "cycle"], "weather": ["clear", "rain", "fog"]}
# The tiny model's logit scale is 100 (peaked probabilities, like trained CLIP): a cosine change of 1e-4
# moves a near-tie's probability by up to ~0.07 (measured: int8 0.073, bf16 0.014 on these frames), so
# its Δp bound is 0.1; the cosine and top-1 bounds are the (the benchmark holds all of them on B/32).
TINY = Bounds(max_dp=0.1)
TINY_FLAGS = ["--max-dp", "0.1"]
NO_VNNI = "fpu sse sse2 avx avx2 fma avx512f"  # an AVX-512 CPU without VNNI or BF16 (e.g. Skylake-SP)
ALL_FLAGS = "avx2 avx512f avx512_vnni avx512_bf16 amx_int8 amx_bf16"


@pytest.fixture
def frames(rng) -> list[np.ndarray]:
    """Varied frames: noise, smooth gradients and flat colours, in three sizes."""
    out = []
    for i in range(12):
        h, w = [(90, 160), (120, 120), (60, 200)][i % 3]
        if i % 3 == 0:
            out.append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        else:
            ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * rng.uniform(0.2, 1, 3)
            out.append(np.broadcast_to(ramp, (h, w, 3)).astype(np.uint8).copy())
    return out


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("AV_SCENE_VLM_ONNX_CACHE", str(path))
    return path


def _agreement(tiny_clip, precision: str, frames, cache: Path):
    clip = load_clip(str(tiny_clip), "cpu")
    tasks = parse_tasks(TASKS)
    ref = ZeroShotEngine(clip, tasks=tasks, backend="torch", precision="fp32")
    cand = ZeroShotEngine(clip, tasks=tasks, precision=precision, onnx_cache_dir=cache)
    labels = dict(zip(TASKS, ref.label_embeddings(), strict=True))
    return cand, compare(
        ref.encode_images(frames), cand.encode_images(frames), labels, ref.logit_scale, precision, TINY
    )


# ---- parity ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "precision,backend", [("bf16", "torch"), pytest.param("int8", "onnxruntime", marks=needs_ort)]
)
def test_each_precision_holds_the_bounds_on_the_tiny_model(
    tiny_clip, frames, cache, precision, backend
) -> None:
    engine, result = _agreement(tiny_clip, precision, frames, cache)
    assert (engine.precision, engine.backend) == (precision, backend)
    assert result.passed, result.rows()
    # Measured: int8 cosine min 0.99990, bf16 0.99999. Really another arithmetic: not identical to fp32.
    assert result.cos_min >= 0.9995 and result.cos_min < 1 - 1e-7
    # classify gives the probabilities the comparison scored (same formula, same text embeddings).
    got = engine.classify(frames[0])[0].tasks[0].probabilities
    assert np.argmax(got) == np.argmax(
        ZeroShotEngine(engine.clip, tasks=parse_tasks(TASKS), backend="torch", precision="fp32")
        .classify(frames[0])[0]
        .tasks[0]
        .probabilities
    )


@needs_ort
def test_int8_graph_quantizes_the_matmul_weights(tiny_clip, cache) -> None:
    import onnx

    engine = ZeroShotEngine(str(tiny_clip), tasks=parse_tasks(TASKS), precision="int8", onnx_cache_dir=cache)
    graph = onnx.load(engine.backend_info()["graph"])
    ops = {n.op_type for n in graph.graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops, ops
    int8 = [t for t in graph.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8) >= 8  # q, k, v, out, fc1, fc2 per layer (2 layers) and the projection
    assert (
        json.loads((Path(engine.backend_info()["graph"]).parent / "meta.json").read_text())["precision"]
        == "int8"
    )


# ---- the cache -----------------------------------------------------------------------------------------
@needs_ort
def test_int8_cache_is_rebuilt_when_model_precision_or_ort_version_changes(
    tiny_clip, tiny_clip_2, tmp_path, monkeypatch
) -> None:
    clip = load_clip(str(tiny_clip), "cpu").model
    first = onnx_export.cached_graph(clip, "tiny", tmp_path, precision="int8")
    assert not first.cache_hit and first.precision == "int8"
    again = onnx_export.cached_graph(clip, "tiny", tmp_path, precision="int8")
    assert again.cache_hit and again.path == first.path
    fp32 = onnx_export.cached_graph(clip, "tiny", tmp_path, precision="fp32")
    assert not fp32.cache_hit and fp32.path != first.path  # precision is in the key
    other = onnx_export.cached_graph(
        load_clip(str(tiny_clip_2), "cpu").model, "tiny2", tmp_path, precision="int8"
    )
    assert not other.cache_hit and other.path.parent not in (first.path.parent, fp32.path.parent)
    real = onnx_export.versions()
    monkeypatch.setattr(onnx_export, "versions", lambda: {**real, "onnxruntime": "0.0.1"})
    upgraded = onnx_export.cached_graph(clip, "tiny", tmp_path, precision="int8")
    assert not upgraded.cache_hit and upgraded.path.parent not in (first.path.parent, other.path.parent)
    assert json.loads((upgraded.path.parent / "meta.json").read_text())["versions"]["onnxruntime"] == "0.0.1"
    # Never half-written: every entry is complete, no temporary folder or quantizer source is left.
    entries = sorted(tmp_path.iterdir())
    assert len(entries) == 4 and all(not p.name.startswith(".") for p in entries)
    assert all(sorted(f.name for f in p.iterdir()) == ["image_tower.onnx", "meta.json"] for p in entries)


# ---- check-precision and auto ----------------------------------------------------------------------------
@needs_ort
def test_check_precision_passes_int8_and_auto_then_picks_it(
    tiny_clip, frames, tmp_path, cache, monkeypatch, capsys
) -> None:
    images = write_images(tmp_path, frames)
    tasks = parse_tasks(TASKS)
    monkeypatch.setenv(FLAGS_ENV, ALL_FLAGS)
    before = ZeroShotEngine(str(tiny_clip), tasks=tasks)
    assert before.precision == "fp32" and "no passing check-precision" in before.precision_reason
    args = [
        "check-precision",
        "--model",
        str(tiny_clip),
        *images,
        "--precision",
        "int8",
        "--labels",
        *TASKS["road_user"],
        *TINY_FLAGS,
    ]
    assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "verdict: PASS" in out and ">= 0.999" in out and "<= 0.1" in out and ">= 95 %" in out
    assert (cache / "agreement").is_dir()
    after = ZeroShotEngine(str(tiny_clip), tasks=tasks)
    assert (after.precision, after.backend) == ("int8", "onnxruntime"), after.precision_reason
    assert "check-precision passed" in after.precision_reason
    # A CPU without VNNI (the same check, told what the CPU has) keeps fp32, and says why.
    monkeypatch.setenv(FLAGS_ENV, NO_VNNI)
    assert not cpu_supports("int8") and not cpu_supports("bf16") and "avx512_vnni" not in cpu_flags()
    plain = ZeroShotEngine(str(tiny_clip), tasks=tasks)
    assert plain.precision == "fp32" and "CPU lacks avx512_vnni" in plain.precision_reason
    # backend torch cannot run int8: auto stays fp32 there too.
    assert ZeroShotEngine(str(tiny_clip), tasks=tasks, backend="torch").precision == "fp32"


def test_auto_without_the_instructions_never_picks_a_reduced_precision(tiny_clip, cache, monkeypatch) -> None:
    """Even with passing records, a CPU lacking VNNI/BF16 gets fp32 (bf16 path: the torch backend)."""
    from av_scene_vlm.core.precision import write_agreement

    clip = load_clip(str(tiny_clip), "cpu")
    for p in ("int8", "bf16"):
        write_agreement(cache, onnx_export.cache_key(clip.model, p), p, {"passed": True, "cos_min": 1.0})
    monkeypatch.setenv(FLAGS_ENV, NO_VNNI)
    engine = ZeroShotEngine(clip, tasks=parse_tasks(TASKS), backend="torch", onnx_cache_dir=cache)
    assert engine.precision == "fp32" and "CPU lacks avx512_bf16/amx_bf16" in engine.precision_reason
    monkeypatch.setenv(FLAGS_ENV, "avx2 avx512_bf16")
    engine = ZeroShotEngine(clip, tasks=parse_tasks(TASKS), backend="torch", onnx_cache_dir=cache)
    assert engine.precision == "bf16" and engine.backend == "torch"


@needs_ort
def test_check_precision_fails_on_a_broken_graph(tiny_clip, frames, tmp_path, cache, capsys) -> None:
    import onnx
    from onnx import numpy_helper

    bundle = tmp_path / "bundle"
    assert (
        main(
            ["export", "--model", str(tiny_clip), "--out", str(bundle), "--no-labels", "--precision", "int8"]
        )
        == 0
    )
    assert "s (int8)" in capsys.readouterr().out
    graph = bundle / "image_tower.onnx"
    images = write_images(tmp_path, frames)
    check = [
        "check-precision",
        "--model",
        str(tiny_clip),
        *images,
        "--labels",
        *TASKS["road_user"],
        *TINY_FLAGS,
    ]
    check.append("--json")
    assert main([*check, "--graph", str(graph)]) == 0  # the bundle's int8 graph as shipped passes
    assert json.loads(capsys.readouterr().out)["passed"] is True
    # Break it: the first layer's int8 weights scaled 40x (a wrong per-channel scale), still loadable.
    model = onnx.load(str(graph))
    scale = next(t for t in model.graph.initializer if t.name.endswith("_scale") and len(t.dims) == 1)
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * 40, scale.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    assert main([*check[:-1], "--graph", str(broken)]) == 1
    out = capsys.readouterr().out
    assert "verdict: FAIL" in out and "FAIL" in out.split("verdict:")[0]
    assert not (cache / "agreement").exists()  # a --graph check records nothing for auto


# ---- front ends --------------------------------------------------------------------------------------------
def test_precision_options_fail_in_one_line(tiny_clip, image_files, capsys) -> None:
    base = ["classify", image_files[0], "--labels", "a", "b", "--model", str(tiny_clip)]
    for bad, message in [
        (["--precision", "int8", "--backend", "torch"], "precision int8 runs on backend onnxruntime"),
        (["--precision", "bf16", "--backend", "onnxruntime"], "precision bf16 runs on backend torch"),
        (["--precision", "bf16", "--dtype", "bfloat16"], "precision bf16 applies to a float32 model"),
    ]:
        assert main([*base, *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_ray_index_spec_carries_the_precision() -> None:
    from av_scene_vlm.core.fleet.spec import EngineSpec

    spec = EngineSpec.create("some/model", tasks=parse_tasks(TASKS), precision="int8", backend="auto")
    assert spec.engine.precision == "int8"
    assert pickle.loads(pickle.dumps(spec)).engine.engine_kwargs()["precision"] == "int8"


def test_clip_node_reports_its_precision(ros, tiny_clip, cache, monkeypatch, capfd) -> None:
    pytest.importorskip("rclpy")
    from av_scene_vlm.ros.clip_node import ClipNode
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.parameter import Parameter
    from ros_helpers import Probe, wait_for

    monkeypatch.setenv(FLAGS_ENV, NO_VNNI)
    ctx, spinner = ros
    params = {
        "model": str(tiny_clip),
        "precision": "bf16",
        "labels": ["car", "bus"],
        "image_topics": ["/prec_cam/image_raw"],
        "diagnostics_period": 0.2,
    }
    node = spinner.add(
        ClipNode(
            "clip_node", context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()]
        )
    )
    assert node.engine.precision == "bf16" and node.engine.backend == "torch"
    probe = spinner.add(Probe(ctx))
    probe.listen(DiagnosticArray, "/diagnostics")
    spinner.start()

    engine_values = probe.status_values

    assert wait_for(lambda: engine_values().get("precision") == "bf16"), engine_values()
    assert engine_values()["precision_reason"] == "requested"
    assert "image tower: torch, precision bf16 (requested)" in capfd.readouterr().err


@needs_ort
def test_bag_tool_takes_the_precision(tiny_clip, tmp_path, rng, cache, capsys) -> None:
    from test_onnx_frontends import _write_bag

    drive = tmp_path / "drive"
    _write_bag(drive, rng)
    rows = {}
    for precision in ("fp32", "int8"):
        summary = tmp_path / f"{precision}.json"
        args = ["bag", str(drive), str(tmp_path / f"out-{precision}"), "--labels", "car", "truck", "bus"]
        args += [
            "--model",
            str(tiny_clip),
            "--precision",
            precision,
            "--summary",
            str(summary),
            "--no-progress",
        ]
        assert main(args) == 0, capsys.readouterr().err
        rows[precision] = json.loads(summary.read_text())["frames"]
    precisions = {json.loads((p / "meta.json").read_text())["precision"] for p in cache.iterdir()}
    assert precisions == {"fp32", "int8"}  # the int8 run built and used its own graph
    for a, b in zip(rows["fp32"], rows["int8"], strict=True):
        assert a["tasks"]["default"]["label"] == b["tasks"]["default"]["label"]
