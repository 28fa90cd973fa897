"""Each node's settings as one typed, immutable snapshot, validated once and swapped whole.

Why: the worker used to read and coerce parameters one by one, mid-batch, while a parameter service
could change them; now `configure` builds a snapshot from the parameter values (every check, one
reason per failure, the same lines as before) and a parameter change builds a new one from the
values it would leave — the change is refused with the reason, or the node swaps the reference in
one assignment (as `ZeroShotEngine` swaps its label sets). The worker reads `node.settings` once
per step, so a batch never sees half a change.

A field whose name is a parameter's takes that parameter's value (`_direct`): a new runtime
parameter is a table entry and a field. Model options are `core.engine_options` objects, built
from the same values, so the node, the CLIs and the bag tools build their models alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, fields
from typing import Any

from av_scene_vlm.core.engine_options import CaptionerOptions, EngineOptions
from av_scene_vlm.core.events import EventDef, check_events, read_events
from av_scene_vlm.core.package_config import default_config
from av_scene_vlm.core.tasks import (
    DEFAULT_TEMPLATES,
    Task,
    TaskConfig,
    TaskError,
    read_task_file,
    read_tasks,
    validate_templates,
)
from av_scene_vlm.ros.camera_input import Camera, check_input_qos, plan_cameras
from av_scene_vlm.ros.node_utils import clean_list

TASK_PARAMS = frozenset({"labels", "tasks", "tasks_file", "template"})
EVENT_PARAMS = frozenset({"events", "events_file"})
EMBEDDING_SOURCES = ("similarity_topic", "compute")
# caption_period -1 (auto): on a CPU the 3B captioner needs many seconds of every core per caption, and
# the classifier keeps >= 90 % of its frames only with a caption every ~30 s (docs/PERFORMANCE.md).
AUTO_PERIOD = -1.0
AUTO_PERIOD_CUDA = 5.0
AUTO_PERIOD_CPU = 30.0


def _direct(cls: type, values: Mapping[str, Any], skip: Set[str] = frozenset()) -> dict[str, Any]:
    """The fields of `cls` named like a parameter, with its value (lists as tuples: frozen)."""
    out = {}
    for f in fields(cls):
        if f.name in values and f.name not in skip:
            value = values[f.name]
            out[f.name] = tuple(value) if isinstance(value, list) else value
    return out


@dataclass(frozen=True)
class InputSettings:
    """The camera inputs both nodes share (read at configure; read-only while configured)."""

    image_topics: tuple[str, ...]
    input_type: str
    input_reliability: str
    input_depth: int
    output_namespaces: tuple[str, ...]
    diagnostics_period: float
    max_frame_pixels: int

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> InputSettings:
        """Validated before any model is loaded (ValueError with the reason)."""
        settings = cls(**_direct(cls, values))
        check_input_qos(settings.input_reliability, int(settings.input_depth))
        if float(settings.diagnostics_period) <= 0:
            raise ValueError("diagnostics_period must be > 0")
        if int(settings.max_frame_pixels) < 1:
            raise ValueError("max_frame_pixels must be >= 1")
        settings.cameras()  # topics and namespaces plan (ValueError)
        return settings

    def cameras(self, resolve: Callable[[str], str] | None = None) -> list[Camera]:
        """The cameras, with fresh counters (`resolve`: the node's topic name resolution)."""
        topics, namespaces = clean_list(self.image_topics), clean_list(self.output_namespaces)
        return plan_cameras(topics, namespaces, self.input_type, resolve)


def vehicle_defaults(
    values: Mapping[str, Any], templates: tuple[str, ...]
) -> tuple[TaskConfig, tuple[str, ...]]:
    """No `labels`, `tasks` or `tasks_file`: the tasks (and, with the default `template`, the prompt
    templates) of the package's installed config/scene_vlm.yaml, so a bare `ros2 run av_scene_vlm
    clip_node` classifies the vehicle's label sets instead of stopping."""
    path = default_config()
    if path is None:
        raise TaskError("no tasks: set 'labels', 'tasks' or 'tasks_file' (no config/scene_vlm.yaml found)")
    found = read_task_file(path)
    if not found.tasks:
        raise TaskError(f"no tasks: set 'labels', 'tasks' or 'tasks_file' ('{path}' has none)")
    if found.templates and clean_list(values["template"]) == list(DEFAULT_TEMPLATES):
        templates = validate_templates(list(found.templates))
    return found, templates


@dataclass(frozen=True)
class ClipSettings:
    """clip_node: inputs, the engine, the label sets and every runtime parameter."""

    inputs: InputSettings
    engine: EngineOptions
    tasks: tuple[Task, ...]
    templates: tuple[str, ...]
    events: tuple[EventDef, ...]
    max_batch: int
    smoothing: float
    min_publish_period: float
    publish_similarity: bool
    publish_embedding: bool
    heatmap: bool
    heatmap_task: str
    heatmap_label: str
    heatmap_alpha: float
    heatmap_max_width: int
    use_cv_bridge: bool

    @classmethod
    def parse(
        cls, values: Mapping[str, Any], previous: ClipSettings | None = None, changed: Set[str] = frozenset()
    ) -> ClipSettings:
        """Settings from parameter values; `previous` keeps its label sets unless a task parameter
        `changed`, and its events unless an event parameter did (a tasks_file or events_file is read
        once, not at every parameter change); events must name existing tasks and labels."""
        inputs = InputSettings.parse(values)
        if previous is not None and not (changed & TASK_PARAMS):
            tasks, templates = previous.tasks, previous.templates
        else:
            found = read_tasks(
                tasks_file=values["tasks_file"], tasks=values["tasks"], labels=values["labels"]
            )
            templates = validate_templates(clean_list(values["template"]))
            if not found.tasks:
                found, templates = vehicle_defaults(values, templates)
            tasks = found.tasks
        if previous is not None and not (changed & EVENT_PARAMS):
            events = previous.events
        else:
            events = read_events(events_file=values["events_file"], events=values["events"])
        check_events(events, tasks)  # also when the tasks change under unchanged events
        settings = cls(
            inputs=inputs,
            engine=EngineOptions.from_values(values),
            tasks=tasks,
            templates=templates,
            events=events,
            **_direct(cls, values, skip={"inputs", "engine", "tasks", "templates", "events"}),
        )
        settings._check()
        return settings

    def _check(self) -> None:
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError("smoothing must be in [0, 1)")
        if self.min_publish_period < 0:
            raise ValueError("min_publish_period must be >= 0")
        if self.max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if not 0.0 <= self.heatmap_alpha <= 1.0:
            raise ValueError("heatmap_alpha must be in [0, 1]")
        if self.heatmap_max_width < 0:
            raise ValueError("heatmap_max_width must be >= 0")
        # heatmap_task must name a task and heatmap_label a label of it (else the heatmap fails later).
        names = [t.name for t in self.tasks]
        if self.heatmap_task and self.heatmap_task not in names:
            raise TaskError(f"heatmap_task {self.heatmap_task!r} is not one of the tasks {names}")
        chosen = self.tasks[names.index(self.heatmap_task)] if self.heatmap_task else self.tasks[0]
        if self.heatmap_label and self.heatmap_label not in chosen.label_names:
            raise TaskError(
                f"heatmap_label {self.heatmap_label!r} is not a label of task {chosen.name!r}: "
                f"{chosen.label_names}"
            )
        self.engine.validate()


def auto_caption_period(device: object) -> tuple[float, str]:
    """The period `caption_period: -1` stands for on `device`, and why (for the start-up log)."""
    kind = getattr(device, "type", str(device).split(":")[0])
    if kind == "cuda":
        return AUTO_PERIOD_CUDA, f"the captioner runs on {device}"
    return AUTO_PERIOD_CPU, (
        f"the captioner runs on {device}, where each caption takes seconds of every core "
        f"({AUTO_PERIOD_CUDA:g} s on CUDA)"
    )


@dataclass(frozen=True)
class CaptionSettings:
    """caption_node: inputs, the captioner, the rate, the scene-change trigger and the worker."""

    inputs: InputSettings
    captioner: CaptionerOptions
    caption_prompt: str
    caption_period: float
    caption_scene_change_threshold: float
    caption_embedding_source: str
    caption_clip_model: str
    caption_num_threads: int
    caption_nice: int
    publish_text: bool
    use_cv_bridge: bool
    ask_queue_size: int
    ask_max_frame_age: float
    ask_max_new_tokens: int
    ask_max_question_chars: int

    @classmethod
    def parse(
        cls,
        values: Mapping[str, Any],
        previous: CaptionSettings | None = None,
        changed: Set[str] = frozenset(),
    ) -> CaptionSettings:
        """Settings from parameter values (ValueError with the reason)."""
        settings = cls(
            inputs=InputSettings.parse(values),
            captioner=CaptionerOptions.from_values(values, prefix="caption_"),
            **_direct(cls, values, skip={"inputs", "captioner"}),
        )
        settings._check()
        return settings

    def _check(self) -> None:
        if self.caption_period < 0 and self.caption_period != AUTO_PERIOD:
            raise ValueError(
                f"caption_period must be >= 0 seconds, or -1 for auto ({AUTO_PERIOD_CUDA:g} s on CUDA, "
                f"{AUTO_PERIOD_CPU:g} s on CPU)"
            )
        if not 0.0 <= self.caption_scene_change_threshold <= 2.0:
            raise ValueError("caption_scene_change_threshold must be in [0, 2] (cosine distance; 0 = off)")
        if not self.caption_prompt.strip():
            raise ValueError("caption_prompt must not be empty")
        if self.caption_embedding_source not in EMBEDDING_SOURCES:
            raise ValueError(
                f"caption_embedding_source must be one of {EMBEDDING_SOURCES}, "
                f"got {self.caption_embedding_source!r}"
            )
        self.captioner.validate()
        _check_ask(self)

    @property
    def computes_embeddings(self) -> bool:
        """Scene changes judged on embeddings of this node's own CLIP model."""
        return self.caption_embedding_source == "compute" and self.caption_scene_change_threshold > 0

    @property
    def clip(self) -> EngineOptions:
        """The CLIP model for `caption_embedding_source: compute`, on the captioner's device."""
        return EngineOptions(model=self.caption_clip_model, device=self.captioner.device)


def _check_ask(s: CaptionSettings) -> None:
    """The AskScene action's bounds (see ros/ask_server.py)."""
    if s.ask_queue_size < 1:
        raise ValueError(f"ask_queue_size must be >= 1 (goals waiting), got {s.ask_queue_size}")
    if not s.ask_max_frame_age > 0:
        raise ValueError(f"ask_max_frame_age must be > 0 seconds, got {s.ask_max_frame_age:g}")
    if s.ask_max_new_tokens < 1:
        raise ValueError(f"ask_max_new_tokens must be >= 1, got {s.ask_max_new_tokens}")
    if s.ask_max_question_chars < 1:
        raise ValueError(f"ask_max_question_chars must be >= 1, got {s.ask_max_question_chars}")
