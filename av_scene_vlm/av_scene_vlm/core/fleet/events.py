"""Scene event intervals in the fleet index: detected per bag when it is complete, kept in a table
`events`, and turned into a frame filter for `search --event NAME`.

Why at the bag's end: frames reach the index in batches — on Ray in any order — but the detector
needs each camera's frames in order; a bag's probabilities are kept until its last frame is in, then
replayed in record-time order (the order a live node saw them), so an index run gives the intervals
`bag --events` and the live node give. A bag's intervals are written before its `bags` row marks it
complete, and deleted with its rows when a run starts it again.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..event_detector import END, START, EventBank, TaskProbabilities
from ..events import parse_events_yaml
from .errors import FleetError
from .store import FleetIndex, _hex, _open, _open_or_create, _storage

EVENTS = "events"
PROBS = "probs"  # the batch column with every label's probability (all tasks, in order); not stored


class EventLog:
    """Buffers each bag's per-frame probabilities and writes its intervals when it is complete."""

    def __init__(self, index: FleetIndex) -> None:
        self.index = index
        self.events = parse_events_yaml(index.info.events)
        self.tasks = list(index.info.tasks.items())
        self._frames: dict[str, list[tuple[int, str, int, np.ndarray]]] = {}
        self._table: Any = None

    def schema(self) -> Any:
        pa = self.index.pa
        return pa.schema(
            [
                pa.field("bag_hash", pa.string()),
                pa.field("topic", pa.string()),
                pa.field("name", pa.string()),
                pa.field("start", pa.int64()),  # header stamps, ns
                pa.field("end", pa.int64()),
                pa.field("duration", pa.float64()),
                pa.field("peak_probability", pa.float64()),
                pa.field("mean_probability", pa.float64()),
                pa.field("open_at_end", pa.bool_()),  # still open at the bag's last frame
            ]
        )

    def table(self) -> Any:
        if self._table is None:
            self._table = _open_or_create(self.index.db, EVENTS, self.schema())
        return self._table

    def record(self, columns: dict[str, Any]) -> None:
        """Keep the probabilities of a batch's frames (needs the `probs` column)."""
        if PROBS not in columns:
            raise FleetError("the index records scene events but a batch has no probabilities")
        keys = zip(columns["bag_hash"], columns["bag_time"], columns["topic"], columns["stamp"], strict=True)
        for (bag_hash, bag_time, topic, stamp), p in zip(keys, columns[PROBS], strict=True):
            self._frames.setdefault(str(bag_hash), []).append(
                (int(bag_time), str(topic), int(stamp), np.asarray(p, np.float64))
            )

    def intervals(self, bag_hash: str) -> list[dict[str, Any]]:
        """The bag's intervals: its frames replayed per camera in record-time order."""
        rows: list[dict[str, Any]] = []
        opened: dict[tuple[str, str], dict[str, Any]] = {}
        bank = EventBank(self.events)
        last: dict[str, int] = {}
        sizes = np.cumsum([0, *[len(labels) for _, labels in self.tasks]])
        for _, topic, stamp, p in sorted(self._frames.pop(bag_hash, []), key=lambda f: (f[0], f[1], f[2])):
            tasks = [
                TaskProbabilities(name, labels, p[sizes[k] : sizes[k + 1]])
                for k, (name, labels) in enumerate(self.tasks)
            ]
            for t in bank.update(topic, stamp, tasks):
                if t.transition == START:
                    row = {"bag_hash": bag_hash, "topic": topic, "name": t.name, "start": t.start_ns}
                    opened[(topic, t.name)] = row
                    rows.append(row)
                elif t.transition == END and (topic, t.name) in opened:
                    row = opened.pop((topic, t.name))
                    row.update(end=t.stamp_ns, duration=t.duration, open_at_end=False)
                    row.update(peak_probability=t.peak, mean_probability=t.mean)
            last[topic] = stamp
        for (topic, _), row in opened.items():  # open at the end: up to the camera's last frame
            found = next(t for t in bank.open_events(topic) if t.name == row["name"])
            row.update(end=last[topic], duration=(last[topic] - row["start"]) / 1e9, open_at_end=True)
            row.update(peak_probability=found.peak, mean_probability=found.mean)
        return rows

    def finish(self, bag_hash: str) -> None:
        """Write the bag's intervals (before the bag is marked complete)."""
        rows = self.intervals(bag_hash)
        if rows:
            with _storage(self.index.uri, "write"):
                self.table().add(self.index.pa.Table.from_pylist(rows, schema=self.schema()))

    def forget(self, bag_hash: str) -> None:
        """Drop a bag's buffered frames and its written intervals (it is indexed again)."""
        self._frames.pop(bag_hash, None)
        table = self.table()
        where = f"bag_hash = '{_hex(bag_hash)}'"
        if table.count_rows(where):
            with _storage(self.index.uri, "write"):
                table.delete(where)


def event_where(index: FleetIndex, name: str) -> str:
    """A filter on the frame rows keeping those inside an interval of event `name` (its camera,
    from its START frame to its END frame). FleetError when the index has no such event."""
    known = [e.name for e in parse_events_yaml(index.info.events)] if index.info.events else []
    if name not in known:
        why = f"its events are {known}" if known else "it was built without --events"
        raise FleetError(f"index '{index.uri}' has no event '{name}' ({why})")
    table = _open(index.db, EVENTS)
    rows = [] if table is None else table.search().where(f"name = '{_quote(name)}'").limit(None).to_list()
    if not rows:
        return "FALSE"
    parts = [
        f"(bag_hash = '{r['bag_hash']}' AND topic = '{_quote(r['topic'])}' "
        f"AND stamp >= {int(r['start'])} AND stamp <= {int(r['end'])})"
        for r in sorted(rows, key=lambda r: (r["bag_hash"], r["topic"], r["start"]))
    ]
    return "(" + " OR ".join(parts) + ")"


def _quote(text: str) -> str:
    return str(text).replace("'", "''")
