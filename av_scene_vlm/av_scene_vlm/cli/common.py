"""Helpers every sub-command shares: model flags, image reading, one-line errors with their exit code."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from av_scene_vlm.core.image_header import DEFAULT_MAX_FRAME_PIXELS
from av_scene_vlm.core.models import DEFAULT_CLIP_MODEL
from av_scene_vlm.core.package_config import default_config

if TYPE_CHECKING:
    from av_scene_vlm.core.engine_options import EngineOptions

from av_scene_vlm.core.exit_codes import EXIT_FAILED, EXIT_USAGE, model_error_code

__all__ = ["EXIT_FAILED", "EXIT_USAGE", "CliError"]


class CliError(Exception):
    """A user-facing error: printed as one line on stderr, no traceback; exit code 2 (a bad option,
    argument or value: `core.exit_codes`) unless `exit_code` says otherwise (1: a model, an input or
    an output that cannot be found, read or written)."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def quiet_hub() -> None:
    """No progress bars or hub chatter on the console of a CLI (results go to stdout)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


PRECISION_HELP = (
    "image tower precision on a CPU: fp32, bf16 (torch, a bfloat16 copy of the tower), int8 "
    "(onnxruntime, int8 weights) or "
    "auto = fp32 unless check-precision passed a faster one for this model and the CPU has its "
    "instructions (docs/PRECISION.md) (default: %(default)s)"
)


def add_clip_args(
    parser: argparse.ArgumentParser, recorded_model: bool = False, precision: bool = True
) -> None:
    """--model/--device/--dtype and the image-tower backend options for CLIP-based commands
    (`recorded_model`: the model defaults to the one the searched embeddings were computed with;
    `precision`: add --precision, which check-precision defines its own way)."""
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
    if precision:
        parser.add_argument(
            "--precision", default="auto", choices=("auto", "fp32", "bf16", "int8"), help=PRECISION_HELP
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
        raise CliError(f"cannot read image '{p}': no such file", EXIT_FAILED)
    data = np.fromfile(p, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise CliError(f"cannot read image '{p}': not an image OpenCV can decode", EXIT_FAILED)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_images(paths: Sequence[str | Path]) -> list[np.ndarray]:
    """All images, or CliError for the first unreadable one (before any model is loaded)."""
    if not paths:
        raise CliError("no images given")
    return [read_image(p) for p in paths]


def engine_options(args: argparse.Namespace, **extra) -> EngineOptions:
    """The engine options of a command's flags (`core.engine_options`, the one place that builds
    engines), checked — backend options (BackendError) and the model (ModelLoadError) — in a second,
    before torch is imported."""
    from av_scene_vlm.core.engine_options import EngineOptions

    options = EngineOptions.from_values(vars(args), **extra)
    options.check()
    return options


def make_engine(args: argparse.Namespace, tasks=(), templates=None, **extra):  # -> ZeroShotEngine
    """Load the CLIP engine for a command; a missing model becomes a CliError."""
    quiet_hub()
    from av_scene_vlm.core.models import ModelLoadError
    from av_scene_vlm.core.tasks import TaskError

    try:
        return engine_options(args, **extra).build(tasks, templates)
    except ModelLoadError as exc:  # 1, or 2 for a backend option (BackendError)
        raise CliError(str(exc), model_error_code(exc)) from None
    except TaskError as exc:
        raise CliError(str(exc)) from None


def make_captioner(**values):  # -> Captioner
    """Load the captioner for a command from `values` (CaptionerOptions fields); a missing model, bad
    bounds or an unusable device become a CliError."""
    quiet_hub()
    from av_scene_vlm.core.engine_options import CaptionerOptions
    from av_scene_vlm.core.models import ModelLoadError

    options = CaptionerOptions.from_values(values)
    try:
        options.check()  # a missing model fails in a second, before torch is imported
        return options.build()
    except ModelLoadError as exc:  # missing model, or not a Qwen2.5-VL checkpoint
        raise CliError(str(exc), EXIT_FAILED) from None
    except ValueError as exc:  # bad pixel bounds / token budget
        raise CliError(str(exc)) from None
    except RuntimeError as exc:  # e.g. an unparsable --device string
        raise CliError(f"cannot use device '{options.device}': {exc}") from None


def query_vector(engine, query: str | None, image: np.ndarray | None) -> np.ndarray:
    """The query's embedding: of the text, or of the example image."""
    return engine.encode_images([image])[0] if image is not None else engine.encode_texts([query.strip()])[0]


def run_guarded(func, args: argparse.Namespace) -> int:
    """Run a command body, turning CliError into a one-line message and its exit code."""
    try:
        return int(func(args) or 0)
    except CliError as exc:
        print(f"av-scene-vlm {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code


def add_task_arguments(parser: argparse.ArgumentParser, config_help: str | None = None) -> None:
    """--config/--labels/--template, read by `tasks_and_templates`."""
    parser.add_argument(
        "--config",
        help=config_help
        or "YAML with tasks: the node's params file or a bare task mapping "
        "(default: the package's config/scene_vlm.yaml when --labels is not given)",
    )
    parser.add_argument(
        "--labels", nargs="+", metavar="LABEL", help="candidate labels (task 'default'), e.g. car truck bus"
    )
    parser.add_argument(
        "--template",
        action="append",
        metavar="T",
        help="prompt template with '{}' for the label; repeat to ensemble "
        "(default: the config's `template` list, else 'a photo of a {}.')",
    )


def config_templates(path: str | Path) -> list[str] | None:
    """The `template` list of a task file or params file, if it names one."""
    from av_scene_vlm.core.tasks import read_task_file

    templates = read_task_file(path).templates
    return list(templates) if templates else None


def tasks_and_templates(
    args: argparse.Namespace, *, use_default_config: bool = True
) -> tuple[list, list[str] | None]:
    """Tasks from --config and --labels (`core.tasks.collect_tasks`: the config's tasks first), and the
    templates: --template, else the config's. Without either option the package's config is used
    (`use_default_config`) or CliError asks for one."""
    from av_scene_vlm.core.tasks import TaskError, read_tasks

    config = getattr(args, "config", None)
    labels = getattr(args, "labels", None) or []
    if not labels and not config:
        config = default_config() if use_default_config else None
        if config is None:
            raise CliError("give --labels LABEL LABEL... or --config FILE")
    try:
        found = read_tasks(tasks_file=config, labels=labels)
    except TaskError as exc:
        raise CliError(str(exc)) from None
    if not found.tasks:
        raise CliError(f"no tasks in '{config}'; give --labels or a config with tasks")
    templates = getattr(args, "template", None) or (list(found.templates) if found.templates else None)
    return list(found.tasks), templates


def add_events_arg(parser: argparse.ArgumentParser, what: str) -> None:
    """--events FILE (read by `events_file`)."""
    parser.add_argument(
        "--events",
        metavar="FILE",
        help=f"scene events YAML (docs/SCENE_EVENTS.md, e.g. config/scene_events.yaml): {what}",
    )


def events_file(path: str | None, tasks: list) -> tuple:
    """The --events file's events, checked against the tasks before the model loads."""
    from av_scene_vlm.core.events import EventError, check_events, read_events

    if not path:
        return ()
    try:
        events = read_events(events_file=path)
        check_events(events, tasks)
    except EventError as exc:
        raise CliError(str(exc)) from None
    if not events:
        raise CliError(f"events file '{path}' defines no events")
    return events
