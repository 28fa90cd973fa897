"""Label sets ("tasks") with prompt ensembles, parsed from YAML-like structures.

A task is a named set of labels ("road_user": car, truck, pedestrian, ...). Each label has zero or
more prompts; a label without prompts is expanded with the templates ("a photo of a {}."). Keeping
this ROS-free lets the node, the CLI and the bag tool share one schema and one validation, and one
reader: `read_tasks` (a task file, a `tasks` value, plain labels) and `read_task_file` (every file
shape: the schema, a params file with `tasks` as text or as a nested map, templates beside them).

Accepted shapes for one task (YAML or Python):
    weather: [clear, rain, snow, fog]                      # labels only -> templates
    road_user:
      car: []                                              # label -> templates
      pedestrian: ["a photo of a pedestrian", "a baby crossing the road"]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)
DEFAULT_TASK = "default"


class TaskError(ValueError):
    """A task definition is invalid; the message says which task/label and why."""


@dataclass(frozen=True)
class Label:
    """One class of a task with the prompts whose embeddings are averaged for it."""

    name: str
    prompts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Task:
    """A named label set; probabilities are a softmax over its labels only."""

    name: str
    labels: tuple[Label, ...] = field(default_factory=tuple)

    @property
    def label_names(self) -> list[str]:
        return [label.name for label in self.labels]


def expand_prompts(label: Label, templates: Sequence[str]) -> list[str]:
    """Prompts of a label: its own, or each template filled with the label name."""
    if label.prompts:
        return list(label.prompts)
    return [t.format(label.name) if "{}" in t else f"{t} {label.name}".strip() for t in templates]


def validate_templates(templates: Sequence[str]) -> tuple[str, ...]:
    """Templates must be non-empty strings; '{}' marks where the label goes."""
    out = tuple(templates)
    if not out:
        raise TaskError("at least one template is required, e.g. 'a photo of a {}.'")
    for t in out:
        if not isinstance(t, str) or not t.strip():
            raise TaskError(f"template {t!r} must be a non-empty string")
        if t.count("{}") > 1:
            raise TaskError(f"template {t!r} has more than one '{{}}' placeholder")
    return out


def _as_str(value: object, what: str) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool) or not str(value).strip():
        raise TaskError(f"{what} must be a non-empty string, got {value!r}")
    return str(value).strip()


def parse_task(name: str, spec: object) -> Task:
    """Build one Task from a list of labels or a mapping label -> prompts."""
    name = _as_str(name, "task name")
    labels: list[Label] = []
    if isinstance(spec, Mapping):
        for label_name, prompts in spec.items():
            lname = _as_str(label_name, f"label of task {name!r}")
            if prompts is None:
                prompts = []
            if isinstance(prompts, str):
                prompts = [prompts]
            if not isinstance(prompts, Sequence):
                raise TaskError(f"prompts of {name}/{lname} must be a list of strings, got {prompts!r}")
            labels.append(Label(lname, tuple(_as_str(p, f"prompt of {name}/{lname}") for p in prompts)))
    elif isinstance(spec, Sequence) and not isinstance(spec, str):
        labels = [Label(_as_str(x, f"label of task {name!r}")) for x in spec]
    else:
        raise TaskError(f"task {name!r} must be a list of labels or a mapping label -> prompts, got {spec!r}")
    if len(labels) < 2:
        raise TaskError(f"task {name!r} needs at least 2 labels (a softmax over one label is always 1)")
    seen: set[str] = set()
    for label in labels:
        if label.name in seen:
            raise TaskError(f"task {name!r} lists label {label.name!r} twice")
        seen.add(label.name)
    return Task(name, tuple(labels))


def parse_tasks(spec: object) -> list[Task]:
    """Build tasks from a mapping task -> labels/prompts (the YAML schema above)."""
    if spec is None or spec == "" or spec == {}:
        return []
    if not isinstance(spec, Mapping):
        raise TaskError(f"tasks must be a mapping of task name -> labels, got {type(spec).__name__}")
    return [parse_task(str(k), v) for k, v in spec.items()]


def yaml_error(exc: yaml.YAMLError) -> str:
    """A YAML error on one line ("expected ',' or ']' ... (line 1, column 22)"): node start-up
    errors and parameter rejections are single lines."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if not problem:
        return " ".join(str(exc).split())
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{problem}{where}"


def parse_tasks_yaml(text: str) -> list[Task]:
    """Parse tasks from YAML text (a parameter value or a file's content)."""
    try:
        data = yaml.safe_load(text) if text and text.strip() else None
    except yaml.YAMLError as exc:
        raise TaskError(f"tasks are not valid YAML: {yaml_error(exc)}") from None
    return parse_tasks(data)


@dataclass(frozen=True)
class TaskConfig:
    """What a task file holds: its tasks and, when it names them, its prompt templates."""

    tasks: tuple[Task, ...] = ()
    templates: tuple[str, ...] | None = None


def read_task_file(path: str | Path) -> TaskConfig:
    """Read a task file, in any of the shapes the node, the CLIs and the bag tools accept:

    - the bare schema (`weather: [clear, rain]`), or that schema under `tasks:`;
    - a ROS params file (the node's own, e.g. config/scene_vlm.yaml): the first section with
      `ros__parameters`, whose `tasks` is YAML text (`tasks: |`) or the schema as a nested map, whose
      `labels` make a task named "default", and whose `template` list is the templates;
    - `template` (or `templates`) beside the tasks names the templates (one string or a list).
    Raises TaskError naming the file and what is wrong.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise TaskError(f"cannot read tasks file {str(p)!r}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TaskError(f"tasks file {str(p)!r} is not valid YAML: {yaml_error(exc)}") from None
    params = _find_ros_parameters(data)
    if params is not None:
        labels = params.get("labels") or []
        labels = [labels] if isinstance(labels, str) else labels
        return TaskConfig(read_tasks(tasks=params.get("tasks", ""), labels=labels).tasks, _templates(params))
    if isinstance(data, Mapping) and "tasks" in data and isinstance(data["tasks"], Mapping):
        return TaskConfig(tuple(parse_tasks(data["tasks"])), _templates(data))
    if isinstance(data, Mapping) and ("template" in data or "templates" in data):
        rest = {k: v for k, v in data.items() if k not in ("template", "templates")}
        return TaskConfig(tuple(parse_tasks(rest)), _templates(data))
    return TaskConfig(tuple(parse_tasks(data)))


def load_tasks_file(path: str | Path) -> list[Task]:
    """The tasks of a task file (see `read_task_file`)."""
    return list(read_task_file(path).tasks)


def _templates(section: Mapping) -> tuple[str, ...] | None:
    value = section.get("template", section.get("templates"))
    if isinstance(value, str) and value.strip():
        return (value,)
    if isinstance(value, list) and value and all(isinstance(t, str) for t in value):
        return validate_templates(value)
    return None


def tasks_value(value: object) -> list[Task]:
    """The tasks of a `tasks` value: YAML text (a parameter, `tasks: |`) or the schema as a mapping."""
    if isinstance(value, str):
        return parse_tasks_yaml(value)
    return parse_tasks(value)


def read_tasks(
    *, tasks_file: str | Path | None = None, tasks: object = None, labels: Iterable[str] = ()
) -> TaskConfig:
    """Every task from the three places tasks come from, in this order: a task file (`tasks_file`,
    `--config`; see `read_task_file`), a `tasks` value (YAML text or mapping), plain labels (a task
    named "default"; blank entries are dropped: a ROS string array cannot be empty, so `[""]` means
    none); with the file's templates, if it names them. Task names must be unique across them; an
    empty result is the caller's to refuse."""
    file = TaskConfig()
    if tasks_file is not None and str(tasks_file).strip():
        file = read_task_file(str(tasks_file).strip())
    out = [*file.tasks, *tasks_value(tasks), *tasks_from_labels([str(v) for v in labels if str(v).strip()])]
    return TaskConfig(tuple(check_unique(out)), file.templates)


def _find_ros_parameters(data: object) -> Mapping | None:
    if isinstance(data, Mapping):
        for value in data.values():
            if isinstance(value, Mapping) and "ros__parameters" in value:
                params = value["ros__parameters"]
                return params if isinstance(params, Mapping) else {}
    return None


def tasks_from_labels(labels: Iterable[str], name: str = DEFAULT_TASK) -> list[Task]:
    """The single task a plain label list (`--labels car truck`) stands for."""
    labels = list(labels)
    return [parse_task(name, labels)] if labels else []


def check_unique(tasks: Sequence[Task]) -> list[Task]:
    """Task names must be unique across all sources; returns the list unchanged."""
    names = [t.name for t in tasks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TaskError(f"task name(s) defined twice: {', '.join(dupes)}")
    return list(tasks)
