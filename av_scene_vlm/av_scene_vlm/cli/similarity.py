"""`av-scene-vlm similarity`: the CLIP notebook's text-image cosine matrix, as a picture and/or JSON."""

from __future__ import annotations

import argparse
import json

from av_scene_vlm.cli.common import (
    EXIT_FAILED,
    CliError,
    add_clip_args,
    make_engine,
    read_images,
    run_guarded,
)
from av_scene_vlm.cli.plot import check_dpi, check_out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Cosine similarity of every image with every text (raw cosines, no templates). "
        "Give --out PNG for the picture, --json for the matrix on stdout, or both "
        "(with --json, stdout holds only the JSON)."
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (jpg, png, ...)")
    parser.add_argument(
        "--texts",
        nargs="+",
        metavar="TEXT",
        help='texts to compare, e.g. "a truck on a highway" "a baby crossing the road"',
    )
    add_clip_args(parser)
    parser.add_argument(
        "--out", metavar="PNG", help="where to write the picture (PNG); optional when --json is given"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {"images": [...], "texts": [...], "cosine": [[...], ...]} (one row per image)',
    )
    parser.add_argument("--dpi", type=int, default=100, help="pixels per inch (default: %(default)s)")


def _run(args: argparse.Namespace) -> int:
    from av_scene_vlm.core.visualize import plot_similarity

    texts = list(args.texts or [])
    if not texts:
        raise CliError('give --texts TEXT [TEXT ...], e.g. --texts "a truck on a highway" "a red car"')
    if any(not t.strip() for t in texts):
        raise CliError("--texts must not contain empty texts")
    if not args.out and not args.json:
        raise CliError("give --out PNG and/or --json")
    check_dpi(args.dpi)
    out = check_out(args.out) if args.out else None
    images = read_images(args.images)
    engine = make_engine(args)
    sim = engine.similarity(images, texts)
    if out is not None:
        try:
            plot_similarity(images, texts, sim, out=out, dpi=args.dpi)
        except OSError as exc:
            raise CliError(f"cannot write '{out}': {exc.strerror or exc}", EXIT_FAILED) from None
    if args.json:
        obj = {
            "images": list(args.images),
            "texts": texts,
            "cosine": [[float(v) for v in row] for row in sim],
        }
        print(json.dumps(obj))
    else:
        print(out)
    return 0


def run(args: argparse.Namespace) -> int:
    return run_guarded(_run, args)
