"""`caption_node`: Qwen2.5-VL scene captions of one or more cameras at a low rate.

Same camera inputs as clip_node: executor callbacks only store the newest frame per camera
(`CameraInputs`); a worker thread captions, so generation (seconds on a CPU) never blocks a
callback, and frames that arrive meanwhile replace the slot (counted as dropped) instead of queueing.

Rate: a camera is captioned when `caption_period` seconds of *monotonic wall time* have passed since
its last caption started. The default, -1 (auto), fits the machine: 5 s when the captioner runs on
CUDA, 30 s on a CPU, where a 3B model takes many seconds of every core per caption (the start-up log
says which was chosen and why). Wall time, not the node clock, on purpose: generation costs wall time, so
with `use_sim_time` and a bag replayed at 4x, captions come at most every `caption_period` real
seconds (1 per 4 * period of bag time), and a paused or jumping /clock cannot stall or flood them.
Every Caption still carries the SOURCE image header, so it lines up with the bag.

Scene change: with `caption_scene_change_threshold` > 0, a frame whose image embedding is farther
(cosine distance 1 - cos) than the threshold from the last captioned frame's is captioned before
the period ends. Embeddings come from clip_node's `<ns>/similarity` (matched by stamp and frame_id,
else the newest one received) or from a CLIP model of this node's own (`compute`).

Topics, `<ns>` being each camera's output namespace (default `<camera ns>/scene`, as clip_node):
in: the camera topics, `<ns>/similarity` (similarity_topic source); out: `<ns>/caption`
(av_scene_vlm_msgs/Caption, reliable, source header), `<ns>/caption_text` (std_msgs/String, with
`publish_text`), `/diagnostics` (captions, latency p50/p95, dropped / skipped / bad frames, model).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header, String

from av_scene_vlm.core.image_codec import ImageDecodeError
from av_scene_vlm.core.models import (
    DEFAULT_CAPTION_MODEL,
    DEFAULT_CLIP_MODEL,
    DEFAULT_MAX_PIXELS,
    DEFAULT_PROMPT,
    ModelLoadError,
    ensure_available,
)
from av_scene_vlm.ros.camera_input import (
    Camera,
    CameraInputs,
    Percentiles,
    RateMeter,
    failures_counted,
    output_topic,
)
from av_scene_vlm.ros.conversions import image_to_rgb, to_caption
from av_scene_vlm.ros.node_utils import (
    DIAGNOSTICS_PERIOD,
    INPUT_PARAMETERS,
    USE_CV_BRIDGE,
    ParamSpec,
    WorkerNode,
    camera_status,
    dtype_name,
    kv,
    lower_thread_priority,
    pin_torch_threads,
    plan_inputs,
    run_nodes,
    use_own_cuda_stream,
)
from av_scene_vlm_msgs.msg import Caption, Similarity

if TYPE_CHECKING:
    from av_scene_vlm.core.captioner import Captioner

EMBEDDING_SOURCES = ("similarity_topic", "compute")
# caption_period -1 (auto): on a CPU the 3B captioner needs many seconds of every core per caption, and
# the classifier keeps >= 90 % of its frames only with a caption every ~30 s (docs/PERFORMANCE.md).
AUTO_PERIOD = -1.0
AUTO_PERIOD_CUDA = 5.0
AUTO_PERIOD_CPU = 30.0


def auto_caption_period(device: object) -> tuple[float, str]:
    """The period `caption_period: -1` stands for on `device`, and why (for the start-up log)."""
    kind = getattr(device, "type", str(device).split(":")[0])
    if kind == "cuda":
        return AUTO_PERIOD_CUDA, f"the captioner runs on {device}"
    return AUTO_PERIOD_CPU, (
        f"the captioner runs on {device}, where each caption takes seconds of every core "
        f"({AUTO_PERIOD_CUDA:g} s on CUDA)"
    )


# name -> (default, description, read_only); the README's table is generated from it.
PARAMETERS: dict[str, ParamSpec] = {
    **INPUT_PARAMETERS,
    "caption_model": (
        DEFAULT_CAPTION_MODEL,
        "Qwen2.5-VL checkpoint: hub id (cached) or local directory.",
        True,
    ),
    "caption_prompt": (DEFAULT_PROMPT, "Instruction given with every image.", False),
    "caption_max_new_tokens": (64, "Most tokens generated per caption.", True),
    "caption_min_pixels": (0, "Smallest resized image area in px (0 = the checkpoint's).", True),
    "caption_max_pixels": (
        DEFAULT_MAX_PIXELS,
        "Largest resized image area in px; bounds visual tokens to area/784 (0 = the checkpoint's).",
        True,
    ),
    "caption_device": ("auto", "auto, cpu, cuda or cuda:N.", True),
    "caption_dtype": ("auto", "auto (bf16 or fp16 on GPU, fp32 on CPU), float32, float16 or bfloat16.", True),
    "caption_attn_implementation": (
        "auto",
        "auto (flash_attention_2 if installed, else sdpa), sdpa, eager or flash_attention_2.",
        True,
    ),
    "caption_period": (
        -1.0,
        "Caption the newest frame at most every this many seconds per camera, monotonic wall time "
        f"(0 = as fast as the model allows; -1 = auto: {AUTO_PERIOD_CUDA:g} s on CUDA, "
        f"{AUTO_PERIOD_CPU:g} s on CPU).",
        False,
    ),
    "caption_scene_change_threshold": (
        0.0,
        "Cosine distance of the image embedding from the last captioned frame's above which a caption "
        "is made before the period ends (0 = off).",
        False,
    ),
    "caption_embedding_source": (
        "similarity_topic",
        "similarity_topic (image_embedding of clip_node's '<ns>/similarity') or compute "
        "(caption_clip_model).",
        True,
    ),
    "caption_clip_model": (
        DEFAULT_CLIP_MODEL,
        "CLIP checkpoint for caption_embedding_source=compute (loaded only when the threshold is > 0).",
        True,
    ),
    "caption_num_threads": (
        0,
        "torch intra-op threads of the caption worker (0 = the process default, all cores).",
        True,
    ),
    "caption_nice": (
        10,
        "Nice increment of the caption worker thread and its torch threads (Linux; 0 = none): on a "
        "busy CPU the classifier and other nodes go first.",
        True,
    ),
    "publish_text": (False, "Also publish std_msgs/String on '<ns>/caption_text'.", False),
    "diagnostics_period": DIAGNOSTICS_PERIOD,
    "use_cv_bridge": USE_CV_BRIDGE,
}

# Values shown in type errors where the default makes a poor example.
EXAMPLES = {"caption_period": 5.0}

_EMBEDDING_HISTORY = 64  # similarity messages kept per camera for stamp matching (~2 s at 30 Hz)

_StampKey = tuple[int, int, str]


def _key(header: Header) -> _StampKey:
    return (header.stamp.sec, header.stamp.nanosec, header.frame_id)


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 - cos(a, b); 0 for identical directions, 2 for opposite ones."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return 1.0 - float(np.dot(a, b)) / (na * nb)


@dataclass
class _Work:
    camera: Camera
    header: Header
    rgb: np.ndarray
    received: float
    embedding: np.ndarray | None  # computed embedding (compute source), else resolved after captioning
    triggered: bool


class CaptionNode(WorkerNode):
    """The captioner node; see the module docstring and README for topics and parameters."""

    WORKER_WHAT = "captioning"
    STOP_TIMEOUT_S = 10.0  # a caption in progress may take seconds

    def __init__(self, name: str = "caption_node", *, captioner: Captioner | None = None, **kwargs) -> None:
        super().__init__(name, **kwargs)
        self.declare(PARAMETERS, EXAMPLES)
        p = self._p
        self.cameras = plan_inputs(self)
        self._check_runtime({k: p(k) for k in PARAMETERS})
        source = p("caption_embedding_source")
        if source not in EMBEDDING_SOURCES:
            raise ValueError(f"caption_embedding_source must be one of {EMBEDDING_SOURCES}, got {source!r}")
        if int(p("caption_min_pixels")) < 0 or int(p("caption_max_pixels")) < 0:
            raise ValueError("caption_min_pixels and caption_max_pixels must be >= 0 (0 = the checkpoint's)")
        self._source = source
        computes_embeddings = source == "compute" and float(p("caption_scene_change_threshold")) > 0
        if captioner is None:
            # Missing models fail here, before torch is imported.
            ensure_available(p("caption_model"), DEFAULT_CAPTION_MODEL)
            if computes_embeddings:
                ensure_available(p("caption_clip_model"))
            self.get_logger().info(
                f"loading caption model '{p('caption_model')}' "
                f"(device={p('caption_device')}, dtype={p('caption_dtype')})"
            )
            from av_scene_vlm.core.captioner import Captioner

            captioner = Captioner(
                p("caption_model"),
                prompt=p("caption_prompt"),
                max_new_tokens=int(p("caption_max_new_tokens")),
                min_pixels=int(p("caption_min_pixels")) or None,
                max_pixels=int(p("caption_max_pixels")) or None,
                device=p("caption_device"),
                dtype=p("caption_dtype"),
                attn_implementation=p("caption_attn_implementation"),
            )
        self.captioner = captioner
        self._clip = None
        self._clip_error = ""
        if computes_embeddings:
            self._load_clip()  # now, so a missing CLIP model fails start-up like a missing Qwen

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self._pubs = {
            cam.topic: (
                self.create_publisher(Caption, output_topic(cam, "caption"), reliable),
                self.create_publisher(String, output_topic(cam, "caption_text"), reliable),
            )
            for cam in self.cameras
        }
        # Similarity embeddings per camera, newest last; written by callbacks, read by the worker.
        self._emb_lock = threading.Lock()
        self._embeddings: dict[str, deque[tuple[_StampKey, np.ndarray]]] = {
            c.topic: deque(maxlen=_EMBEDDING_HISTORY) for c in self.cameras
        }
        self._similarity_received = 0
        self._empty_embeddings = 0
        if self._source == "similarity_topic":
            # Best effort: a missed embedding only delays a trigger, and never back-pressures clip_node.
            sim_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
            for cam in self.cameras:
                self.create_subscription(
                    Similarity,
                    output_topic(cam, "similarity"),
                    lambda msg, cam=cam: self._on_similarity(cam, msg),
                    sim_qos,
                )
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.inputs = CameraInputs(
            self,
            self.cameras,
            reliability=p("input_reliability"),
            depth=p("input_depth"),
            max_frame_pixels=p("max_frame_pixels"),
        )
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._last_caption: dict[str, float] = {}
        # Embedding of each camera's last captioned frame: (stamp key, embedding or None until known).
        self._reference: dict[str, tuple[_StampKey, np.ndarray | None]] = {}
        self._latency = Percentiles()
        self._tokens = Percentiles()
        self._caption_rate = RateMeter(window=60.0)
        self.captions = 0
        self.triggered = 0
        self._torch_threads = int(p("caption_num_threads"))
        self._nice = int(p("caption_nice"))
        self._thread_info = {"torch_threads": "?", "nice_error": ""}
        self._auto_period, why = auto_caption_period(self.captioner.device)
        if p("caption_period") == AUTO_PERIOD:
            self.get_logger().info(
                f"caption_period auto: every {self._auto_period:g} s, because {why}; "
                "set caption_period to choose another period"
            )
        self.start_worker()
        self.get_logger().info(
            f"captioning {', '.join(c.topic for c in self.cameras)} every {self._period():g} s with "
            f"'{self.captioner.model_id}' on {self.captioner.device} "
            f"({dtype_name(self.captioner.dtype)})"
        )

    # ---- parameters ------------------------------------------------------------------------------
    @staticmethod
    def _check_runtime(values: dict) -> None:
        if float(values["caption_period"]) < 0 and float(values["caption_period"]) != AUTO_PERIOD:
            raise ValueError(
                f"caption_period must be >= 0 seconds, or -1 for auto ({AUTO_PERIOD_CUDA:g} s on CUDA, "
                f"{AUTO_PERIOD_CPU:g} s on CPU)"
            )
        if not 0.0 <= float(values["caption_scene_change_threshold"]) <= 2.0:
            raise ValueError("caption_scene_change_threshold must be in [0, 2] (cosine distance; 0 = off)")
        if not str(values["caption_prompt"]).strip():
            raise ValueError("caption_prompt must not be empty")

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        try:
            self._check_runtime(self._proposed(PARAMETERS, params))
        except (ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _period(self) -> float:
        """Seconds between captions per camera now (`caption_period`, auto resolved)."""
        period = float(self._p("caption_period"))
        return self._auto_period if period == AUTO_PERIOD else period

    # ---- embeddings --------------------------------------------------------------------------------
    def _load_clip(self) -> None:
        from av_scene_vlm.core.engine import ZeroShotEngine

        model = self._p("caption_clip_model")
        self.get_logger().info(f"loading CLIP model '{model}' for scene-change detection")
        self._clip = ZeroShotEngine(model, device=self._p("caption_device"))

    def _on_similarity(self, cam: Camera, msg: Similarity) -> None:
        self._similarity_received += 1
        if len(msg.image_embedding) == 0:
            self._empty_embeddings += 1  # clip_node runs with publish_embedding:=false
            return
        emb = np.asarray(msg.image_embedding, dtype=np.float32)
        with self._emb_lock:
            self._embeddings[cam.topic].append((_key(msg.header), emb))

    def _received_embedding(self, cam: Camera, key: _StampKey, *, exact: bool) -> np.ndarray | None:
        """The similarity embedding of the frame `key`, else (unless `exact`) the newest one."""
        with self._emb_lock:
            history = self._embeddings[cam.topic]
            for k, emb in reversed(history):
                if k == key:
                    return emb
            return None if exact or not history else history[-1][1]

    def _computed_embedding(self, rgb: np.ndarray) -> np.ndarray | None:
        if self._clip is None and not self._clip_error:
            try:
                self._load_clip()  # threshold raised at runtime: load here, off the executor
            except ModelLoadError as exc:
                self._clip_error = str(exc)
                self.get_logger().error(f"scene-change detection disabled: {exc}")
        return None if self._clip is None else self._clip.encode_images([rgb])[0]

    def _scene_changed(self, cam: Camera, embedding: np.ndarray | None, threshold: float) -> bool:
        ref = self._reference.get(cam.topic)
        if ref is None or embedding is None:
            return False
        key, ref_emb = ref
        if ref_emb is None:  # the captioned frame's similarity came late: look again
            ref_emb = self._received_embedding(cam, key, exact=True)
            if ref_emb is None:
                return False
            self._reference[cam.topic] = (key, ref_emb)
        if ref_emb.shape != embedding.shape:
            return False
        return cosine_distance(embedding, ref_emb) > threshold

    # ---- worker ------------------------------------------------------------------------------------
    def _run(self) -> None:
        # Before the first torch op, so torch's OpenMP threads for this worker inherit the priority.
        self._thread_info["nice_error"] = lower_thread_priority(self._nice)
        if self._thread_info["nice_error"]:
            self.get_logger().warning(f"caption_nice not applied: {self._thread_info['nice_error']}")
        self._thread_info["torch_threads"] = str(pin_torch_threads(self._torch_threads))
        use_own_cuda_stream(self.captioner.device)
        super()._run()

    def _step(self) -> None:
        items = self.inputs.take(len(self.cameras), timeout=0.2)
        if not items:
            return
        period = self._period()
        threshold = float(self._p("caption_scene_change_threshold"))
        use_cv_bridge = bool(self._p("use_cv_bridge"))
        now = time.monotonic()
        work: list[_Work] = []
        for cam, msg, received in items:
            due = now - self._last_caption.get(cam.topic, -1e18) >= period
            if not due and threshold <= 0:
                cam.skipped_period += 1
                continue
            if not due and self._source == "similarity_topic":  # decide before decoding
                emb = self._received_embedding(cam, _key(msg.header), exact=False)
                if not self._scene_changed(cam, emb, threshold):
                    cam.skipped_period += 1
                    continue
            try:
                rgb = image_to_rgb(msg, use_cv_bridge=use_cv_bridge, max_pixels=self.inputs.max_frame_pixels)
            except ImageDecodeError as exc:
                self.inputs.reject(cam, exc)
                continue
            computed = None
            if self._source == "compute" and threshold > 0:
                with failures_counted([cam]):
                    computed = self._computed_embedding(rgb)
                if not due and not self._scene_changed(cam, computed, threshold):
                    cam.skipped_period += 1
                    continue
            self._last_caption[cam.topic] = now
            work.append(_Work(cam, msg.header, rgb, received, computed, triggered=not due))
        if work:
            with failures_counted(w.camera for w in work):
                self._caption(work)

    def _caption(self, work: list[_Work]) -> None:
        results = self.captioner.caption_batch([w.rgb for w in work], str(self._p("caption_prompt")))
        self._latency.add(results[0].latency)
        publish_text = bool(self._p("publish_text"))
        model = self.captioner.model_id
        for w, r in zip(work, results, strict=True):
            cam = w.camera
            cap_pub, text_pub = self._pubs[cam.topic]
            cap_pub.publish(to_caption(w.header, r.text, r.prompt, model, r.latency, r.num_tokens))
            if publish_text:
                text_pub.publish(String(data=r.text))
            key = _key(w.header)
            emb = w.embedding
            if emb is None and self._source == "similarity_topic":
                # Generation took a while: clip_node has usually published this frame's embedding.
                emb = self._received_embedding(cam, key, exact=True)
            self._reference[cam.topic] = (key, emb)
            done = time.monotonic()
            self.captions += 1
            self.triggered += int(w.triggered)
            self._tokens.add(r.num_tokens)
            self._caption_rate.tick(done)
            cam.processed += 1
            cam.output_rate.tick(done)
            cam.node_latency.add(done - w.received)
            stamp_ns = w.header.stamp.sec * 10**9 + w.header.stamp.nanosec
            cam.latency.add((self.get_clock().now().nanoseconds - stamp_ns) / 1e9)

    # ---- diagnostics ----------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        name = self.get_fully_qualified_name()
        threshold = float(self._p("caption_scene_change_threshold"))
        level, message = DiagnosticStatus.OK, f"{self.captions} captions"
        if threshold > 0 and self._source == "similarity_topic" and self._empty_embeddings:
            level, message = DiagnosticStatus.WARN, "similarity has no image_embedding (publish_embedding)"
        elif self._clip_error:
            level, message = DiagnosticStatus.WARN, "scene-change detection disabled: CLIP model failed"
        level, message = self.worker_errors.escalate(level, message)
        arr.status.append(
            DiagnosticStatus(
                level=level,
                name=f"{name}: captioner",
                hardware_id=str(self.captioner.device),
                message=message,
                values=kv(
                    model=self.captioner.model_id,
                    device=self.captioner.device,
                    dtype=dtype_name(self.captioner.dtype),
                    captions=self.captions,
                    captions_per_min=f"{self._caption_rate.rate() * 60:.2f}",
                    caption_period_s=f"{self._period():g}",
                    latency_p50_ms=f"{self._latency.get(0.5) * 1e3:.1f}",
                    latency_p95_ms=f"{self._latency.get(0.95) * 1e3:.1f}",
                    tokens_p50=f"{self._tokens.get(0.5):.0f}",
                    scene_change_triggers=self.triggered,
                    embedding_source=self._source,
                    similarity_received=self._similarity_received,
                    torch_threads=self._thread_info["torch_threads"],
                    nice=self._nice,
                    worker_errors=self.worker_errors.count,
                    last_worker_error=self.worker_errors.last,
                ),
            )
        )
        for cam in self.cameras:
            arr.status.append(camera_status(name, cam, captions=cam.processed))
        self._diag_pub.publish(arr)


def main(args: list[str] | None = None) -> int:
    """Entry point of `ros2 run av_scene_vlm caption_node`."""
    return run_nodes([CaptionNode], args, PARAMETERS)


if __name__ == "__main__":
    sys.exit(main())
