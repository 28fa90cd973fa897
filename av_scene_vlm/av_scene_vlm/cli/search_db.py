"""`av-scene-vlm search --db DB "text" | --image IMG`: the fleet index half of the search command.

Why a module of its own: it shares the command line with one-bag search but nothing else — the
model comes from the index, the hits from LanceDB, and the output can be JSON lines or a contact
sheet of the stored thumbnails (no bag has to be read again).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from av_scene_vlm.cli.common import CliError, make_engine, read_image


def format_hits(hits) -> list[str]:
    """Rows `rank score bag topic stamp frame_id`, columns aligned."""
    from av_scene_vlm.core.fleet.sheet import stamp_text

    header = ("rank", "score", "bag", "topic", "stamp", "frame_id")
    rows = [
        (
            str(i),
            f"{h.score:.4f}",
            Path(h.bag).name,
            h.topic,
            stamp_text(h.stamp).replace(" ", "T", 1),
            h.frame_id,
        )
        for i, h in enumerate(hits, 1)
    ]
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    return ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]


def run_db(args: argparse.Namespace) -> int:
    """Search the index at --db by QUERY (text) or --image; print a table or JSON lines."""
    from av_scene_vlm.core.fleet import FleetError, FleetIndex, model_key, search_index

    query = args.query if args.query is not None else args.bag
    if args.query is not None and args.bag is not None:
        raise CliError("with --db give only QUERY (no BAG)")
    if (query is None) == (args.image is None):
        raise CliError("give either a QUERY or --image IMG")
    if query is not None and not query.strip():
        raise CliError("the search query is empty")
    if args.top_k < 1:
        raise CliError("--top-k must be >= 1")
    if args.out and Path(args.out).suffix.lower() != ".png":
        raise CliError(f"--out '{args.out}' must end in .png")
    if args.no_embeddings:
        raise CliError("--no-embeddings is for one bag; an index searches its stored embeddings")
    where = args.where
    if args.topics:  # the same restriction as for one bag, as a filter on the topic column
        quoted = ", ".join("'" + t.replace("'", "''") + "'" for t in args.topics)
        where = f"topic IN ({quoted})" + (f" AND ({where})" if where else "")
    image = read_image(args.image) if args.image else None
    try:
        index = FleetIndex.open(args.db)
    except FleetError as exc:
        raise CliError(str(exc)) from None
    recorded = index.info.model_id
    if args.model is not None and model_key(args.model) != recorded:
        raise CliError(
            f"index '{args.db}' holds embeddings of '{recorded}'; searching it with '{args.model}' would "
            "compare embeddings of two models. Leave out --model"
        )
    args.model = recorded
    engine = make_engine(args)
    vector = (
        engine.encode_images([image])[0] if image is not None else engine.encode_texts([query.strip()])[0]
    )
    try:
        hits = search_index(
            index, vector, top_k=args.top_k, where=args.where, exact=True if args.exact else None
        )
    except FleetError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        for h in hits:
            print(json.dumps(h.as_json(), ensure_ascii=False))
    else:
        for line in format_hits(hits):
            print(line)
    if args.out and hits:
        from av_scene_vlm.core.fleet.sheet import contact_sheet

        w, h = contact_sheet(hits, args.out)
        if not args.json:
            print(f"saved {args.out} ({w}x{h})")
    return 0
