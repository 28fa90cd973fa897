"""`av-scene-vlm search BAG "a pedestrian crossing at night"`: find frames of a drive by a sentence;
`av-scene-vlm search --db DB "..."`: the same over a whole fleet's index. One interface for both:
a QUERY or `--image IMG` (query by example), `--where` on the frames' columns, `--top-k`, `--json`
(one object per match, the same keys for both), `--out` (a contact sheet).

Why: finding the few interesting seconds of an hours-long drive is the point of recording it. A bag
processed by `av-scene-vlm bag` (or recorded from the live node with embeddings) is searched through
its stored embeddings in seconds; a raw bag has its frames decoded and encoded on the fly; its
recorded results give each frame the columns an index row has (core.bag.where). An index built by
`av-scene-vlm index` is searched in its vector store. Both use the model their embeddings came from
unless `--model` says otherwise.
Exit codes: 0 ok, 2 bad bag/index/option/model (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from av_scene_vlm.cli.common import (
    EXIT_FAILED,
    CliError,
    add_clip_args,
    make_engine,
    query_vector,
    read_image,
    run_guarded,
)
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
    parser.add_argument("--image", metavar="IMG", help="find frames like this image (query by example)")
    parser.add_argument(
        "--where",
        metavar="SQL",
        help="filter on the frames' columns (topic, stamp, frame_id, bag_time, caption, <task>, "
        "<task>_prob), e.g. \"road_user = 'pedestrian'\"; a bag has task columns once processed",
    )
    parser.add_argument(
        "--event",
        metavar="NAME",
        help="only frames inside this scene event's intervals (an index built with `index --events`); "
        "alone it lists them in time order",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per match, best first")
    parser.add_argument(
        "--exact",
        action="store_true",
        help="exact search even where an index has an ANN index (a bag: always)",
    )
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


def _query(args: argparse.Namespace) -> tuple[str | None, np.ndarray | None]:
    """The QUERY or the --image pixels (exactly one), and the options both searches share, checked
    before any model loads."""
    if args.db:
        if args.query is not None and args.bag is not None:
            raise CliError("with --db give only QUERY (no BAG)")
        query = args.query if args.query is not None else args.bag
    else:
        if args.bag is None:
            raise CliError("give BAG and QUERY (or --image IMG), or --db DB with QUERY or --image IMG")
        if not Path(args.bag).exists():
            raise CliError(f"bag '{args.bag}' does not exist", EXIT_FAILED)
        query = args.query
    if args.event is not None and not args.db:
        raise CliError("--event searches a fleet index: give --db DB (built with `index --events`)")
    if query is not None and args.image is not None:
        raise CliError("give either a QUERY or --image IMG")
    if query is None and args.image is None and args.event is None:
        raise CliError("give either a QUERY or --image IMG (or --event NAME with --db)")
    if query is not None and not query.strip():
        raise CliError("the search query is empty")
    if args.top_k < 1 or args.batch_size < 1:
        raise CliError("--top-k and --batch-size must be >= 1")
    if args.out and Path(args.out).suffix.lower() != ".png":
        raise CliError(f"--out '{args.out}' must end in .png")
    return query, read_image(args.image) if args.image else None


def match_json(bag: str, bag_hash: str, m) -> dict:
    """A bag's match as the `--json` object of an index hit (`core.fleet.Hit.as_json`)."""
    return {
        "bag": bag,
        "bag_hash": bag_hash,
        "topic": m.topic,
        "stamp": m.stamp_ns,
        "frame_id": m.frame_id,
        "bag_time": m.timestamp,
        "score": round(m.score, 6),
        "labels": m.labels,
        "caption": m.caption,
    }


def _run(args: argparse.Namespace) -> int:
    query, image = _query(args)
    if args.db:
        from av_scene_vlm.cli.search_db import run_db

        return run_db(args, query, image)
    from av_scene_vlm.core.bag import BagError, InputError, recorded_model, search_bag

    if args.model is None:
        try:
            args.model = recorded_model(args.bag) or DEFAULT_CLIP_MODEL
        except InputError as exc:
            raise CliError(str(exc), EXIT_FAILED) from None
        except BagError as exc:
            raise CliError(str(exc)) from None
    engine = make_engine(args)
    try:
        matches = search_bag(
            args.bag,
            query,
            engine,
            top_k=args.top_k,
            topics=args.topics,
            batch_size=args.batch_size,
            use_embeddings=False if args.no_embeddings else None,
            vector=query_vector(engine, query, image),
            where=args.where,
        )
        if args.json:
            from av_scene_vlm.core.fleet import FleetError, content_hash

            bag = str(Path(args.bag).resolve())
            try:
                bag_hash = content_hash(bag)
            except FleetError as exc:
                raise CliError(str(exc)) from None
            for m in matches:
                print(json.dumps(match_json(bag, bag_hash, m), ensure_ascii=False))
        else:
            for line in format_table(matches):
                print(line)
        if args.out and matches:
            from av_scene_vlm.core.visualize import plot_grid

            images = [m.image() for m in matches]
            titles = [f"#{i} {m.score:.3f}\n{m.topic}\n{m.stamp_str}" for i, m in enumerate(matches, 1)]
            w, h = plot_grid(images, titles, out=args.out)
            if not args.json:
                print(f"saved {args.out} ({w}x{h})")
    except InputError as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    except BagError as exc:
        raise CliError(str(exc)) from None
    return 0


def run(args: argparse.Namespace) -> int:
    """Entry point for `av-scene-vlm search`."""
    return run_guarded(_run, args)
