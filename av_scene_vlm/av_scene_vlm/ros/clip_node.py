"""`clip_node`: CLIP zero-shot classification, similarity and heatmaps for one or more cameras.

Executor callbacks only store the newest frame per camera; a worker thread batches the newest frames
of all cameras into one engine call, so the node never falls behind and parameter services answer
while inference runs. Every output copies the source image header.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from av_scene_vlm.core.backend_options import check_options
from av_scene_vlm.core.image_codec import ImageDecodeError
from av_scene_vlm.core.models import DEFAULT_CLIP_MODEL, ensure_available
from av_scene_vlm.core.tasks import (
    DEFAULT_TEMPLATES,
    Task,
    TaskError,
    check_unique,
    load_tasks_file,
    parse_tasks_yaml,
    tasks_from_labels,
    validate_templates,
)
from av_scene_vlm.ros.camera_input import (
    Camera,
    CameraInputs,
    Percentiles,
    RateMeter,
    failures_counted,
    output_topic,
)
from av_scene_vlm.ros.conversions import (
    bgr_to_image,
    image_to_rgb,
    to_classification_array,
    to_label_info,
    to_similarity,
)
from av_scene_vlm.ros.node_utils import (
    DIAGNOSTICS_PERIOD,
    INPUT_PARAMETERS,
    USE_CV_BRIDGE,
    ParamSpec,
    WorkerNode,
    camera_status,
    clean_list,
    dtype_name,
    kv,
    pin_torch_threads,
    plan_inputs,
    run_nodes,
)
from av_scene_vlm_msgs.msg import ClassificationArray, LabelInfo, Similarity

if TYPE_CHECKING:
    from av_scene_vlm.core.engine import FrameResult, ZeroShotEngine

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
    "max_batch": (8, "Most frames (cameras) per engine call.", False),
    "template": (
        list(DEFAULT_TEMPLATES),
        "Prompt templates with '{}' for labels without prompts; ensembled.",
        False,
    ),
    "labels": ([""], "Labels of a task named 'default' (empty = none).", False),
    "tasks": ("", "Tasks as YAML: {task: [labels]} or {task: {label: [prompts]}}.", False),
    "tasks_file": ("", "YAML file with more tasks (same schema, or a params file with 'tasks').", False),
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
}
TASK_PARAMS = ("labels", "tasks", "tasks_file", "template")
# Values shown in type errors where the default is empty.
EXAMPLES = {
    "labels": ["car", "truck"],
    "tasks": "weather: [clear, rain]",
    "tasks_file": "/etc/vehicle/tasks.yaml",
    "heatmap_task": "weather",
    "heatmap_label": "rain",
}


def build_tasks(labels: list[str], tasks_yaml: str, tasks_file: str) -> list[Task]:
    """All tasks from the three task parameters; raises TaskError with the reason."""
    tasks: list[Task] = []
    if tasks_file.strip():
        tasks += load_tasks_file(tasks_file.strip())
    tasks += parse_tasks_yaml(tasks_yaml)
    tasks += tasks_from_labels(clean_list(labels))
    if not tasks:
        raise TaskError("no tasks: set 'labels', 'tasks' or 'tasks_file'")
    return check_unique(tasks)


def check_heatmap_choice(tasks: list[Task], task: str, label: str) -> None:
    """heatmap_task must name a task and heatmap_label a label of it (else the heatmap would fail later)."""
    names = [t.name for t in tasks]
    if task and task not in names:
        raise TaskError(f"heatmap_task {task!r} is not one of the tasks {names}")
    chosen = tasks[names.index(task)] if task else (tasks[0] if tasks else None)
    if label and chosen is not None and label not in chosen.label_names:
        raise TaskError(
            f"heatmap_label {label!r} is not a label of task {chosen.name!r}: {chosen.label_names}"
        )


@dataclass
class _Work:
    camera: Camera
    header: Header
    rgb: np.ndarray
    received: float  # monotonic time the callback stored the frame
    picked: float  # monotonic time the worker took it


class ClipNode(WorkerNode):
    """The classifier node; see the module docstring and README for topics and parameters."""

    WORKER_WHAT = "inference"

    def __init__(self, name: str = "clip_node", *, engine: ZeroShotEngine | None = None, **kwargs) -> None:
        super().__init__(name, **kwargs)
        self.declare(PARAMETERS, EXAMPLES)
        p = self._p
        self.cameras = plan_inputs(self)
        tasks = build_tasks(p("labels"), p("tasks"), p("tasks_file"))
        templates = validate_templates(clean_list(p("template")))
        self._check_runtime({k: p(k) for k in PARAMETERS})
        check_heatmap_choice(tasks, p("heatmap_task"), p("heatmap_label"))
        if engine is None:
            check_options(p("backend"), clean_list(p("onnx_providers")), p("onnx_threads"))
            ensure_available(p("model"))  # a missing model fails here, before torch is imported
            self.get_logger().info(
                f"loading CLIP model '{p('model')}' (device={p('device')}, dtype={p('dtype')}, "
                f"backend={p('backend')})"
            )
            from av_scene_vlm.core.engine import ZeroShotEngine

            engine = ZeroShotEngine(
                p("model"),
                device=p("device"),
                dtype=p("dtype"),
                tasks=tasks,
                templates=templates,
                backend=p("backend"),
                onnx_providers=clean_list(p("onnx_providers")),
                onnx_threads=p("onnx_threads"),
            )
        else:
            engine.set_tasks(tasks, templates)
        self.engine = engine
        self.engine.prepare()  # encode prompts before the first frame
        self._smoothed: dict[str, list[np.ndarray]] = {}
        self._last_publish: dict[str, float] = {}
        self._pubs = {}
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        for cam in self.cameras:
            self._pubs[cam.topic] = (
                self.create_publisher(ClassificationArray, output_topic(cam, "classification"), reliable),
                self.create_publisher(Similarity, output_topic(cam, "similarity"), reliable),
                self.create_publisher(Image, output_topic(cam, "heatmap"), reliable),
            )
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self._label_pubs = {
            ns: self.create_publisher(LabelInfo, f"{ns.rstrip('/')}/labels", latched)
            for ns in dict.fromkeys(c.namespace for c in self.cameras)
        }
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.inputs = CameraInputs(
            self,
            self.cameras,
            reliability=p("input_reliability"),
            depth=p("input_depth"),
            max_frame_pixels=p("max_frame_pixels"),
        )
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._publish_labels()
        self._engine_time = Percentiles()
        self._processed_rate = RateMeter()
        self._batches = 0
        # Pinned in the worker so a second model worker in this process (scene_vlm) cannot change it.
        import torch  # already loaded with the engine

        self._torch_threads = torch.get_num_threads()
        self.start_worker()
        self.get_logger().info(
            f"classifying {', '.join(c.topic for c in self.cameras)} with {len(tasks)} task(s) on "
            f"{self.engine.device} ({dtype_name(self.engine.dtype)}), image tower: {self._backend_text()}"
        )

    def _backend_text(self) -> str:
        """'torch' or 'onnxruntime [providers], N threads, graph ... (cached|exported in s)'."""
        info = self.engine.backend_info()
        if info.get("backend") != "onnxruntime":
            return str(info.get("backend"))
        how = "cached" if info.get("cache_hit") else f"exported in {info.get('graph_seconds')} s"
        return (
            f"onnxruntime {info.get('providers')}, {info.get('threads')} threads, "
            f"graph {info.get('graph')} ({how})"
        )

    # ---- parameters ------------------------------------------------------------------------------
    @staticmethod
    def _check_runtime(values: dict) -> None:
        if not 0.0 <= float(values["smoothing"]) < 1.0:
            raise ValueError("smoothing must be in [0, 1)")
        if float(values["min_publish_period"]) < 0:
            raise ValueError("min_publish_period must be >= 0")
        if int(values["max_batch"]) < 1:
            raise ValueError("max_batch must be >= 1")
        if not 0.0 <= float(values["heatmap_alpha"]) <= 1.0:
            raise ValueError("heatmap_alpha must be in [0, 1]")
        if int(values["heatmap_max_width"]) < 0:
            raise ValueError("heatmap_max_width must be >= 0")

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate changes; label/task changes are applied at once and re-encoded by the worker."""
        try:
            new = self._proposed(PARAMETERS, params)
            self._check_runtime(new)
            if any(p.name in TASK_PARAMS for p in params):
                tasks = build_tasks(new["labels"], new["tasks"], new["tasks_file"])
                templates = validate_templates(clean_list(new["template"]))
                check_heatmap_choice(tasks, new["heatmap_task"], new["heatmap_label"])
                names = [t.name for t in tasks]
                self.engine.set_tasks(tasks, templates)
                self._smoothed.clear()
                self._publish_labels()
                self.get_logger().info(
                    f"labels changed: {len(tasks)} task(s) {names}; texts re-encode on the next frame"
                )
            elif any(p.name in ("heatmap_task", "heatmap_label") for p in params):
                check_heatmap_choice(self.engine.tasks, new["heatmap_task"], new["heatmap_label"])
        except (TaskError, ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _publish_labels(self) -> None:
        header = Header(stamp=self.get_clock().now().to_msg())
        msg = to_label_info(header, self.engine.tasks, self.engine.templates, self.engine.model_id)
        for pub in self._label_pubs.values():
            pub.publish(msg)

    # ---- worker ------------------------------------------------------------------------------------
    def _run(self) -> None:
        pin_torch_threads(self._torch_threads)
        super()._run()

    def _step(self) -> None:
        items = self.inputs.take(int(self._p("max_batch")), timeout=0.2)
        if not items:
            return
        period = float(self._p("min_publish_period"))
        work: list[_Work] = []
        now = time.monotonic()
        for cam, msg, received in items:
            if period > 0 and now - self._last_publish.get(cam.topic, -1e9) < period:
                cam.skipped_period += 1
                continue
            try:
                rgb = image_to_rgb(
                    msg,
                    use_cv_bridge=bool(self._p("use_cv_bridge")),
                    max_pixels=self.inputs.max_frame_pixels,
                )
            except ImageDecodeError as exc:
                self.inputs.reject(cam, exc)
                continue
            work.append(_Work(cam, msg.header, rgb, received, now))
        if not work:
            return
        want_heatmap = bool(self._p("heatmap"))
        heat = [want_heatmap and self._pubs[w.camera.topic][2].get_subscription_count() > 0 for w in work]
        with failures_counted(w.camera for w in work):
            results = self.engine.classify(
                [w.rgb for w in work],
                heatmap=heat,
                heatmap_task=self._p("heatmap_task") or None,
                heatmap_label=self._p("heatmap_label") or None,
            )
        self._engine_time.add(results[0].latency)
        self._batches += 1
        for w, result in zip(work, results, strict=True):
            self._publish(w, result)

    def _smooth(self, cam: Camera, result: FrameResult) -> list[np.ndarray] | None:
        s = float(self._p("smoothing"))
        current = [t.probabilities for t in result.tasks]
        if s <= 0:
            return None
        prev = self._smoothed.get(cam.topic)
        if prev is None or [p.shape for p in prev] != [c.shape for c in current]:
            smoothed = current
        else:
            smoothed = [s * p + (1.0 - s) * c for p, c in zip(prev, current, strict=True)]
        self._smoothed[cam.topic] = smoothed
        return smoothed

    def _publish(self, w: _Work, result: FrameResult) -> None:
        from av_scene_vlm.core.visualize import format_lines, overlay_heatmap

        cam = w.camera
        cls_pub, sim_pub, heat_pub = self._pubs[cam.topic]
        model = self.engine.model_id
        cls_pub.publish(to_classification_array(w.header, result, model, self._smooth(cam, result)))
        if self._p("publish_similarity"):
            sim_pub.publish(
                to_similarity(
                    w.header,
                    result,
                    model,
                    self.engine.logit_scale,
                    embedding=bool(self._p("publish_embedding")),
                )
            )
        if result.heatmap is not None:
            bgr = overlay_heatmap(
                w.rgb,
                result.heatmap,
                alpha=float(self._p("heatmap_alpha")),
                lines=[f"heatmap: {result.heatmap_task} = {result.heatmap_label}", *format_lines(result)],
                max_width=int(self._p("heatmap_max_width")),
            )
            heat_pub.publish(bgr_to_image(bgr, w.header))
        done = time.monotonic()
        self._last_publish[cam.topic] = done
        cam.processed += 1
        cam.output_rate.tick(done)
        cam.node_latency.add(done - w.received)
        cam.slot_wait.add(w.picked - w.received)
        # The node's own cost per frame: decode, batching, conversion, heatmap drawing, publishing.
        cam.overhead.add(max(0.0, done - w.picked - result.latency))
        stamp_age = (
            self.get_clock().now().nanoseconds - (w.header.stamp.sec * 10**9 + w.header.stamp.nanosec)
        ) / 1e9
        cam.latency.add(stamp_age)
        self._processed_rate.tick(done)

    # ---- diagnostics ----------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        name = self.get_fully_qualified_name()
        level, message = self.worker_errors.escalate(
            DiagnosticStatus.OK, f"{self._processed_rate.rate():.1f} frames/s"
        )
        node_status = DiagnosticStatus(
            level=level,
            name=f"{name}: engine",
            hardware_id=str(self.engine.device),
            message=message,
            values=kv(
                model=self.engine.model_id,
                device=self.engine.device,
                dtype=dtype_name(self.engine.dtype),
                backend=self.engine.backend,
                onnx_providers=",".join(self.engine.providers),
                processed_fps=f"{self._processed_rate.rate():.2f}",
                engine_time_p50_ms=f"{self._engine_time.get(0.5) * 1e3:.2f}",
                engine_time_p95_ms=f"{self._engine_time.get(0.95) * 1e3:.2f}",
                batches=self._batches,
                tasks=",".join(t.name for t in self.engine.tasks),
                text_encoder_calls=self.engine.text_encoder_calls,
                worker_errors=self.worker_errors.count,
                last_worker_error=self.worker_errors.last,
            ),
        )
        arr.status.append(node_status)
        for cam in self.cameras:
            arr.status.append(
                camera_status(
                    name,
                    cam,
                    slot_wait_p50_ms=f"{cam.slot_wait.get(0.5) * 1e3:.2f}",
                    node_overhead_p50_ms=f"{cam.overhead.get(0.5) * 1e3:.2f}",
                    node_overhead_p95_ms=f"{cam.overhead.get(0.95) * 1e3:.2f}",
                )
            )
        self._diag_pub.publish(arr)


def main(args: list[str] | None = None) -> int:
    """Entry point of `ros2 run av_scene_vlm clip_node`."""
    return run_nodes([ClipNode], args, PARAMETERS)


if __name__ == "__main__":
    sys.exit(main())
