"""clip_node's parameters: name -> (default, description, read_only), with examples for type errors.

Apart from the node so that the README's tables, scene_vlm's merged set and the tests read one table
without the node's code.
"""

from __future__ import annotations

from av_scene_vlm.core.models import DEFAULT_CLIP_MODEL
from av_scene_vlm.core.tasks import DEFAULT_TEMPLATES
from av_scene_vlm.ros.node_utils import (
    AUTOSTART,
    DIAGNOSTICS_PERIOD,
    INPUT_PARAMETERS,
    USE_CV_BRIDGE,
    ParamSpec,
)

__all__ = ["EXAMPLES", "PARAMETERS"]

# name -> (default, description, read_only); the README's table is generated from it.
PARAMETERS: dict[str, ParamSpec] = {
    **INPUT_PARAMETERS,
    "model": (DEFAULT_CLIP_MODEL, "CLIP checkpoint: hub id (cached) or local directory.", True),
    "device": ("auto", "auto, cpu, cuda or cuda:N.", True),
    "dtype": ("auto", "auto (fp16 on GPU, fp32 on CPU), float32, float16 or bfloat16.", True),
    "backend": (
        "auto",
        "Image tower runtime: auto (onnxruntime on a CPU where it is installed, torch on CUDA), "
        "torch or onnxruntime (the tower exported to ONNX once per model and cached).",
        True,
    ),
    "onnx_providers": (
        ["auto"],
        "ONNX Runtime providers in order: auto (CPU on a CPU device, CUDA on a GPU), cpu, cuda, "
        "tensorrt or full names; one this onnxruntime lacks is a start-up error.",
        True,
    ),
    "onnx_threads": (0, "ONNX Runtime intra-op threads (0 = as many as torch uses).", True),
    "precision": (
        "auto",
        "Image tower precision on a CPU: fp32, bf16 (torch, a bfloat16 copy of the tower), int8 "
        "(onnxruntime, int8 weights) or "
        "auto (fp32 unless check-precision passed a faster one for this model and the CPU has its "
        "instructions; docs/PRECISION.md). Text embeddings stay fp32.",
        True,
    ),
    "cuda_graphs": (
        "auto",
        "Replay preprocessing + image tower + scoring as CUDA graphs (one per batch-size bucket and "
        "frame size, checked against eager once): auto (on for the torch backend on CUDA), on or off.",
        True,
    ),
    "cuda_graphs_memory_mb": (
        0.0,
        "Most memory the CUDA graphs may hold, MB (static buffers and their share of the graph pool); "
        "least recently used graphs are dropped past it (0 = a tenth of the device's memory).",
        True,
    ),
    "max_batch": (8, "Most frames (cameras) per engine call.", False),
    "template": (
        list(DEFAULT_TEMPLATES),
        "Prompt templates with '{}' for labels without prompts; ensembled.",
        False,
    ),
    "labels": ([""], "Labels of a task named 'default' (empty = none).", False),
    "tasks": ("", "Tasks as YAML: {task: [labels]} or {task: {label: [prompts]}}.", False),
    "tasks_file": (
        "",
        "YAML file with more tasks (same schema, or a params file with 'tasks'). No labels, tasks or "
        "tasks_file at all: the tasks of the installed config/scene_vlm.yaml.",
        False,
    ),
    "events": (
        "",
        "Scene events as YAML: {name: {when: {task: label}, on, off, min_duration, min_gap, cooldown}} "
        "(docs/SCENE_EVENTS.md).",
        False,
    ),
    "events_file": ("", "YAML file with more scene events (same schema, or under 'events:').", False),
    "smoothing": (0.0, "EMA factor s in [0, 1): p = s*p_prev + (1-s)*p_new per camera and task.", False),
    "min_publish_period": (0.0, "Minimum seconds between results per camera (0 = every frame).", False),
    "publish_similarity": (True, "Publish scene/similarity.", False),
    "publish_embedding": (True, "Fill image_embedding in scene/similarity.", False),
    "heatmap": (True, "Publish scene/heatmap (computed only while subscribed).", False),
    "heatmap_task": ("", "Task whose label the heatmap shows ('' = first task).", False),
    "heatmap_label": ("", "Label the heatmap shows ('' = the task's top label).", False),
    "heatmap_alpha": (0.45, "Heatmap overlay opacity in [0, 1].", False),
    "heatmap_max_width": (960, "Downscale wider frames for the heatmap (0 = keep size).", False),
    "diagnostics_period": DIAGNOSTICS_PERIOD,
    "use_cv_bridge": USE_CV_BRIDGE,
    "autostart": AUTOSTART,
}
# Values shown in type errors where the default is empty.
EXAMPLES = {
    "labels": ["car", "truck"],
    "tasks": "weather: [clear, rain]",
    "tasks_file": "/etc/vehicle/tasks.yaml",
    "events": "wet: {when: {weather: rain}, on: 0.6, off: 0.4}",
    "events_file": "/etc/vehicle/scene_events.yaml",
    "heatmap_task": "weather",
    "heatmap_label": "rain",
}
