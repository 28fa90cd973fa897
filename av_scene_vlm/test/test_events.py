"""Scene events without ROS: the schema's validation and the detector driven by scripted
probabilities (thresholds, hysteresis, minimum duration, gap and cooldown at their edges, stamps that
jump back, runtime redefinition)."""

from __future__ import annotations

from pathlib import Path

import pytest
from av_scene_vlm.core.event_detector import END, START, EventBank, EventDetector, probabilities_of
from av_scene_vlm.core.events import EventError, check_events, leaves, parse_events_yaml, read_events
from av_scene_vlm.core.tasks import load_tasks_file, parse_tasks_yaml

S = 1_000_000_000  # one second in ns
TASKS = parse_tasks_yaml("weather: [clear, rain, snow]\ntime_of_day: [day, night]\n")
CONFIG = Path(__file__).resolve().parents[1] / "config"


def rain(p: float, night: float = 0.5) -> list:
    """A frame whose weather is rain with probability p (the rest clear)."""
    return probabilities_of(
        {
            "weather": {"clear": 1 - p, "rain": p, "snow": 0.0},
            "time_of_day": {"day": 1 - night, "night": night},
        }
    )


def detector(text: str) -> EventDetector:
    events = parse_events_yaml(text)
    check_events(events, TASKS)
    return EventDetector("/cam", events)


def run(det: EventDetector, ps: list[float], step_s: float = 1.0, t0: int = 0) -> list[tuple]:
    """Feed p per frame at `step_s` spacing; (frame index, name, START/END, duration) per transition."""
    out = []
    for i, p in enumerate(ps):
        for t in det.update(t0 + int(i * step_s * S), rain(p)):
            out.append((i, t.name, t.transition, round(t.duration, 6)))
    return out


def test_thresholds_are_inclusive_on_and_exclusive_off() -> None:
    det = detector("wet: {when: {weather: rain}, on: 0.6, off: 0.4}")
    # 0.59 < on: nothing; 0.6 == on starts; 0.4 == off keeps it open; 0.39 < off ends.
    assert run(det, [0.59, 0.6, 0.5, 0.4, 0.39, 0.5]) == [(1, "wet", START, 0.0), (4, "wet", END, 3.0)]


def test_hysteresis_keeps_an_event_open_between_off_and_on() -> None:
    det = detector("wet: {when: {weather: rain}, on: 0.7, off: 0.3}")
    got = run(det, [0.8, 0.5, 0.35, 0.31, 0.69, 0.29, 0.5, 0.69, 0.7])
    assert got == [(0, "wet", START, 0.0), (5, "wet", END, 5.0), (8, "wet", START, 0.0)]


def test_min_duration_edge() -> None:
    # 2.0 s at or above `on`: the frame at +2.0 s starts it, not the one at +1.5 s.
    det = detector("wet: {when: {weather: rain}, on: 0.6, off: 0.4, min_duration: 2.0}")
    assert run(det, [0.1, 0.7, 0.7, 0.7, 0.7, 0.7], step_s=0.5) == [(5, "wet", START, 0.0)]
    # A dip below `on` (even above `off`) while pending starts the count again.
    det = detector("wet: {when: {weather: rain}, on: 0.6, off: 0.4, min_duration: 2.0}")
    assert run(det, [0.7, 0.7, 0.5, 0.7, 0.7, 0.7], step_s=1.0) == [(5, "wet", START, 0.0)]


def test_start_carries_stamp_peak_and_mean_of_the_frames_that_led_to_it() -> None:
    det = detector("wet: {when: {weather: rain}, on: 0.6, min_duration: 1.0}")
    assert det.update(10 * S, rain(0.7)) == []
    (t,) = det.update(11 * S, rain(0.9))
    assert (t.transition, t.stamp_ns, t.start_ns, t.duration) == (START, 11 * S, 11 * S, 0.0)
    assert t.peak == pytest.approx(0.9) and t.mean == pytest.approx(0.8)


def test_min_gap_edge_and_return_above_off_cancels_the_gap() -> None:
    det = detector("wet: {when: {weather: rain}, on: 0.6, off: 0.4, min_gap: 2.0}")
    # Below off at 1 s and 2 s, back above at 3 s (gap cancelled); below from 4 s: END at 6 s exactly.
    got = run(det, [0.7, 0.3, 0.3, 0.45, 0.3, 0.3, 0.3, 0.3])
    assert got == [(0, "wet", START, 0.0), (6, "wet", END, 6.0)]


def test_cooldown_edge() -> None:
    det = detector("wet: {when: {weather: rain}, on: 0.6, off: 0.4, cooldown: 3.0}")
    # END at 1 s: no start before 4 s (frames at 2 and 3 s are ignored), START at 4 s exactly.
    got = run(det, [0.7, 0.1, 0.9, 0.9, 0.9, 0.1])
    assert got == [(0, "wet", START, 0.0), (1, "wet", END, 1.0), (4, "wet", START, 0.0), (5, "wet", END, 1.0)]


def test_all_any_and_label_lists() -> None:
    text = (
        "night_rain: {when: {all: [{time_of_day: night}, {weather: rain}]}, on: 0.6}\n"
        "wet_or_dark: {when: {any: [{time_of_day: night}, {weather: rain}]}, on: 0.6}\n"
        "precipitation: {when: {weather: [rain, snow]}, on: 0.6}\n"
    )
    det = detector(text)
    frame = probabilities_of(
        {"weather": {"clear": 0.3, "rain": 0.35, "snow": 0.35}, "time_of_day": {"day": 0.3, "night": 0.7}}
    )
    names = [t.name for t in det.update(0, frame)]
    assert names == ["wet_or_dark", "precipitation"]  # all: min(0.7, 0.35) < 0.6
    both = probabilities_of(
        {"weather": {"clear": 0.1, "rain": 0.8, "snow": 0.1}, "time_of_day": {"day": 0.3, "night": 0.7}}
    )
    assert [t.name for t in det.update(S, both)] == ["night_rain"]


def test_stamp_going_back_ends_open_events_and_starts_afresh() -> None:
    det = detector("wet: {when: {weather: rain}, on: 0.6, cooldown: 100}")
    assert [t.transition for t in det.update(100 * S, rain(0.9))] == [START]
    assert det.update(105 * S, rain(0.9)) == []
    # The bag loops: stamp 50 s. The open event ends at the last frame before the jump (5 s, not -50 s);
    # state (cooldown included) starts afresh, so this frame starts it again.
    got = det.update(50 * S, rain(0.9))
    assert [(t.transition, t.stamp_ns, t.duration) for t in got] == [
        (END, 105 * S, 5.0),
        (START, 50 * S, 0.0),
    ]
    assert det.stamp_jumps == 1 and all(t.duration >= 0 for t in got)
    # A pending event (min_duration) restarts its count after a jump instead of starting early.
    det = detector("wet: {when: {weather: rain}, on: 0.6, min_duration: 2}")
    assert det.update(10 * S, rain(0.9)) == [] and det.update(5 * S, rain(0.9)) == []
    assert det.update(6 * S, rain(0.9)) == []
    assert [t.transition for t in det.update(7 * S, rain(0.9))] == [START]


def test_runtime_redefinition_ends_removed_events_and_keeps_others() -> None:
    bank = EventBank(
        parse_events_yaml(
            "wet: {when: {weather: rain}, on: 0.6}\ndark: {when: {time_of_day: night}, on: 0.6}"
        )
    )
    got = bank.update("/cam", 0, rain(0.9, night=0.9), header="h0")
    assert [t.name for t in got] == ["wet", "dark"]
    bank.update("/cam", 2 * S, rain(0.9, night=0.9), header="h2")
    ended = bank.redefine(parse_events_yaml("dark: {when: {time_of_day: night}, on: 0.95, off: 0.8}"))
    ((t,),) = ended.values()
    assert (t.name, t.transition, t.header, t.duration) == ("wet", END, "h2", 2.0)
    assert [s.name for s in bank.open_events("/cam")] == ["dark"]  # kept, not restarted
    # The kept event uses its new `off` from the next frame: 0.79 < 0.8 ends it.
    assert [(t.name, t.transition) for t in bank.update("/cam", 3 * S, rain(0.1, night=0.79))] == [
        ("dark", END)
    ]
    assert bank.counts("/cam") == (2, 2)


def test_frames_without_the_events_tasks_are_skipped() -> None:
    det = detector("wet: {when: {weather: rain}, on: 0.6}")
    assert det.update(0, probabilities_of({"road": {"a": 0.9, "b": 0.1}})) == []
    assert [t.transition for t in det.update(S, rain(0.9))] == [START]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("wet: {when: {weather: rain}, on: 0.4, off: 0.4}", "'off' must be in [0, on)"),
        ("wet: {when: {weather: rain}, on: 1.5}", "'on' must be in (0, 1]"),
        ("wet: {when: {weather: rain}, min_gap: -1}", "'min_gap' must be >= 0"),
        ("wet: {when: {weather: rain}, on: yes}", "'on' must be a number"),
        ("wet: {when: {weather: rain}, onn: 0.5}", "unknown key(s) ['onn']"),
        ("wet: {on: 0.5}", "has no 'when'"),
        ("wet: {when: {all: []}}", "'all' must be a non-empty list"),
        ("wet: {when: rain}", "a condition must be a mapping"),
        ("wet: [rain", "not valid YAML"),
        ("- wet", "must be a mapping of event name"),
    ],
)
def test_bad_definitions_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(EventError, match=None) as err:
        parse_events_yaml(text)
    assert reason in str(err.value)


def test_unknown_task_or_label_is_refused() -> None:
    with pytest.raises(EventError, match="no task 'hazard'"):
        check_events(parse_events_yaml("x: {when: {hazard: fire}}"), TASKS)
    with pytest.raises(EventError, match=r"has no label\(s\) \['hail'\]"):
        check_events(parse_events_yaml("x: {when: {weather: [rain, hail]}}"), TASKS)


def test_events_file_and_value_with_unique_names(tmp_path: Path) -> None:
    f = tmp_path / "events.yaml"
    f.write_text("events:\n  wet: {when: {weather: rain}}\n")
    assert [e.name for e in read_events(events_file=f, events="dry: {when: {weather: clear}}")] == [
        "wet",
        "dry",
    ]
    with pytest.raises(EventError, match="defined twice: wet"):
        read_events(events_file=f, events="wet: {when: {weather: clear}}")
    with pytest.raises(EventError, match="cannot read events file"):
        read_events(events_file=tmp_path / "missing.yaml")


def test_example_config_matches_the_default_tasks() -> None:
    events = read_events(events_file=CONFIG / "scene_events.yaml")
    assert len(events) >= 6
    check_events(events, load_tasks_file(CONFIG / "scene_vlm.yaml"))
    # Hazards, weather, lighting and road works are all covered.
    named = {(leaf.task, label) for e in events for leaf in leaves(e.when) for label in leaf.labels}
    assert {"hazard", "weather", "time_of_day"} <= {task for task, _ in named}
    assert ("hazard", "construction zone") in named
