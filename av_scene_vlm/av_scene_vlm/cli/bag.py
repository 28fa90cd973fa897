"""`av-scene-vlm bag IN_BAG OUT_BAG`: classify every frame of a recorded drive, offline, without ROS.

Why a CLI: labelling a drive should not need a running graph or real time; the output bag carries the
results on the live node's topics, so it replays like a live run. Tasks come from the vehicle config
(`config/scene_vlm.yaml`, the same file the node loads) unless --labels/--config say otherwise.
Exit codes: 0 ok, 1 the output could not be written (disk full, read-only directory), 2 bad
input/output/option/model (one line on stderr either way, nothing partial written).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from av_scene_vlm.cli.common import (
    EXIT_FAILED,
    CliError,
    add_clip_args,
    add_events_arg,
    add_max_frame_pixels_arg,
    add_task_arguments,
    config_templates,  # noqa: F401 - the benchmarks read a config's templates through this module
    events_file,
    make_captioner,
    make_engine,
    max_frame_pixels,
    run_guarded,
    tasks_and_templates,
)
from av_scene_vlm.core.models import DEFAULT_CAPTION_MODEL


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the bag options on `parser`."""
    parser.add_argument("in_bag", metavar="IN_BAG", help="input rosbag2 (directory, .db3 or .mcap)")
    parser.add_argument("out_bag", metavar="OUT_BAG", help="output bag directory (must not exist)")
    add_task_arguments(parser)
    parser.add_argument("--topics", nargs="+", metavar="TOPIC", help="image topics (default: all)")
    parser.add_argument("--batch-size", type=int, default=8, help="frames per engine call (default: 8)")
    parser.add_argument(
        "--caption-every",
        type=float,
        default=0.0,
        metavar="SEC",
        help="caption each camera every SEC seconds of bag time with --caption-model (default: off)",
    )
    parser.add_argument(
        "--caption-model",
        default=DEFAULT_CAPTION_MODEL,
        help="Qwen2.5-VL hub id or local directory (default: %(default)s)",
    )
    parser.add_argument(
        "--summary",
        metavar="PATH",
        help="per-frame summary, .csv or .json (default: OUT_BAG.csv next to the output bag)",
    )
    parser.add_argument("--no-summary", action="store_true", help="write no summary file")
    add_events_arg(
        parser, "SceneEvent messages on <ns>/events and <ns>/active_events, intervals in the summary"
    )
    parser.add_argument(
        "--storage", choices=("sqlite3", "mcap"), help="output storage (default: the input's)"
    )
    add_max_frame_pixels_arg(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_clip_args(parser)


def default_summary(out_bag: str | Path) -> Path:
    """OUT_BAG.csv beside the bag directory (inside it, ros2 bag tools would see a stray file)."""
    out = Path(out_bag)
    return out.with_name(out.name + ".csv")


def _run(args: argparse.Namespace) -> int:
    from av_scene_vlm.core.bag import BagError, InputError, OutputError, process_bag

    in_bag, out_bag = Path(args.in_bag), Path(args.out_bag)
    summary = None if args.no_summary else Path(args.summary) if args.summary else default_summary(out_bag)
    # Cheap checks first: a typo must not cost a model load.
    if not in_bag.exists():
        raise CliError(f"input bag '{in_bag}' does not exist", EXIT_FAILED)
    if out_bag.exists():
        raise CliError(f"output '{out_bag}' exists already; remove it or choose another name")
    if summary is not None and summary.exists():
        raise CliError(f"summary file '{summary}' exists already; remove it, pass --summary or --no-summary")
    if summary is not None and summary.suffix.lower() not in (".csv", ".json"):
        raise CliError(f"summary file '{summary}' must end in .csv or .json")
    if args.batch_size < 1:
        raise CliError(f"--batch-size must be >= 1, got {args.batch_size}")
    max_pixels = max_frame_pixels(args)
    tasks, templates = tasks_and_templates(args)
    events = events_file(args.events, tasks)
    engine = make_engine(args, tasks, templates)
    captioner = None
    if args.caption_every > 0:
        captioner = make_captioner(model=args.caption_model, device=args.device)
    try:
        s = process_bag(
            in_bag,
            out_bag,
            engine,
            topics=args.topics,
            batch_size=args.batch_size,
            captioner=captioner,
            caption_every=args.caption_every,
            progress=not args.no_progress,
            summary_path=summary,
            storage=args.storage,
            max_frame_pixels=max_pixels,
            events=events,
        )
    except (OutputError, InputError) as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    except BagError as exc:
        raise CliError(str(exc)) from None
    per_topic = ", ".join(f"{t} {n}" for t, n in s.topics.items())
    print(f"frames: {s.frames} ({per_topic}); bad frames: {s.bad_frames}; captions: {s.captions}")
    if s.skipped_topics:
        print(f"skipped (same camera as a processed topic): {', '.join(s.skipped_topics)}")
    if events:
        ended = sum(1 for e in s.events if e["end"] is not None)
        print(f"events: {len(s.events)} started, {ended} ended ({len(s.events) - ended} open at the end)")
    print(f"time: {s.seconds:.2f} s, {s.fps:.1f} frames/s, model {s.model_id}")
    print(f"output: {s.output} ({s.storage}, {s.messages} messages copied + results)")
    if s.summary_path is not None:
        print(f"summary: {s.summary_path}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Entry point for `av-scene-vlm bag`."""
    return run_guarded(_run, args)
