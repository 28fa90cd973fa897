"""`av-scene-vlm plot`: the notebook's "plot images with their labels" — a grid titled "truck (0.99)"."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from av_scene_vlm.cli.common import (
    EXIT_FAILED,
    CliError,
    add_clip_args,
    add_task_arguments,
    make_engine,
    read_images,
    run_guarded,
    tasks_and_templates,
)

BATCH = 16  # images per engine call: bounded memory for long lists of large images


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (jpg, png, ...)")
    add_task_arguments(
        parser, config_help="YAML with tasks; each task's result becomes one title line per image"
    )
    add_clip_args(parser)
    parser.add_argument("--out", required=True, metavar="PNG", help="where to write the grid (PNG)")
    parser.add_argument(
        "--cols", type=int, help="panels per row (default: ceil(sqrt(number of images)), at most 6)"
    )
    parser.add_argument(
        "--panel-size", type=float, default=3.0, help="panel side in inches (default: %(default)s)"
    )
    parser.add_argument("--dpi", type=int, default=100, help="pixels per inch (default: %(default)s)")


def check_out(path: str) -> Path:
    """Fail before any model loads when the output cannot be written (exit code 1, as for a write
    that fails later)."""
    out = Path(path)
    parent = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise CliError(f"cannot write '{out}': it is a directory", EXIT_FAILED)
    if not parent.is_dir():
        raise CliError(f"cannot write '{out}': directory '{parent}' does not exist", EXIT_FAILED)
    if not os.access(parent, os.W_OK):
        raise CliError(f"cannot write '{out}': directory '{parent}' is not writable", EXIT_FAILED)
    return out


def check_dpi(dpi: int) -> None:
    if not 10 <= dpi <= 600:
        raise CliError(f"--dpi must be between 10 and 600, got {dpi}")


def title_for(result) -> str:
    """ "truck (0.99)" for a plain label list; one "task: label (p)" line per task otherwise."""
    from av_scene_vlm.core.tasks import DEFAULT_TASK

    lines = []
    for t in result.tasks:
        text = f"{t.label} ({t.probability:.2f})"
        lines.append(text if t.task == DEFAULT_TASK else f"{t.task}: {text}")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    from av_scene_vlm.core.visualize import plot_grid

    if args.cols is not None and args.cols < 1:
        raise CliError(f"--cols must be at least 1, got {args.cols}")
    if not 0 < args.panel_size <= 20:
        raise CliError(f"--panel-size must be in (0, 20] inches, got {args.panel_size}")
    check_dpi(args.dpi)
    out = check_out(args.out)
    tasks, templates = tasks_and_templates(args, use_default_config=False)
    images = read_images(args.images)
    engine = make_engine(args, tasks, templates)
    results = []
    for i in range(0, len(images), BATCH):
        results += engine.classify(images[i : i + BATCH])
    titles = [title_for(r) for r in results]
    try:
        plot_grid(images, titles, out=out, cols=args.cols, panel_size=args.panel_size, dpi=args.dpi)
    except OSError as exc:
        raise CliError(f"cannot write '{out}': {exc.strerror or exc}") from None
    print(out)
    return 0


def run(args: argparse.Namespace) -> int:
    return run_guarded(_run, args)
