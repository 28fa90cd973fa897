"""Helpers every sub-command shares: model flags, image reading, one-line errors with exit code 2."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from av_scene_vlm.core.image_header import DEFAULT_MAX_FRAME_PIXELS
from av_scene_vlm.core.models import DEFAULT_CLIP_MODEL

EXIT_USAGE = 2


EXIT_FAILED = 1


class CliError(Exception):
    """A user-facing error: printed as one line on stderr, no traceback; exit code 2 (bad input,
    option or model) unless `exit_code` says otherwise (1: the output could not be written)."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def quiet_hub() -> None:
    """No progress bars or hub chatter on the console of a CLI (results go to stdout)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def add_clip_args(parser: argparse.ArgumentParser, recorded_model: bool = False) -> None:
    """--model/--device/--dtype and the image-tower backend options for CLIP-based commands
    (`recorded_model`: the model defaults to the one the searched embeddings were computed with)."""
    if recorded_model:
        parser.add_argument(
            "--model",
            default=None,
            help=f"hub id or local directory (default: the model recorded with the embeddings, else "
            f"{DEFAULT_CLIP_MODEL})",
        )
    else:
        parser.add_argument(
            "--model", default=DEFAULT_CLIP_MODEL, help="hub id or local directory (default: %(default)s)"
        )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: %(default)s)")
    parser.add_argument(
        "--dtype", default="auto", help="auto | float32 | float16 | bfloat16 (default: %(default)s)"
    )
    parser.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "torch", "onnxruntime"),
        help="image tower runtime: auto = onnxruntime on a CPU where it is installed, torch on CUDA "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--onnx-providers",
        nargs="+",
        default=["auto"],
        metavar="P",
        help="onnxruntime providers in order: auto | cpu | cuda | tensorrt (default: auto)",
    )
    parser.add_argument(
        "--onnx-threads", type=int, default=0, help="onnxruntime intra-op threads (default: 0 = torch's)"
    )
    parser.add_argument(
        "--cuda-graphs",
        default="auto",
        choices=("auto", "on", "off"),
        help="replay preprocessing + image tower as CUDA graphs: auto = on with torch on CUDA "
        "(default: %(default)s)",
    )


def add_max_frame_pixels_arg(parser: argparse.ArgumentParser) -> None:
    """--max-frame-pixels of the commands that read frames from bags (bag, index)."""
    parser.add_argument(
        "--max-frame-pixels",
        type=int,
        default=DEFAULT_MAX_FRAME_PIXELS,
        metavar="N",
        help="frames whose fields or compressed header claim more than N pixels (width x height) are "
        "bad frames, never decoded (default: %(default)s, 8K with headroom)",
    )


def max_frame_pixels(args: argparse.Namespace) -> int:
    """--max-frame-pixels, checked (CliError unless >= 1)."""
    value = int(args.max_frame_pixels)
    if value < 1:
        raise CliError(f"--max-frame-pixels must be >= 1, got {value}")
    return value


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as H×W×3 uint8 RGB, or raise CliError naming the file."""
    import cv2

    p = Path(path)
    if not p.is_file():
        raise CliError(f"cannot read image '{p}': no such file")
    data = np.fromfile(p, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise CliError(f"cannot read image '{p}': not an image OpenCV can decode")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_images(paths: Sequence[str | Path]) -> list[np.ndarray]:
    """All images, or CliError for the first unreadable one (before any model is loaded)."""
    if not paths:
        raise CliError("no images given")
    return [read_image(p) for p in paths]


def engine_options(args: argparse.Namespace) -> dict:
    """The engine's backend keywords from the command's options, checked (BackendError), and the model
    checked to be there (ModelLoadError) — in a second, before torch is imported."""
    from av_scene_vlm.core.backend_options import check_options
    from av_scene_vlm.core.models import ensure_available

    options = {
        "backend": getattr(args, "backend", "auto"),
        "onnx_providers": tuple(getattr(args, "onnx_providers", ["auto"])),
        "onnx_threads": getattr(args, "onnx_threads", 0),
        "cuda_graphs": getattr(args, "cuda_graphs", "auto"),
    }
    check_options(*options.values())
    ensure_available(args.model)
    return options


def make_engine(args: argparse.Namespace, tasks=(), templates=None):  # -> ZeroShotEngine
    """Load the CLIP engine for a command; a missing model becomes a CliError."""
    quiet_hub()
    from av_scene_vlm.core.models import ModelLoadError
    from av_scene_vlm.core.tasks import DEFAULT_TEMPLATES, TaskError

    try:
        options = engine_options(args)
        from av_scene_vlm.core.engine import ZeroShotEngine

        return ZeroShotEngine(
            args.model,
            device=args.device,
            dtype=args.dtype,
            tasks=tasks,
            templates=templates or DEFAULT_TEMPLATES,
            **options,
        )
    except (ModelLoadError, TaskError) as exc:
        raise CliError(str(exc)) from None


def run_guarded(func, args: argparse.Namespace) -> int:
    """Run a command body, turning CliError into a one-line message and its exit code."""
    try:
        return int(func(args) or 0)
    except CliError as exc:
        print(f"av-scene-vlm {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code


def tasks_from_args(args: argparse.Namespace) -> list:
    """--labels (one task) plus --config tasks; CliError when there are none or they are invalid."""
    from av_scene_vlm.core.tasks import TaskError, load_tasks_file, tasks_from_labels

    try:
        tasks = tasks_from_labels(args.labels or [])
        if args.config:
            tasks += load_tasks_file(args.config)
    except TaskError as exc:
        raise CliError(str(exc)) from None
    if not tasks:
        raise CliError("give --labels LABEL LABEL... or --config FILE")
    return tasks
