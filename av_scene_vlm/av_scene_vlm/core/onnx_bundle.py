"""Everything a vehicle needs to run the classifier without this package: the ONNX image tower, how to
preprocess frames for it, and the label embeddings to score its output against.

Why: on Jetson / x86 + NVIDIA the image tower is built into a TensorRT engine with `trtexec` and run by
the vehicle's own (C++) pipeline; it then needs the exact preprocessing numbers and the text side
already encoded, since the text tower is not part of the graph.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .onnx_export import GRAPH_FILE, INPUT, OPSET, OUTPUTS, cached_graph, versions

PREPROCESS_FILE = "preprocess.json"
LABELS_FILE = "labels.json"


def preprocess_info(engine: Any, precision: str = "fp32") -> dict[str, Any]:
    """The graph's input/outputs and the preprocessing that turns a uint8 RGB frame into its input."""
    spec = engine.preprocess.spec
    vc = engine.model.config.vision_config
    patch = int(vc.patch_size)
    dim = int(engine.model.visual_projection.out_features)
    n_patches = (spec.crop_height // patch) * (spec.crop_width // patch)
    return {
        "model": engine.model_id,
        "input": {
            "name": INPUT,
            "shape": ["batch", 3, spec.crop_height, spec.crop_width],
            "dtype": "float32",
            "layout": "NCHW, RGB",
        },
        "outputs": [
            {"name": OUTPUTS[0], "shape": ["batch", dim], "dtype": "float32", "normalized": True},
            {
                "name": OUTPUTS[1],
                "shape": ["batch", n_patches, dim],
                "dtype": "float32",
                "normalized": True,
                "grid": [spec.crop_height // patch, spec.crop_width // patch],
            },
        ],
        "preprocess": {
            "color": "RGB",
            "resize": {
                "shortest_edge": spec.shortest_edge,
                "interpolation": "bicubic",
                "antialias": True,
                "rounding": "other side = int(shortest_edge * long / short)",
            },
            "center_crop": {"height": spec.crop_height, "width": spec.crop_width},
            "rescale_factor": spec.rescale_factor,
            "mean": list(spec.mean),
            "std": list(spec.std),
            "formula": "pixel = (uint8 * rescale_factor - mean) / std, per channel",
        },
        "onnx": {"file": GRAPH_FILE, "opset": OPSET, "precision": precision, "versions": versions()},
    }


def labels_info(engine: Any) -> dict[str, Any]:
    """Per task its labels and their normalized, prompt-ensembled embeddings, with the logit scale."""
    embeds = engine.label_embeddings()
    return {
        "model": engine.model_id,
        "logit_scale": engine.logit_scale,
        "templates": list(engine.templates),
        "scoring": f"p = softmax(logit_scale * {OUTPUTS[0]} @ embeddings.T) over a task's labels",
        "tasks": [
            {
                "name": task.name,
                "labels": task.label_names,
                "prompts": engine.prompts(task),
                "embeddings": [[float(v) for v in row] for row in e.astype(np.float32)],
            }
            for task, e in zip(engine.tasks, embeds, strict=True)
        ],
    }


def write_bundle(
    engine: Any, out: str | Path, cache_dir: str | Path | None = None, precision: str = "fp32"
) -> dict[str, Any]:
    """Write image_tower.onnx (fp32, or int8 for vehicles that run ONNX Runtime on a CPU),
    preprocess.json and (when the engine has tasks) labels.json to `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    graph = cached_graph(engine.model, engine.model_id, cache_dir, precision=precision)
    shutil.copyfile(graph.path, out / GRAPH_FILE)
    info = preprocess_info(engine, precision)
    (out / PREPROCESS_FILE).write_text(json.dumps(info, indent=2) + "\n")
    written = [out / GRAPH_FILE, out / PREPROCESS_FILE]
    if engine.tasks:
        (out / LABELS_FILE).write_text(json.dumps(labels_info(engine)) + "\n")
        written.append(out / LABELS_FILE)
    return {"files": written, "cache_hit": graph.cache_hit, "seconds": graph.seconds}


def verify_bundle(engine: Any, out: str | Path, frame: np.ndarray) -> float | None:
    """Max |Δ| of the written graph's image embedding (ONNX Runtime, CPU) against the engine's own for
    `frame`; None when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(str(Path(out) / GRAPH_FILE), providers=["CPUExecutionProvider"])
    pixels = engine.preprocess([frame]).float().cpu().numpy()
    got = session.run([OUTPUTS[0]], {INPUT: pixels})[0]
    return float(np.abs(got - engine.encode_images(frame)).max())
