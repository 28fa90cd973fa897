"""`av-scene-vlm search --db DB "text" | --image IMG`: the fleet index half of the search command.

Why a module of its own: it shares the command line with one-bag search but nothing else — the
model comes from the index, the hits from LanceDB, and the output can be JSON lines or a contact
sheet of the stored thumbnails (no bag has to be read again).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from av_scene_vlm.cli.common import CliError, make_engine, query_vector
from av_scene_vlm.core.exit_codes import EXIT_FAILED


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


def run_db(args: argparse.Namespace, query: str | None, image: np.ndarray | None) -> int:
    """Search the index at --db by QUERY (text) or --image (checked by the caller), within --event's
    intervals when given (alone: no model is loaded); print a table or JSON lines."""
    from av_scene_vlm.core.fleet import FleetError, FleetIndex, model_key, search_index

    if args.no_embeddings:
        raise CliError("--no-embeddings is for one bag; an index searches its stored embeddings")
    where = args.where
    if args.topics:  # the same restriction as for one bag, as a filter on the topic column
        quoted = ", ".join("'" + t.replace("'", "''") + "'" for t in args.topics)
        where = f"topic IN ({quoted})" + (f" AND ({where})" if where else "")
    try:
        index = FleetIndex.open(args.db)
    except FleetError as exc:  # no index there, or the `fleet` extra missing: as `index` says it, 1
        raise CliError(str(exc), EXIT_FAILED) from None
    recorded = index.info.model_id
    if args.model is not None and model_key(args.model) != recorded:
        raise CliError(
            f"index '{args.db}' holds embeddings of '{recorded}'; searching it with '{args.model}' would "
            "compare embeddings of two models. Leave out --model"
        )
    args.model = recorded
    vector = None if query is None and image is None else query_vector(make_engine(args), query, image)
    try:
        hits = search_index(
            index, vector, top_k=args.top_k, where=where, exact=True if args.exact else None, event=args.event
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
