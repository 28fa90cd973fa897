"""Scene events detected on every classified frame, with hysteresis, on frame stamps (ROS-free).

Per camera and event: IDLE -> (probability >= on) PENDING -> (still >= on for min_duration) OPEN
[START] -> (probability < off) CLOSING -> (still < off for min_gap) ended [END], then no new start
before `cooldown` has passed. A CLOSING event back at or above `off` is OPEN again; a PENDING one
below `on` is IDLE again. Every time is a frame stamp (integer nanoseconds), never the wall clock,
so a replayed bag gives the events of the live run. A stamp that goes back (a looped bag, a camera
restart) ends every open event at the last frame before the jump (never a negative duration) and
starts afresh. Why raw (unsmoothed) probabilities: see docs/SCENE_EVENTS.md ("Smoothing").
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np

from .events import EventDef, Leaf

START, END = 0, 1


class TaskProbabilities(NamedTuple):
    """One task's probabilities of a frame, shaped like the engine's task results."""

    task: str
    labels: Sequence[str]
    probabilities: Sequence[float]


@dataclass(frozen=True)
class Transition:
    """A START or END of one event on one camera. `header` is the caller's (the frame's), `stamp_ns`
    its stamp; `duration` is seconds from `start_ns` to `stamp_ns` (0 on START)."""

    name: str
    transition: int
    camera: str
    stamp_ns: int
    start_ns: int
    duration: float
    peak: float
    mean: float
    header: Any = None
    start_header: Any = None  # the header of the START frame (its stamp is start_ns)


@dataclass
class _State:
    phase: str = "idle"  # idle | pending | open | closing
    since_ns: int = 0  # pending: first frame >= on; closing: first frame < off
    start_ns: int = 0
    start_header: Any = None
    peak: float = 0.0
    total: float = 0.0
    frames: int = 0
    cooldown_until: int | None = None
    started: Transition | None = field(default=None, repr=False)

    def add(self, p: float) -> None:
        self.peak = max(self.peak, p)
        self.total += p
        self.frames += 1

    @property
    def mean(self) -> float:
        return self.total / self.frames if self.frames else 0.0


def _compile(cond: Any, index: dict[str, tuple[int, dict[str, int]]]) -> Callable[[list], float] | None:
    """A condition as a function of a frame's flat probabilities (every task's labels, in order);
    None when a task or label is absent."""
    if isinstance(cond, Leaf):
        found = index.get(cond.task)
        if found is None or any(label not in found[1] for label in cond.labels):
            return None
        where = [found[0] + found[1][label] for label in cond.labels]
        if len(where) == 1:
            return itemgetter(where[0])
        many = itemgetter(*where)
        return lambda flat: sum(many(flat))
    parts = [_compile(p, index) for p in cond.parts]
    if any(p is None for p in parts):
        return None
    pick = min if cond.op == "all" else max
    if len(parts) == 2:
        first, second = parts
        return lambda flat: pick(first(flat), second(flat))
    return lambda flat: pick([part(flat) for part in parts])


class EventDetector:
    """Every event of one camera; not thread-safe (EventBank locks).

    Why conditions compiled to functions of one flat list of floats: clip_node calls this on every frame of
    every camera, and the cost per frame must stay far below the engine's (bench_events.py)."""

    def __init__(self, camera: str, events: Sequence[EventDef]) -> None:
        self.camera = camera
        self.events: tuple[EventDef, ...] = tuple(events)
        self._states = {e.name: _State() for e in self.events}
        self._signature: list[tuple[str, Any]] | None = None
        self._compiled: list[Any] = []
        self._last_ns: int | None = None
        self._last_header: Any = None
        self.started = 0
        self.ended = 0
        self.stamp_jumps = 0

    def _same_labels(self, tasks: Sequence[Any]) -> bool:
        sig = self._signature
        if sig is None or len(sig) != len(tasks):
            return False
        for (name, labels), t in zip(sig, tasks, strict=True):
            if name != t.task or labels != (t.labels if t.labels.__class__ is list else list(t.labels)):
                return False
        return True

    def _compile_for(self, tasks: Sequence[Any]) -> None:
        index, start = {}, 0
        for t in tasks:
            index[t.task] = (start, {label: j for j, label in enumerate(t.labels)})
            start += len(t.labels)
        self._signature = [(t.task, list(t.labels)) for t in tasks]
        self._compiled = [_compile(e.when, index) for e in self.events]

    def update(self, stamp_ns: int, tasks: Sequence[Any], header: Any = None) -> list[Transition]:
        """Fold one frame (its stamp and task results: `.task`, `.labels`, `.probabilities`) into every
        event; returns its transitions, ENDs before STARTs, each in definition order."""
        out: list[Transition] = []
        if self._last_ns is not None and stamp_ns < self._last_ns:
            self.stamp_jumps += 1
            out.extend(self._end_all())
            self._states = {e.name: _State() for e in self.events}
        self._last_ns, self._last_header = stamp_ns, header
        if not self._same_labels(tasks):
            self._compile_for(tasks)
        flat: list[float] = []
        for t in tasks:
            p = t.probabilities
            flat.extend(p.tolist() if p.__class__ is np.ndarray else p)
        states = self._states
        starts: list[Transition] = []
        for event, value in zip(self.events, self._compiled, strict=True):
            if value is None:  # this frame's label sets lack the event's (a relabel in flight): skip
                continue
            p = value(flat)
            if p < event.on and states[event.name].phase == "idle":  # the common case, decided here
                continue
            t = self._step(event, p, stamp_ns, header)
            if t is not None:
                (out if t.transition == END else starts).append(t)
        return out + starts

    def _step(self, e: EventDef, p: float, ns: int, header: Any) -> Transition | None:
        s = self._states[e.name]
        if s.phase == "idle":
            if p < e.on or (s.cooldown_until is not None and ns < s.cooldown_until):
                return None
            s.phase, s.since_ns, s.peak, s.total, s.frames = "pending", ns, 0.0, 0.0, 0
        if s.phase == "pending":
            if p < e.on:
                s.phase = "idle"
                return None
            s.add(p)
            if ns - s.since_ns < _ns(e.min_duration):
                return None
            s.phase, s.start_ns, s.start_header = "open", ns, header
            self.started += 1
            s.started = Transition(e.name, START, self.camera, ns, ns, 0.0, s.peak, s.mean, header, header)
            return s.started
        s.add(p)
        if p >= e.off:
            s.phase = "open"
            return None
        if s.phase == "open":
            s.phase, s.since_ns = "closing", ns
        if ns - s.since_ns < _ns(e.min_gap):
            return None
        return self._end(e.name, ns, header, cooldown=e.cooldown)

    def _end(self, name: str, ns: int, header: Any, cooldown: float = 0.0) -> Transition:
        s = self._states[name]
        t = Transition(
            name,
            END,
            self.camera,
            ns,
            s.start_ns,
            (ns - s.start_ns) / 1e9,
            s.peak,
            s.mean,
            header,
            s.start_header,
        )
        self._states[name] = _State(cooldown_until=ns + _ns(cooldown))
        self.ended += 1
        return t

    def _end_all(self, names: Sequence[str] | None = None) -> list[Transition]:
        """End the open events (of `names`) at the last frame seen."""
        out = []
        for event in self.events:
            s = self._states.get(event.name)
            if s is not None and s.phase in ("open", "closing") and (names is None or event.name in names):
                out.append(self._end(event.name, self._last_ns or s.start_ns, self._last_header))
        return out

    def redefine(self, events: Sequence[EventDef]) -> list[Transition]:
        """New definitions: open events of a removed name end (at the last frame seen); an event whose
        name stays keeps its state and uses its new condition and timing from the next frame."""
        new = tuple(events)
        keep = {e.name for e in new}
        ended = self._end_all([e.name for e in self.events if e.name not in keep])
        self._states = {e.name: self._states.get(e.name) or _State() for e in new}
        self.events = new
        self._signature = None  # compiled again for the new conditions on the next frame
        return ended

    def open_events(self) -> list[Transition]:
        """The START of every open event, in the order they started."""
        found = [s.started for s in self._states.values() if s.phase in ("open", "closing") and s.started]
        return sorted(found, key=lambda t: t.stamp_ns)


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


def stamp_ns(sec: int, nanosec: int) -> int:
    """A ROS stamp as integer nanoseconds."""
    return int(sec) * 1_000_000_000 + int(nanosec)


class EventBank:
    """One EventDetector per camera, shared by the worker and parameter changes (locked)."""

    def __init__(self, events: Sequence[EventDef] = ()) -> None:
        self.events: tuple[EventDef, ...] = tuple(events)
        self._detectors: dict[str, EventDetector] = {}
        self._lock = threading.Lock()

    def _detector(self, camera: str) -> EventDetector:
        found = self._detectors.get(camera)
        if found is None:
            found = self._detectors[camera] = EventDetector(camera, self.events)
        return found

    def update(self, camera: str, stamp: int, tasks: Sequence[Any], header: Any = None) -> list[Transition]:
        """See EventDetector.update; nothing to do (and no cost) without events."""
        if not self.events:
            return []
        with self._lock:
            return self._detector(camera).update(stamp, tasks, header)

    def redefine(self, events: Sequence[EventDef]) -> dict[str, list[Transition]]:
        """New definitions for every camera; camera -> the ENDs of removed events' open ones."""
        with self._lock:
            self.events = tuple(events)
            return {cam: d.redefine(self.events) for cam, d in self._detectors.items()}

    def open_events(self, camera: str) -> list[Transition]:
        with self._lock:
            found = self._detectors.get(camera)
            return found.open_events() if found is not None else []

    def counts(self, camera: str) -> tuple[int, int]:
        """(events started, events ended) on `camera`."""
        with self._lock:
            found = self._detectors.get(camera)
            return (found.started, found.ended) if found is not None else (0, 0)


def probabilities_of(values: dict[str, dict[str, float]]) -> list[TaskProbabilities]:
    """{task: {label: p}} as task results (scripted tests, benchmarks)."""
    return [
        TaskProbabilities(t, list(ps), np.asarray(list(ps.values()), np.float64)) for t, ps in values.items()
    ]
