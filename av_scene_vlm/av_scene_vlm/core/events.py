"""Scene events written in words: their schema, parsed and validated like `tasks` (ROS-free).

An event is a condition on the classifier's label sets with hysteresis timing, e.g.

    night_rain:
      when: {all: [{time_of_day: night}, {weather: rain}]}
      on: 0.5            # the condition's probability must reach this to start ...
      off: 0.35          # ... and fall below this (< on) to end
      min_duration: 1.0  # seconds at or above `on` before START
      min_gap: 2.0       # seconds below `off` before END
      cooldown: 10.0     # seconds after an END before it may start again

A condition's probability: `{task: label}` is that label's probability; `{task: [a, b]}` the sum of
those labels' (the task says "a or b"); `all: [...]` the lowest of its parts, `any: [...]` the
highest (so `all` reaches `on` only when every part does). Why one module: the node, the bag tool
and the tests share one schema, one validation and the same one-line reasons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from .tasks import Task, TaskError, yaml_error

KEYS = ("when", "on", "off", "min_duration", "min_gap", "cooldown")
DEFAULT_ON = 0.5
DEFAULT_OFF_BELOW_ON = 0.1  # `off` defaults to on - 0.1


class EventError(TaskError):
    """An event definition is invalid; the message names the event and why (a TaskError, so the node
    refuses it like a bad task: exit 2 at start-up, rejected with the reason at runtime)."""


@dataclass(frozen=True)
class Leaf:
    """The probability of one or more labels of one task (summed)."""

    task: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Combine:
    """`all` (the lowest part) or `any` (the highest part)."""

    op: str
    parts: tuple[Condition, ...]


Condition = Leaf | Combine


@dataclass(frozen=True)
class EventDef:
    """One event: its name, condition and hysteresis timing (seconds of frame stamps)."""

    name: str
    when: Condition
    on: float = DEFAULT_ON
    off: float = DEFAULT_ON - DEFAULT_OFF_BELOW_ON
    min_duration: float = 0.0
    min_gap: float = 0.0
    cooldown: float = 0.0


def _number(name: str, key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EventError(f"event {name!r}: '{key}' must be a number, got {value!r}")
    return float(value)


def parse_condition(name: str, spec: object) -> Condition:
    """`{task: label}`, `{task: [labels]}`, `{all: [...]}` or `{any: [...]}`; a mapping of several
    task keys means all of them."""
    if not isinstance(spec, Mapping) or not spec:
        raise EventError(
            f"event {name!r}: a condition must be a mapping like {{weather: rain}} or "
            f"{{all: [...]}} / {{any: [...]}}, got {spec!r}"
        )
    parts: list[Condition] = []
    for key, value in spec.items():
        key = str(key)
        if key in ("all", "any"):
            if not isinstance(value, Sequence) or isinstance(value, str) or not value:
                raise EventError(f"event {name!r}: '{key}' must be a non-empty list of conditions")
            parts.append(Combine(key, tuple(parse_condition(name, v) for v in value)))
            continue
        labels = [value] if isinstance(value, str | int | float) and not isinstance(value, bool) else value
        if not isinstance(labels, Sequence) or isinstance(labels, str) or not labels:
            raise EventError(f"event {name!r}: task {key!r} needs a label or a list of labels, got {value!r}")
        if not all(isinstance(v, str | int | float) and str(v).strip() for v in labels):
            raise EventError(f"event {name!r}: labels of task {key!r} must be non-empty strings")
        parts.append(Leaf(key, tuple(str(v).strip() for v in labels)))
    return parts[0] if len(parts) == 1 else Combine("all", tuple(parts))


def parse_event(name: object, spec: object) -> EventDef:
    """One event from its mapping; EventError with the reason."""
    if not isinstance(name, str | int) or isinstance(name, bool) or not str(name).strip():
        raise EventError(f"event name must be a non-empty string, got {name!r}")
    name = str(name).strip()
    if not isinstance(spec, Mapping):
        raise EventError(f"event {name!r} must be a mapping with 'when' (and on, off, ...), got {spec!r}")
    # YAML 1.1 (PyYAML) reads the keys `on` and `off` as the booleans true and false.
    spec = {({True: "on", False: "off"}.get(k, k) if isinstance(k, bool) else k): v for k, v in spec.items()}
    unknown = sorted(str(k) for k in spec if str(k) not in KEYS)
    if unknown:
        raise EventError(f"event {name!r}: unknown key(s) {unknown}; known: {list(KEYS)}")
    if "when" not in spec:
        raise EventError(f"event {name!r} has no 'when' condition, e.g. when: {{weather: rain}}")
    on = _number(name, "on", spec.get("on", DEFAULT_ON))
    off = _number(name, "off", spec.get("off", on - DEFAULT_OFF_BELOW_ON))
    times = {k: _number(name, k, spec.get(k, 0.0)) for k in ("min_duration", "min_gap", "cooldown")}
    if not 0.0 < on <= 1.0:
        raise EventError(f"event {name!r}: 'on' must be in (0, 1], got {on:g}")
    if not 0.0 <= off < on:
        raise EventError(f"event {name!r}: 'off' must be in [0, on) = [0, {on:g}), got {off:g}")
    for key, value in times.items():
        if value < 0:
            raise EventError(f"event {name!r}: '{key}' must be >= 0 seconds, got {value:g}")
    return EventDef(name, parse_condition(name, spec["when"]), on, off, **times)


def parse_events(spec: object) -> tuple[EventDef, ...]:
    """Events from a mapping name -> definition (also under a top-level `events:` key)."""
    if spec is None or spec == "" or spec == {}:
        return ()
    if isinstance(spec, Mapping) and set(spec) == {"events"}:
        return parse_events(spec["events"])
    if not isinstance(spec, Mapping):
        raise EventError(f"events must be a mapping of event name -> definition, got {type(spec).__name__}")
    return tuple(parse_event(k, v) for k, v in spec.items())


def parse_events_yaml(text: str) -> tuple[EventDef, ...]:
    """Events from YAML text (the `events` parameter, or a file's content)."""
    try:
        data = yaml.safe_load(text) if text and text.strip() else None
    except yaml.YAMLError as exc:
        raise EventError(f"events are not valid YAML: {yaml_error(exc)}") from None
    return parse_events(data)


def read_events(*, events_file: str | Path | None = None, events: object = "") -> tuple[EventDef, ...]:
    """Every event of an events file (the schema, under `events:` or not) and an `events` value (YAML
    text or a mapping), in that order; names must be unique across both."""
    found: list[EventDef] = []
    if events_file is not None and str(events_file).strip():
        path = Path(str(events_file).strip())
        try:
            text = path.read_text()
        except OSError as exc:
            raise EventError(f"cannot read events file {str(path)!r}: {exc.strerror or exc}") from None
        try:
            found.extend(parse_events_yaml(text))
        except EventError as exc:
            raise EventError(f"events file {str(path)!r}: {exc}") from None
    found.extend(parse_events_yaml(events) if isinstance(events, str) else parse_events(events))
    names = [e.name for e in found]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise EventError(f"event name(s) defined twice: {', '.join(dupes)}")
    return tuple(found)


def leaves(cond: Condition) -> list[Leaf]:
    """Every leaf of a condition, in order."""
    if isinstance(cond, Leaf):
        return [cond]
    return [leaf for part in cond.parts for leaf in leaves(part)]


def check_events(events: Sequence[EventDef], tasks: Sequence[Task]) -> None:
    """Every task and label an event names must exist (else its probability is never known)."""
    by_name = {t.name: t for t in tasks}
    for event in events:
        for leaf in leaves(event.when):
            task = by_name.get(leaf.task)
            if task is None:
                raise EventError(f"event {event.name!r}: no task {leaf.task!r} (tasks: {sorted(by_name)})")
            missing = [label for label in leaf.labels if label not in task.label_names]
            if missing:
                raise EventError(
                    f"event {event.name!r}: task {leaf.task!r} has no label(s) {missing} "
                    f"(labels: {task.label_names})"
                )


def _condition_data(cond: Condition) -> dict:
    if isinstance(cond, Leaf):
        return {cond.task: list(cond.labels) if len(cond.labels) > 1 else cond.labels[0]}
    return {cond.op: [_condition_data(p) for p in cond.parts]}


def events_yaml(events: Sequence[EventDef]) -> str:
    """Events as canonical YAML text ("" for none), which `parse_events_yaml` reads back equal: how an
    index records the events it was built with and compares them with a later run's."""
    if not events:
        return ""
    data = {
        e.name: {
            "when": _condition_data(e.when),
            **{k: getattr(e, k) for k in ("on", "off", "min_duration", "min_gap", "cooldown")},
        }
        for e in events
    }
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=10**6)
