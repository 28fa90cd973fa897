"""`av-scene-vlm search BAG "a pedestrian crossing at night"`: find frames of a drive by a sentence.

Why: finding the few interesting seconds of an hours-long drive is the point of recording it. A bag
processed by `av-scene-vlm bag` (or recorded from the live node with embeddings) is searched through
its stored embeddings in seconds; a raw bag has its frames decoded and encoded on the fly.
Exit codes: 0 ok, 2 bad bag/option/model (one line on stderr).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from av_scene_vlm.cli.common import CliError, add_clip_args, make_engine, run_guarded


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the search options on `parser`."""
    parser.add_argument("bag", metavar="BAG", help="rosbag2 (directory, .db3 or .mcap), raw or processed")
    parser.add_argument(
        "query", metavar="QUERY", help='what to look for, e.g. "a pedestrian crossing at night"'
    )
    parser.add_argument("--top-k", type=int, default=10, help="number of frames to list (default: 10)")
    parser.add_argument("--topics", nargs="+", metavar="TOPIC", help="image topics to search (default: all)")
    parser.add_argument("--batch-size", type=int, default=16, help="frames per encode (default: 16)")
    parser.add_argument(
        "--no-embeddings",
        action="store_true",
        help="ignore stored embeddings and encode the images again",
    )
    parser.add_argument("--out", metavar="PNG", help="also save the matches as a thumbnail grid")
    add_clip_args(parser)


def format_table(matches) -> list[str]:
    """Rows `rank topic stamp frame_id score`, columns aligned."""
    header = ("rank", "topic", "stamp", "frame_id", "score")
    rows = [
        (str(i), m.topic, m.stamp_str, m.frame_id or "-", f"{m.score:.4f}") for i, m in enumerate(matches, 1)
    ]
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    return ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]


def _run(args: argparse.Namespace) -> int:
    from av_scene_vlm.core.bag import BagError, search_bag

    if not Path(args.bag).exists():
        raise CliError(f"bag '{args.bag}' does not exist")
    if not args.query.strip():
        raise CliError("the search query is empty")
    if args.top_k < 1 or args.batch_size < 1:
        raise CliError("--top-k and --batch-size must be >= 1")
    if args.out and Path(args.out).suffix.lower() != ".png":
        raise CliError(f"--out '{args.out}' must end in .png")
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
