"""core.tasks: one reader for tasks from a parameter, a task file and a params file (issue 17).

The node's `tasks_file`, the CLIs' `--config` and the bag tools read files through `read_task_file`;
a `tasks:` written as a nested map in a params file (as the README shows the schema) is read like the
`tasks: |` text form — before, `load_tasks_file` dropped it without a word.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from av_scene_vlm.core.tasks import TaskError, load_tasks_file, read_task_file, read_tasks

WEATHER = {"weather": ["clear", "rain"]}
ROAD_USER = {"road_user": {"car": ["a car."], "pedestrian": ["a child crossing the road."]}}
AS_TEXT = yaml.safe_dump({**WEATHER, **ROAD_USER}, sort_keys=False)


def _write(path: Path, doc: object) -> Path:
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def _summary(tasks) -> dict[str, list[str]]:
    return {t.name: t.label_names for t in tasks}


@pytest.mark.parametrize(
    "doc",
    [
        {**WEATHER, **ROAD_USER},  # the bare schema
        {"tasks": {**WEATHER, **ROAD_USER}},  # the schema under `tasks:`
        {
            "/**": {"ros__parameters": {"tasks": yaml.safe_dump({**WEATHER, **ROAD_USER}, sort_keys=False)}}
        },  # `tasks: |`
        {"clip_node": {"ros__parameters": {"tasks": {**WEATHER, **ROAD_USER}}}},  # a nested map
    ],
    ids=["schema", "tasks-key", "params-text", "params-nested-map"],
)
def test_every_file_shape_gives_the_same_tasks(tmp_path: Path, doc: object) -> None:
    path = _write(tmp_path / "tasks.yaml", doc)
    tasks = load_tasks_file(path)
    assert _summary(tasks) == {"weather": ["clear", "rain"], "road_user": ["car", "pedestrian"]}
    assert tasks[1].labels[1].prompts == ("a child crossing the road.",)


def test_params_file_labels_and_templates(tmp_path: Path) -> None:
    params = {"tasks": WEATHER, "labels": ["car", "bus", ""], "template": ["a {} photo.", "a {}."]}
    config = read_task_file(_write(tmp_path / "p.yaml", {"/**": {"ros__parameters": params}}))
    assert _summary(config.tasks) == {"weather": ["clear", "rain"], "default": ["car", "bus"]}
    assert config.templates == ("a {} photo.", "a {}.")
    bare = read_task_file(_write(tmp_path / "b.yaml", {"template": "a {} scene", **WEATHER}))
    assert _summary(bare.tasks) == {"weather": ["clear", "rain"]} and bare.templates == ("a {} scene",)
    assert read_task_file(_write(tmp_path / "n.yaml", WEATHER)).templates is None


def test_the_package_config_is_read_with_its_templates() -> None:
    config = read_task_file(Path(__file__).resolve().parents[1] / "config" / "scene_vlm.yaml")
    assert [t.name for t in config.tasks] == ["road_user", "weather", "time_of_day", "road_type", "hazard"]
    assert config.templates and all("{}" in t for t in config.templates)


def test_read_tasks_order_and_unique_names(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.yaml", ROAD_USER)
    found = read_tasks(tasks_file=path, tasks="weather: [clear, rain]", labels=["car", "truck"])
    assert [t.name for t in found.tasks] == ["road_user", "weather", "default"]  # file, text, labels
    assert _summary(read_tasks(tasks=WEATHER).tasks) == WEATHER  # a mapping is taken as the schema
    assert read_tasks(tasks="", labels=[""]).tasks == ()  # blanks mean none; refusing is the caller's
    with pytest.raises(TaskError, match="defined twice: weather"):
        read_tasks(tasks_file=_write(tmp_path / "w.yaml", WEATHER), tasks=WEATHER)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("weather: [clear, rain", "not valid YAML"),
        ({"/**": {"ros__parameters": {"tasks": ["clear", "rain"]}}}, "must be a mapping"),
        ({"/**": {"ros__parameters": {"tasks": {"weather": ["clear"]}}}}, "needs at least 2 labels"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path: Path, content: object, message: str) -> None:
    with pytest.raises(TaskError, match=message) as info:
        read_task_file(_write(tmp_path / "bad.yaml", content))
    assert "\n" not in str(info.value)
    with pytest.raises(TaskError, match="cannot read tasks file"):
        read_task_file(tmp_path / "missing.yaml")
