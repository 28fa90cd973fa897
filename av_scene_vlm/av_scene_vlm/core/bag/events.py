"""Scene events of a processed bag: the live node's event topics written beside the results, and the
event intervals for the summary.

Why the same detector and message mapping as clip_node (`core.event_detector`, `result_messages`):
a drive processed offline must give the events the live run gave — both read frame stamps, never the
wall clock, and the raw per-frame probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import result_messages as messages
from ..event_detector import END, START, EventBank, Transition
from ..events import EventDef, EventError, check_events
from .errors import BagError

if TYPE_CHECKING:
    from rosbags.interfaces import Connection

    from ..engine import FrameResult
    from .reading import Decoded
    from .writing import ResultWriter

SCENE_EVENT = "av_scene_vlm_msgs/msg/SceneEvent"
SCENE_EVENT_ARRAY = "av_scene_vlm_msgs/msg/SceneEventArray"
EVENTS_LEAF, ACTIVE_LEAF = "events", "active_events"


def _stamp(ns: int) -> dict[str, int]:
    return {"sec": ns // 1_000_000_000, "nanosec": ns % 1_000_000_000}


class BagEvents:
    """Detects the events of every camera of a bag, writes their messages, keeps their intervals."""

    def __init__(self, events: Sequence[EventDef], tasks: Sequence[Any]) -> None:
        try:
            check_events(events, tasks)
        except EventError as exc:
            raise BagError(str(exc)) from None
        self.bank = EventBank(events)
        self.intervals: list[dict[str, Any]] = []
        self._open: dict[tuple[str, str], dict[str, Any]] = {}
        self._conns: dict[str, tuple[Connection, Connection]] = {}

    def add_topics(self, out: ResultWriter, topic: str, namespace: str) -> None:
        """`<ns>/events` and the latched `<ns>/active_events`, with the live node's QoS."""
        self._conns[topic] = (
            out.add(f"{namespace}/{EVENTS_LEAF}", SCENE_EVENT),
            out.add(f"{namespace}/{ACTIVE_LEAF}", SCENE_EVENT_ARRAY, "TRANSIENT_LOCAL", 1),
        )

    def frame(
        self, out: ResultWriter, topic: str, timestamp: int, frame: Decoded, result: FrameResult
    ) -> str:
        """Fold one classified frame in; write its transitions (record time: the frame's) and the new
        list of open events; returns the names open after it, ';'-joined (the summary's column)."""
        found = self.bank.update(topic, frame.stamp_ns, result.tasks, frame.header)
        opened = self.bank.open_events(topic)
        if found:
            events, active = self._conns[topic]
            for t in found:
                out.write(events, timestamp, messages.scene_event(out.make, t))
                self._interval(t)
            out.write(active, timestamp, messages.scene_event_array(out.make, frame.header, topic, opened))
        return ";".join(t.name for t in opened)

    def _interval(self, t: Transition) -> None:
        key = (t.camera, t.name)
        if t.transition == START:
            row = {"topic": t.camera, "name": t.name, "start": _stamp(t.start_ns), "end": None}
            row.update(duration=None, peak_probability=round(t.peak, 6), mean_probability=round(t.mean, 6))
            self._open[key] = row
            self.intervals.append(row)
        elif t.transition == END and key in self._open:
            row = self._open.pop(key)
            row.update(end=_stamp(t.stamp_ns), duration=round(t.duration, 9))
            row.update(peak_probability=round(t.peak, 6), mean_probability=round(t.mean, 6))

    def counts(self) -> tuple[int, int]:
        """(started, ended) over every camera."""
        started = sum(1 for r in self.intervals)
        return started, sum(1 for r in self.intervals if r["end"] is not None)
