"""`av-scene-vlm export --model M --out DIR`: the ONNX image tower, its preprocessing and a config's
label embeddings, for building a TensorRT engine with `trtexec` on the vehicle.

Why: vehicle computers run vision models through ONNX -> TensorRT in their own pipelines; this writes
what such a pipeline needs (the graph, the exact preprocessing numbers, the text side already encoded).
Exit codes: 0 ok, 2 bad option / model / output (one line on stderr).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from av_scene_vlm.cli.common import (
    EXIT_FAILED,
    CliError,
    add_task_arguments,
    make_engine,
    quiet_hub,
    run_guarded,
    tasks_and_templates,
)
from av_scene_vlm.core.models import DEFAULT_CLIP_MODEL

_FILES = ("image_tower.onnx", "preprocess.json", "labels.json")  # mirrors core.onnx_bundle


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the export options on `parser`."""
    parser.add_argument(
        "--model", default=DEFAULT_CLIP_MODEL, help="hub id or local directory (default: %(default)s)"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="directory to write the files to")
    add_task_arguments(parser)  # the tasks whose label embeddings labels.json holds
    parser.add_argument("--no-labels", action="store_true", help="write only the graph and preprocess.json")
    parser.add_argument("--device", default="cpu", help="device to export on (default: %(default)s)")
    parser.add_argument(
        "--dtype", default="float32", help="float32 | float16 (on CUDA) (default: %(default)s)"
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "int8"),
        help="graph precision: fp32 (for TensorRT) or int8 (MatMul weights int8, for vehicles running "
        "ONNX Runtime on a CPU; check it with check-precision --graph) (default: %(default)s)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite files already in DIR")


def _run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out '{out}' exists and is not a directory")
    clash = [f for f in _FILES if (out / f).exists()]
    if clash and not args.force:
        raise CliError(f"'{out}' already holds {', '.join(clash)}; pass --force to overwrite")
    tasks, templates = ([], None) if args.no_labels else tasks_and_templates(args)
    args.backend = "torch"  # the graph is exported from the torch model; no session needed
    graph_precision, args.precision = args.precision, "fp32"  # the engine stays the fp32 reference
    if graph_precision == "int8" and args.dtype not in ("float32", "fp32", "auto"):
        raise CliError(f"--precision int8 quantizes a float32 model, not --dtype {args.dtype}")
    engine = make_engine(args, tasks, templates)
    quiet_hub()
    from av_scene_vlm.core.models import ModelLoadError
    from av_scene_vlm.core.onnx_bundle import verify_bundle, write_bundle

    try:
        written = write_bundle(engine, out, precision=graph_precision)
    except ModelLoadError as exc:  # ExportError: exporter missing or model not exportable
        raise CliError(str(exc), EXIT_FAILED) from None
    except OSError as exc:
        raise CliError(f"cannot write to '{out}': {exc.strerror or exc}", EXIT_FAILED) from None
    import numpy as np

    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    diff = verify_bundle(engine, out, frame)
    how = "from the cache" if written["cache_hit"] else "exported"
    print(f"image tower {how} in {written['seconds']:.1f} s ({graph_precision})")
    for path in written["files"]:
        print(f"wrote {path}")
    if diff is not None:
        print(f"checked with onnxruntime: max |image embedding difference| vs torch fp32 = {diff:.2e}")
    side = engine.preprocess.spec.crop_height
    if graph_precision == "int8":
        print(
            "int8: check its agreement on your images: "
            f"av-scene-vlm check-precision --graph {out / _FILES[0]} IMAGES..."
        )
        return 0
    print(
        "TensorRT: trtexec --onnx="
        f"{out / _FILES[0]} --saveEngine={out / 'image_tower.plan'} --fp16 "
        f"--minShapes=pixel_values:1x3x{side}x{side} --optShapes=pixel_values:4x3x{side}x{side} "
        f"--maxShapes=pixel_values:8x3x{side}x{side}"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    """Entry point for `av-scene-vlm export`."""
    return run_guarded(_run, args)
