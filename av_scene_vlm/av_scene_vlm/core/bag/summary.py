"""The per-frame summary file of `process_bag` (.csv or .json): one row per classified frame."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BagError

if TYPE_CHECKING:
    from ..engine import FrameResult
    from .reading import Decoded


def summary_format(path: Path | None) -> str | None:
    """ "csv" or "json" from the file's suffix (None without a file); BagError for another suffix."""
    if path is None:
        return None
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("csv", "json"):
        raise BagError(f"summary file '{path}' must end in .csv or .json")
    return fmt


def task_tops(result: FrameResult) -> dict[str, dict]:
    """{task: {"label", "probability"}}: each task's top label (probability rounded to 1e-6)."""
    return {t.task: {"label": t.label, "probability": round(t.probability, 6)} for t in result.tasks}


def frame_row(topic: str, frame: Decoded, bag_time: int, result: FrameResult) -> dict:
    """The summary row of one classified frame (a caption is added by the caller when there is one)."""
    return {
        "topic": topic,
        "sec": frame.sec,
        "nanosec": frame.nanosec,
        "frame_id": frame.frame_id,
        "bag_time_ns": bag_time,
        "tasks": task_tops(result),
    }


def write_summary(path: Path, fmt: str, rows: list[dict], tasks: list[str], meta: dict) -> None:
    """Write `rows` as CSV (one column pair per task) or JSON (`meta` plus "frames")."""
    if fmt == "json":
        text = json.dumps({**meta, "frames": rows}, indent=1, ensure_ascii=False)
    else:
        buf = io.StringIO()
        cols = ["topic", "sec", "nanosec", "frame_id", "bag_time_ns"]
        cols += [c for t in tasks for c in (f"{t}.label", f"{t}.probability")]
        cols.append("caption")
        with_events = any("events" in r for r in rows)
        if with_events:  # the events open at each frame (the intervals are in the JSON summary)
            cols.append("events")
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            row = [r["topic"], r["sec"], r["nanosec"], r["frame_id"], r["bag_time_ns"]]
            for t in tasks:
                row += [r["tasks"][t]["label"], f"{r['tasks'][t]['probability']:.6f}"]
            row.append(r.get("caption", ""))
            if with_events:
                row.append(r.get("events", ""))
            w.writerow(row)
        text = buf.getvalue()
    path.write_text(text, encoding="utf-8")
