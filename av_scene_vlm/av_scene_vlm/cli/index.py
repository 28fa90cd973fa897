"""`av-scene-vlm index BAG_OR_DIR... --db DB`: every frame of many drives into one searchable index.

Why: finding "a child crossing the road at night" across a fleet's drives needs every frame's
embedding in a real vector store, built incrementally as drives arrive, on one machine or a Ray
cluster (`--ray`). Tasks come from the vehicle config like `bag`; their top labels become columns
for `search --where`. Exit codes: 0 ok, 1 some bags could not be read (the others are indexed)
or the index could not be written (disk full, read-only directory: one line on stderr, the bag
being indexed leaves no rows a search sees), 2 bad option/model/index (one line on stderr).
"""

from __future__ import annotations

import argparse

from av_scene_vlm.cli.common import (
    EXIT_FAILED,
    CliError,
    add_clip_args,
    add_events_arg,
    add_max_frame_pixels_arg,
    add_task_arguments,
    engine_options,
    events_file,
    max_frame_pixels,
    quiet_hub,
    run_guarded,
    tasks_and_templates,
)
from av_scene_vlm.core.exit_codes import model_error_code
from av_scene_vlm.core.models import DEFAULT_CAPTION_MODEL


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the index options on `parser`."""
    parser.add_argument(
        "bags", nargs="+", metavar="BAG_OR_DIR", help="bags, or directories searched for bags"
    )
    parser.add_argument("--db", required=True, help="index: a local directory or an object-store URI")
    add_task_arguments(parser)
    parser.add_argument("--topics", nargs="+", metavar="TOPIC", help="image topics (default: all)")
    parser.add_argument("--batch-size", type=int, default=16, help="frames per engine call (default: 16)")
    parser.add_argument(
        "--caption-every",
        type=float,
        metavar="SEC",
        help="caption each camera every SEC seconds of bag time with --caption-model (default: off)",
    )
    parser.add_argument("--caption-model", default=DEFAULT_CAPTION_MODEL, help="(default: %(default)s)")
    parser.add_argument(
        "--build-index",
        action="store_true",
        help="build the ANN index now (default: automatically once the index has 100,000 frames)",
    )
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run on Ray Data: a cluster's ADDRESS (e.g. ray://head:10001, auto), or none for this machine",
    )
    parser.add_argument(
        "--num-gpus", type=float, default=0.0, help="with --ray: GPUs in all, one model actor each"
    )
    parser.add_argument(
        "--actors", type=int, default=1, help="with --ray and no GPUs: model actors (default: 1)"
    )
    add_events_arg(parser, "each bag's event intervals, for `search --db DB --event NAME`")
    add_max_frame_pixels_arg(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_clip_args(parser)


def _run(args: argparse.Namespace) -> int:
    from av_scene_vlm.core.fleet import (
        EngineSpec,
        FleetError,
        RayOptions,
        StorageError,
        find_bags,
        index_bags,
    )
    from av_scene_vlm.core.fleet.errors import require
    from av_scene_vlm.core.models import ModelLoadError

    if args.batch_size < 1 or args.actors < 1 or args.num_gpus < 0:
        raise CliError("--batch-size and --actors must be >= 1, --num-gpus >= 0")
    if args.ray is None and (args.num_gpus or args.actors != 1):
        raise CliError("--num-gpus and --actors need --ray")
    max_pixels = max_frame_pixels(args)
    try:
        require("lancedb")
        if args.ray is not None:
            require("ray")
        bags = find_bags(args.bags)  # a typo fails before any model loads
    except FleetError as exc:  # a missing extra, a folder that does not exist
        raise CliError(str(exc), EXIT_FAILED) from None
    if not bags:
        found = "no bags (.mcap, .db3 or directories with metadata.yaml) under " + " ".join(args.bags)
        raise CliError(found, EXIT_FAILED)
    tasks, templates = tasks_and_templates(args)
    events = events_file(args.events, tasks)
    quiet_hub()
    captions = args.caption_every is not None
    try:
        spec = EngineSpec.create(
            args.model,
            tasks=tasks,
            templates=templates,
            caption_model=args.caption_model if captions else None,
            **engine_options(args).engine_kwargs(),
        )
        if spec.caption is not None:
            spec.caption.check()
        ray = None
        if args.ray is not None:
            ray = RayOptions(address=args.ray or None, num_gpus=args.num_gpus, actors=args.actors)
        s = index_bags(
            bags,
            args.db,
            spec,
            topics=args.topics,
            caption_every=args.caption_every,
            batch_size=args.batch_size,
            build_index=True if args.build_index else None,
            progress=not args.no_progress,
            ray=ray,
            max_frame_pixels=max_pixels,
            events=events,
        )
    except StorageError as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    except ModelLoadError as exc:
        raise CliError(str(exc), model_error_code(exc)) from None
    except FleetError as exc:  # e.g. other tasks or another model than the index was built with
        raise CliError(str(exc)) from None
    print(
        f"indexed {len(s.indexed)} bags ({s.frames} frames, {s.bad_frames} bad) in {s.seconds:.1f} s, "
        f"{s.fps:.1f} frames/s; skipped {len(s.skipped)} already indexed; failed {len(s.failed)}"
    )
    for bag, why in s.failed.items():
        print(f"failed: {bag}: {why}")
    ann = "ANN (IVF-PQ)" if s.ann_index else "exact search"
    print(f"index: {s.db}: {s.rows} frames, model {s.model_id}, {ann}")
    return 1 if s.failed else 0


def run(args: argparse.Namespace) -> int:
    """Entry point for `av-scene-vlm index`."""
    return run_guarded(_run, args)
