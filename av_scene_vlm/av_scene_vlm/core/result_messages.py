"""Results to `av_scene_vlm_msgs` messages, written once for the live nodes and the bag writer.

Why one mapping: a processed bag must replay exactly like a live run, so the fields of every result
message (which labels, which probability is the top one, the flattened cosine order, the expanded
prompts of the label map) are decided here and nowhere else. The module stays ROS-free: the caller
passes a *builder*, `make(name, **fields) -> message`, that constructs a message type of
av_scene_vlm_msgs by its short name — the rclpy classes in the nodes (`ros.conversions.ros_message`),
the classes of a rosbags typestore in the bag writer (`bag.writing.ResultWriter`). Numeric arrays are
handed to the builder as numpy arrays of the field's type (float64[], float32[], uint32[]); each
builder converts them to what its classes take. Headers are the caller's (the source image's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .tasks import Task, expand_prompts

if TYPE_CHECKING:
    from .engine import FrameResult

Builder = Callable[..., Any]
"""`make(name, /, **fields)`: a message of type `av_scene_vlm_msgs/msg/<name>` with these fields (`name`
positional-only: SceneEvent has a field called name)."""


def classification_array(
    make: Builder,
    header: Any,
    result: FrameResult,
    model_id: str,
    probabilities: Sequence[np.ndarray] | None = None,
) -> Any:
    """All tasks of one frame; `probabilities` overrides each task's (EMA-smoothed), and with it the
    top label."""
    items = []
    for k, task in enumerate(result.tasks):
        probs = np.asarray(task.probabilities if probabilities is None else probabilities[k], np.float64)
        top = int(np.argmax(probs))
        items.append(
            make(
                "Classification",
                header=header,
                task=task.task,
                labels=list(task.labels),
                probabilities=probs,
                top_label=task.labels[top],
                top_probability=float(probs[top]),
                model_id=model_id,
                inference_latency=float(result.latency),
            )
        )
    return make("ClassificationArray", header=header, results=items)


def similarity(
    make: Builder, header: Any, result: FrameResult, model_id: str, logit_scale: float, *, embedding: bool
) -> Any:
    """Cosines of every label of every task, flattened in task order, and the image embedding
    (empty when `embedding` is false)."""
    cosine = np.concatenate([np.asarray(t.cosine, np.float32) for t in result.tasks]).astype(np.float32)
    return make(
        "Similarity",
        header=header,
        texts=[label for t in result.tasks for label in t.labels],
        tasks=[t.task for t in result.tasks for _ in t.labels],
        cosine=cosine,
        logit_scale=float(logit_scale),
        image_embedding=np.asarray(result.image_embedding if embedding else (), np.float32),
        model_id=model_id,
    )


def label_info(
    make: Builder, header: Any, tasks: Sequence[Task], templates: Sequence[str], model_id: str
) -> Any:
    """The label map (tasks, labels, expanded prompts) for the latched `scene/labels` topic."""
    infos = []
    for task in tasks:
        prompts: list[str] = []
        index: list[int] = []
        for i, label in enumerate(task.labels):
            expanded = expand_prompts(label, templates)
            prompts.extend(expanded)
            index.extend([i] * len(expanded))
        infos.append(
            make(
                "TaskInfo",
                task=task.name,
                labels=task.label_names,
                prompts=prompts,
                prompt_label_index=np.asarray(index, np.uint32),
            )
        )
    return make("LabelInfo", header=header, tasks=infos, model_id=model_id)


def caption(
    make: Builder, header: Any, text: str, prompt: str, model_id: str, latency: float, num_tokens: int
) -> Any:
    """A Caption with the source header."""
    return make(
        "Caption",
        header=header,
        text=str(text),
        prompt=str(prompt),
        model_id=str(model_id),
        latency=float(latency),
        num_tokens=int(num_tokens),
    )


def scene_event(make: Builder, t: Any) -> Any:
    """A SceneEvent from a detector transition (`core.event_detector.Transition`): its frame's header,
    and the START frame's stamp as start_stamp."""
    return make(
        "SceneEvent",
        header=t.header,
        name=t.name,
        transition=int(t.transition),
        camera=t.camera,
        start_stamp=t.start_header.stamp,
        duration=float(t.duration),
        peak_probability=float(t.peak),
        mean_probability=float(t.mean),
    )


def scene_event_array(make: Builder, header: Any, camera: str, open_events: Sequence[Any]) -> Any:
    """The latched list of a camera's open events (their STARTs, in the order they started)."""
    return make(
        "SceneEventArray", header=header, camera=camera, events=[scene_event(make, t) for t in open_events]
    )
