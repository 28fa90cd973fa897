"""What a processed bag says about each frame (top label per task, caption), and `--where` on it.

Why: `search` takes the same options on one bag as on a fleet index, so a bag's frames get the columns
an index row has — `topic`, `stamp` (header stamp, ns), `frame_id`, `bag_time` (record time, ns),
`caption`, and per task `<task>` (top label) and `<task>_prob` — read from the bag's own
ClassificationArray and Caption messages, and `--where` is the same SQL filter, evaluated here by
SQLite (the standard library) instead of LanceDB. A raw bag has no task columns: a filter on them is
an error naming the columns it has.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import BagError
from .reading import messages
from .typestore import CAPTION, CLASSIFICATION_ARRAY

if TYPE_CHECKING:
    from rosbags.rosbag2 import Reader
    from rosbags.typesys.store import Typestore

_BASE_COLUMNS = {
    "bag": "TEXT",
    "topic": "TEXT",
    "stamp": "INTEGER",
    "frame_id": "TEXT",
    "bag_time": "INTEGER",
}
FrameKey = tuple[str, int, int, str]
"""(output namespace, stamp sec, stamp nanosec, frame_id): a frame's results share its header."""


@dataclass
class FrameLabels:
    """A frame's top label and probability per task, and its caption (None: none recorded)."""

    labels: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> {label, probability}
    caption: str | None = None


def frame_labels(
    reader: Reader, path: Path, store: Typestore
) -> tuple[dict[FrameKey, FrameLabels], list[str]]:
    """The results recorded in a processed bag, per frame, and the tasks seen (in order)."""
    out: dict[FrameKey, FrameLabels] = {}
    tasks: dict[str, None] = {}
    conns = [c for c in reader.connections if c.msgtype in (CLASSIFICATION_ARRAY, CAPTION)]
    for conn, _, raw in messages(reader, path, conns) if conns else ():
        try:
            msg = store.deserialize_cdr(raw, conn.msgtype)
        except Exception:
            continue
        h = msg.header
        key = (conn.topic.rsplit("/", 1)[0], int(h.stamp.sec), int(h.stamp.nanosec), str(h.frame_id))
        entry = out.setdefault(key, FrameLabels())
        if conn.msgtype == CAPTION:
            entry.caption = str(msg.text)
            continue
        for result in msg.results:
            tasks[str(result.task)] = None
            entry.labels[str(result.task)] = {
                "label": str(result.top_label),
                "probability": round(float(result.top_probability), 6),
            }
    return out, list(tasks)


class FrameFilter:
    """`where` (SQL, as for a fleet index) over frames given as column dicts, evaluated by SQLite."""

    def __init__(self, where: str, tasks: Sequence[str], bag: Path) -> None:
        columns = {**_BASE_COLUMNS, "caption": "TEXT"}
        for task in tasks:
            columns |= {task: "TEXT", f"{task}_prob": "REAL"}
        self.columns = list(columns)
        self._db = sqlite3.connect(":memory:")
        spec = ", ".join(f'"{name}" {kind}' for name, kind in columns.items())
        self._db.execute(f"CREATE TABLE frames (rid INTEGER PRIMARY KEY, {spec})")
        self._query = f"SELECT rid FROM frames WHERE ({where})"
        try:
            self._db.execute(self._query + " LIMIT 0")
        except sqlite3.Error as exc:
            names = ", ".join(self.columns)
            raise BagError(f"cannot search '{bag}': {exc} (columns: {names})") from None

    def keep(self, rows: Sequence[dict[str, Any]]) -> list[bool]:
        """Whether each row passes the filter."""
        if not rows:
            return []
        marks = ", ".join("?" * (len(self.columns) + 1))
        names = ", ".join(f'"{c}"' for c in ["rid", *self.columns])
        self._db.executemany(
            f"INSERT INTO frames ({names}) VALUES ({marks})",
            [(i, *(row.get(c) for c in self.columns)) for i, row in enumerate(rows)],
        )
        kept = {rid for (rid,) in self._db.execute(self._query)}
        self._db.execute("DELETE FROM frames")
        return [i in kept for i in range(len(rows))]


def frame_row(
    bag: Path, topic: str, stamp_ns: int, frame_id: str, bag_time: int, found: FrameLabels | None
) -> dict:
    """A frame's columns, as a fleet index row has them."""
    row: dict[str, Any] = {"bag": str(bag), "topic": topic, "stamp": stamp_ns, "frame_id": frame_id}
    row |= {"bag_time": bag_time, "caption": found.caption if found else None}
    for task, top in (found.labels if found else {}).items():
        row |= {task: top["label"], f"{task}_prob": top["probability"]}
    return row
