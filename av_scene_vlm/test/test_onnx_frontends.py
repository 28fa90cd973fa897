"""The backend through every front end: clip_node (parameters, /diagnostics, start-up errors), the CLIs
and the bag tool (`--backend`, `--onnx-providers`), and `av-scene-vlm export` (a bundle a vehicle
pipeline can run without this package).

Tests that run ONNX Runtime skip (with the reason) only where onnxruntime or the exporter is missing.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from av_scene_vlm.cli.main import main
from av_scene_vlm.core.engine import ZeroShotEngine
from av_scene_vlm.core.tasks import parse_tasks_yaml, tasks_from_labels

HAVE_ORT = all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnxscript"))
needs_ort = pytest.mark.skipif(
    not HAVE_ORT, reason="onnxruntime/onnxscript not installed (requirements/dev.txt installs them)"
)
CUDA_ORT = HAVE_ORT and "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers()
LABELS = ["car", "truck", "bus", "cycle"]


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# ---- CLIs and the bag tool ---------------------------------------------------------------------------
@needs_ort
def test_cli_commands_take_the_backend(tiny_clip, image_files, tmp_path, monkeypatch, capsys) -> None:
    out: dict[str, dict] = {}
    for backend in ("torch", "onnxruntime"):
        cache = tmp_path / f"cache-{backend}"
        monkeypatch.setenv("AV_SCENE_VLM_ONNX_CACHE", str(cache))
        common = ["--model", str(tiny_clip), "--backend", backend]
        assert main(["classify", *image_files, "--labels", *LABELS, "--json", *common]) == 0
        classify = _json_lines(capsys.readouterr().out)
        assert main(["similarity", *image_files, "--texts", "a truck", "a bus", "--json", *common]) == 0
        sim = json.loads(capsys.readouterr().out)
        png = tmp_path / f"grid-{backend}.png"
        assert main(["plot", *image_files, "--labels", *LABELS, "--out", str(png), *common]) == 0
        assert cv2.imread(str(png)) is not None
        # The onnxruntime runs exported a graph into their cache; the torch runs never touched one.
        entries = sorted(p.name for p in cache.iterdir()) if cache.exists() else []
        assert len(entries) == (1 if backend == "onnxruntime" else 0), entries
        out[backend] = {"classify": classify, "cosine": np.array(sim["cosine"])}
    for a, b in zip(out["torch"]["classify"], out["onnxruntime"]["classify"], strict=True):
        assert a["label"] == b["label"]
        np.testing.assert_allclose(a["probabilities"], b["probabilities"], atol=1e-4)
    np.testing.assert_allclose(out["torch"]["cosine"], out["onnxruntime"]["cosine"], atol=1e-5)


def _write_bag(path: Path, rng, n: int = 3) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    t = store.types
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conn = w.add_connection("/cam/image_raw", "sensor_msgs/msg/Image", typestore=store)
        for i in range(n):
            rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            hdr = t["std_msgs/msg/Header"](
                stamp=t["builtin_interfaces/msg/Time"](sec=i, nanosec=0), frame_id="cam"
            )
            msg = t["sensor_msgs/msg/Image"](
                header=hdr,
                height=48,
                width=64,
                encoding="rgb8",
                is_bigendian=0,
                step=192,
                data=rgb.reshape(-1),
            )
            w.write(conn, (i + 1) * 10**9, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))


@needs_ort
def test_bag_tool_takes_the_backend(tiny_clip, tmp_path, rng, monkeypatch, capsys) -> None:
    drive = tmp_path / "drive"
    _write_bag(drive, rng)
    rows = {}
    for backend in ("torch", "onnxruntime"):
        cache = tmp_path / f"cache-{backend}"
        monkeypatch.setenv("AV_SCENE_VLM_ONNX_CACHE", str(cache))
        summary = tmp_path / f"{backend}.json"
        args = ["bag", str(drive), str(tmp_path / f"out-{backend}"), "--labels", *LABELS]
        args += ["--model", str(tiny_clip), "--backend", backend, "--summary", str(summary), "--no-progress"]
        assert main(args) == 0, capsys.readouterr().err
        assert cache.exists() == (backend == "onnxruntime")
        rows[backend] = json.loads(summary.read_text())["frames"]
    assert len(rows["torch"]) == len(rows["onnxruntime"]) == 3
    for a, b in zip(rows["torch"], rows["onnxruntime"], strict=True):
        ta, tb = a["tasks"]["default"], b["tasks"]["default"]
        assert ta["label"] == tb["label"]
        assert ta["probability"] == pytest.approx(tb["probability"], abs=1e-4)


@needs_ort
def test_cli_rejects_bad_backend_options_in_one_line(tiny_clip, image_files, tmp_path, capsys) -> None:
    base = ["classify", image_files[0], "--labels", "a", "b", "--model", str(tiny_clip)]
    assert main([*base, "--onnx-providers", "gpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown ONNX Runtime provider 'gpu'" in err and len(err.splitlines()) == 1
    assert main([*base, "--onnx-threads", "-2"]) == 2
    assert "onnx_threads must be an integer >= 0" in capsys.readouterr().err
    if not CUDA_ORT:
        assert main([*base, "--backend", "onnxruntime", "--onnx-providers", "cuda"]) == 2
        err = capsys.readouterr().err.strip()
        assert "'CUDAExecutionProvider' is not available" in err and len(err.splitlines()) == 1


# ---- export ------------------------------------------------------------------------------------------
def _vehicle_pipeline(bundle: Path, frame: np.ndarray) -> dict[str, np.ndarray]:
    """What a vehicle does with the bundle alone: preprocess by preprocess.json, run the graph, score
    against labels.json. (CLIPImageProcessor is built from the JSON's numbers only.)"""
    import onnxruntime as ort
    from transformers import CLIPImageProcessor

    pre = json.loads((bundle / "preprocess.json").read_text())
    labels = json.loads((bundle / "labels.json").read_text())
    p = pre["preprocess"]
    processor = CLIPImageProcessor(
        size={"shortest_edge": p["resize"]["shortest_edge"]},
        crop_size=p["center_crop"],
        image_mean=p["mean"],
        image_std=p["std"],
        rescale_factor=p["rescale_factor"],
    )
    pixels = processor(images=frame, return_tensors="np")["pixel_values"].astype(np.float32)
    session = ort.InferenceSession(str(bundle / pre["onnx"]["file"]), providers=["CPUExecutionProvider"])
    (emb,) = session.run([pre["outputs"][0]["name"]], {pre["input"]["name"]: pixels})
    out = {}
    for task in labels["tasks"]:
        logits = labels["logit_scale"] * (emb[0].astype(np.float64) @ np.array(task["embeddings"]).T)
        e = np.exp(logits - logits.max())
        out[task["name"]] = e / e.sum()
    return out


@needs_ort
def test_export_writes_a_bundle_a_vehicle_can_run(tiny_clip, tmp_path, rng, monkeypatch, capsys) -> None:
    monkeypatch.setenv("AV_SCENE_VLM_ONNX_CACHE", str(tmp_path / "cache"))
    templates = ["a photo of a {}.", "a dashcam photo of a {}."]
    tasks_yaml = "road_user: [car, truck, bus]\nweather: [clear, rain]\n"
    cfg = tmp_path / "vehicle.yaml"
    cfg.write_text(json.dumps({"/**": {"ros__parameters": {"template": templates, "tasks": tasks_yaml}}}))
    bundle = tmp_path / "bundle"
    assert main(["export", "--model", str(tiny_clip), "--out", str(bundle), "--config", str(cfg)]) == 0
    printed = capsys.readouterr().out
    assert "trtexec --onnx=" in printed and "--minShapes=pixel_values:1x3x224x224" in printed
    assert "checked with onnxruntime" in printed
    pre = json.loads((bundle / "preprocess.json").read_text())
    assert pre["input"] == {
        "name": "pixel_values",
        "shape": ["batch", 3, 224, 224],
        "dtype": "float32",
        "layout": "NCHW, RGB",
    }
    assert [o["name"] for o in pre["outputs"]] == ["image_embeds", "patch_embeds"]
    assert pre["outputs"][1]["shape"] == ["batch", 49, 16]
    engine = ZeroShotEngine(
        str(tiny_clip), tasks=parse_tasks_yaml(tasks_yaml), templates=templates, backend="torch"
    )
    labels = json.loads((bundle / "labels.json").read_text())
    assert labels["logit_scale"] == pytest.approx(engine.logit_scale)
    assert labels["templates"] == templates
    assert [t["name"] for t in labels["tasks"]] == ["road_user", "weather"]
    for task, e in zip(labels["tasks"], engine.label_embeddings(), strict=True):
        np.testing.assert_allclose(np.array(task["embeddings"]), e, atol=1e-7)
    for shape in [(480, 640), (7, 300)]:
        frame = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        result = engine.classify(frame)[0]
        vehicle = _vehicle_pipeline(bundle, frame)
        for task in result.tasks:
            np.testing.assert_allclose(vehicle[task.task], task.probabilities, atol=1e-4)
    # Existing files need --force; the second export comes from the cache.
    assert main(["export", "--model", str(tiny_clip), "--out", str(bundle), "--no-labels"]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert main(["export", "--model", str(tiny_clip), "--out", str(bundle), "--no-labels", "--force"]) == 0
    assert "image tower from the cache" in capsys.readouterr().out


# ---- clip_node ---------------------------------------------------------------------------------------
@needs_ort
def test_clip_node_runs_onnxruntime_and_reports_it(ros, tiny_clip, rng, tmp_path, monkeypatch, capfd) -> None:
    pytest.importorskip("rclpy")
    from av_scene_vlm.ros.clip_node import ClipNode
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.parameter import Parameter
    from ros_helpers import Probe, header, image_msg, wait_for, wait_matched
    from sensor_msgs.msg import Image

    from av_scene_vlm_msgs.msg import ClassificationArray

    monkeypatch.setenv("AV_SCENE_VLM_ONNX_CACHE", str(tmp_path))
    ctx, spinner = ros
    params = {
        "model": str(tiny_clip),
        "backend": "onnxruntime",
        "onnx_providers": ["cpu"],
        "onnx_threads": 1,
        "labels": LABELS,
        "image_topics": ["/onnx_cam/image_raw"],
        "diagnostics_period": 0.2,
    }
    overrides = [Parameter(k, value=v) for k, v in params.items()]
    node = spinner.add(ClipNode("clip_node", context=ctx, parameter_overrides=overrides))
    assert node.engine.backend == "onnxruntime" and node.engine.backend_info()["threads"] == 1
    probe = spinner.add(Probe(ctx))
    probe.listen(ClassificationArray, "/onnx_cam/scene/classification")
    probe.listen(DiagnosticArray, "/diagnostics")
    cam = probe.camera_publisher(Image, "/onnx_cam/image_raw")
    spinner.start()
    assert wait_matched(node, cam)
    frame = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    cam.publish(image_msg(frame, "rgb8", header(7, "onnx_cam")))
    assert wait_for(lambda: probe.messages("/onnx_cam/scene/classification"))
    msg = probe.messages("/onnx_cam/scene/classification")[0]
    assert msg.header.frame_id == "onnx_cam"
    reference = ZeroShotEngine(str(tiny_clip), tasks=tasks_from_labels(LABELS), backend="torch")
    np.testing.assert_allclose(
        msg.results[0].probabilities, reference.classify(frame)[0].tasks[0].probabilities, atol=1e-4
    )

    engine_values = probe.status_values

    assert wait_for(lambda: engine_values().get("backend") == "onnxruntime"), engine_values()
    assert engine_values()["onnx_providers"] == "CPUExecutionProvider"
    assert engine_values()["precision"] == "fp32"  # auto, and no check-precision has passed here
    assert "image tower: onnxruntime ['CPUExecutionProvider'], 1 threads" in capfd.readouterr().err


def test_clip_node_rejects_bad_backend_options_at_start(tiny_clip) -> None:
    pytest.importorskip("rclpy")
    from ros_helpers import run_node_offline

    proc, _ = run_node_offline(
        "av_scene_vlm.ros.clip_node", f"model:={tiny_clip}", "backend:=tensorflow", "labels:=[car, bus]"
    )
    assert proc.returncode == 2  # a parameter value (core.exit_codes)
    assert "unknown backend 'tensorflow'" in proc.stderr and "Traceback" not in proc.stderr
    if HAVE_ORT and not CUDA_ORT:
        proc, _ = run_node_offline(
            "av_scene_vlm.ros.clip_node",
            f"model:={tiny_clip}",
            "backend:=onnxruntime",
            "onnx_providers:=[cuda]",
            "labels:=[car, bus]",
        )
        assert proc.returncode == 2
        assert "'CUDAExecutionProvider' is not available" in proc.stderr and "Traceback" not in proc.stderr
