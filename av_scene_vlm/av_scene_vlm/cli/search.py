"""`av-scene-vlm search BAG "a pedestrian crossing at night"`: find frames of a drive by a sentence;
`av-scene-vlm search --db DB "..."` (or `--image IMG`): the same over a whole fleet's index.

Why: finding the few interesting seconds of an hours-long drive is the point of recording it. A bag
processed by `av-scene-vlm bag` (or recorded from the live node with embeddings) is searched through
its stored embeddings in seconds; a raw bag has its frames decoded and encoded on the fly. An index
built by `av-scene-vlm index` is searched in its vector store, filtered on its columns (`--where`).
Both use the model their embeddings came from unless `--model` says otherwise.
Exit codes: 0 ok, 2 bad bag/index/option/model (one line on stderr).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from av_scene_vlm.cli.common import CliError, add_clip_args, make_engine, run_guarded
from av_scene_vlm.core.models import DEFAULT_CLIP_MODEL


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the search options on `parser`."""
    parser.add_argument(
        "bag",
        nargs="?",
        metavar="BAG",
        help="rosbag2 (directory, .db3 or .mcap), raw or processed; not with --db",
    )
    parser.add_argument(
        "query", nargs="?", metavar="QUERY", help='what to look for, e.g. "a pedestrian crossing at night"'
    )
    parser.add_argument("--db", help="search this fleet index (from `av-scene-vlm index`) instead of one bag")
    parser.add_argument(
        "--image", metavar="IMG", help="with --db: find frames like this image (query by example)"
    )
    parser.add_argument(
        "--where", metavar="SQL", help="with --db: filter on columns, e.g. \"road_user = 'pedestrian'\""
    )
    parser.add_argument(
        "--json", action="store_true", help="with --db: one JSON object per match, best first"
    )
    parser.add_argument("--exact", action="store_true", help="with --db: exact search even with an ANN index")
    parser.add_argument("--top-k", type=int, default=10, help="number of frames to list (default: 10)")
    parser.add_argument("--topics", nargs="+", metavar="TOPIC", help="image topics to search (default: all)")
    parser.add_argument("--batch-size", type=int, default=16, help="frames per encode (default: 16)")
    parser.add_argument(
        "--no-embeddings",
        action="store_true",
        help="ignore stored embeddings and encode the images again",
    )
    parser.add_argument(
        "--out", metavar="PNG", help="also save the matches as a thumbnail grid (contact sheet)"
    )
    add_clip_args(parser, recorded_model=True)


def format_table(matches) -> list[str]:
    """Rows `rank topic stamp frame_id score`, columns aligned."""
    header = ("rank", "topic", "stamp", "frame_id", "score")
    rows = [
        (str(i), m.topic, m.stamp_str, m.frame_id or "-", f"{m.score:.4f}") for i, m in enumerate(matches, 1)
    ]
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    return ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]


def _run(args: argparse.Namespace) -> int:
    if args.db:
        from av_scene_vlm.cli.search_db import run_db

        return run_db(args)
    if args.image or args.where or args.json or args.exact:
        raise CliError("--image, --where, --json and --exact search an index: give --db DB")
    if args.bag is None or args.query is None:
        raise CliError("give BAG and QUERY, or --db DB with QUERY or --image IMG")
    from av_scene_vlm.core.bag import BagError, recorded_model, search_bag

    if not Path(args.bag).exists():
        raise CliError(f"bag '{args.bag}' does not exist")
    if not args.query.strip():
        raise CliError("the search query is empty")
    if args.top_k < 1 or args.batch_size < 1:
        raise CliError("--top-k and --batch-size must be >= 1")
    if args.out and Path(args.out).suffix.lower() != ".png":
        raise CliError(f"--out '{args.out}' must end in .png")
    if args.model is None:
        try:
            args.model = recorded_model(args.bag) or DEFAULT_CLIP_MODEL
        except BagError as exc:
            raise CliError(str(exc)) from None
    engine = make_engine(args)
    try:
        matches = search_bag(
            args.bag,
            args.query,
            engine,
            top_k=args.top_k,
            topics=args.topics,
            batch_size=args.batch_size,
            use_embeddings=False if args.no_embeddings else None,
        )
        for line in format_table(matches):
            print(line)
        if args.out and matches:
            from av_scene_vlm.core.visualize import plot_grid

            images = [m.image() for m in matches]
            titles = [f"#{i} {m.score:.3f}\n{m.topic}\n{m.stamp_str}" for i, m in enumerate(matches, 1)]
            w, h = plot_grid(images, titles, out=args.out)
            print(f"saved {args.out} ({w}x{h})")
    except BagError as exc:
        raise CliError(str(exc)) from None
    return 0


def run(args: argparse.Namespace) -> int:
    """Entry point for `av-scene-vlm search`."""
    return run_guarded(_run, args)
