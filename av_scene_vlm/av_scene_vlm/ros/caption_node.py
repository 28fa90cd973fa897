"""`caption_node`: Qwen2.5-VL scene captions of one or more cameras at a low rate.

A managed (lifecycle) node like clip_node (`worker_node`): configure loads the captioner (and the
scene-change CLIP model), activate subscribes to the cameras and to clip_node's similarity topics.

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
`publish_text`), `<ns>/answer` (SceneAnswer: each question answered), `/diagnostics` (captions,
latency p50/p95, dropped / skipped / bad frames, model, questions).

Questions: the AskScene action `<node>/ask_scene` (`ask_server`), answered by the same captioner on
the same worker, before periodic captions.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header, String

from av_scene_vlm.core import result_messages as messages
from av_scene_vlm.core.batch_limit import BatchLimit
from av_scene_vlm.core.device_lock import is_out_of_memory
from av_scene_vlm.core.models import ModelLoadError
from av_scene_vlm.core.scene_change import SceneChangeDetector, StampKey
from av_scene_vlm.ros.ask_server import AskServer
from av_scene_vlm.ros.camera_input import Camera, Percentiles, RateMeter, failures_counted, output_topic
from av_scene_vlm.ros.caption_parameters import EXAMPLES, PARAMETERS
from av_scene_vlm.ros.conversions import ros_message
from av_scene_vlm.ros.node_utils import (
    dtype_name,
    lower_thread_priority,
    pin_torch_threads,
    run_nodes,
    use_own_cuda_stream,
)
from av_scene_vlm.ros.settings import AUTO_PERIOD, CaptionSettings, auto_caption_period
from av_scene_vlm.ros.worker_node import Frame, WorkerNode
from av_scene_vlm_msgs.msg import Caption, SceneAnswer, Similarity

if TYPE_CHECKING:
    from av_scene_vlm.core.captioner import Captioner
    from av_scene_vlm.core.engine import ZeroShotEngine

__all__ = ["EXAMPLES", "PARAMETERS", "CaptionNode", "auto_caption_period"]

COMPILE_RETRIES = 3  # failed compiles tried again, each COMPILE_RETRY_S x its number later
COMPILE_RETRY_S = 60.0
_EMBEDDING_HISTORY = 64  # similarity messages kept per camera for stamp matching (~2 s at 30 Hz)


def _key(header: Header) -> StampKey:
    return (header.stamp.sec, header.stamp.nanosec, header.frame_id)


@dataclass
class _Work(Frame):
    embedding: np.ndarray | None = None  # computed embedding (compute source), else resolved after captioning
    triggered: bool = False  # captioned for a scene change, before its period was over


class CaptionNode(WorkerNode):
    """The captioner node; see the module docstring and README for topics and parameters.

    `captioner`: a loaded captioner to use instead of loading `caption_model` (tests)."""

    PARAMETERS = PARAMETERS
    EXAMPLES = EXAMPLES
    SETTINGS = CaptionSettings
    OUTPUTS: ClassVar = {"caption": Caption, "caption_text": String, "answer": SceneAnswer}
    STATUS_NAME = "captioner"
    WORKER_WHAT = "captioning"
    STOP_TIMEOUT_S = 10.0  # a caption in progress may take seconds

    def __init__(
        self, name: str = "caption_node", *, captioner: Captioner | None = None, **kwargs: Any
    ) -> None:
        self._given_captioner = captioner
        self.captioner: Captioner | None = None
        self._clip: ZeroShotEngine | None = None
        self._similarity_subs: list[Any] = []
        self.asks = AskServer()  # before the worker can start (autostart), served once the node exists
        super().__init__(name, **kwargs)
        self.asks.serve(self)

    # ---- lifecycle ------------------------------------------------------------------------------
    def _configure(self, s: CaptionSettings) -> None:
        if self._given_captioner is None:
            s.captioner.check(validated=True)  # missing models fail here, before torch is imported
            if s.computes_embeddings:
                s.clip.check()
            self.get_logger().info(
                f"loading caption model '{s.captioner.model}' (device={s.captioner.device}, "
                f"dtype={s.captioner.dtype})"
            )
            self.captioner = s.captioner.build()
        else:
            self.captioner = self._given_captioner
        self._clip, self._clip_error = None, ""
        if s.computes_embeddings:
            self._load_clip(s)  # now, so a missing CLIP model fails configure like a missing Qwen
        self.scenes = SceneChangeDetector(_EMBEDDING_HISTORY)
        self._similarity_received = 0
        self._empty_embeddings = 0
        self._last_caption: dict[str, float] = {}
        self._latency = Percentiles()
        self._tokens = Percentiles()
        self._caption_rate = RateMeter(window=60.0)
        self.captions = 0
        self.triggered = 0
        self.batch_limit = BatchLimit(recover_after=10)
        self._thread_info = {"torch_threads": "?", "nice_error": ""}
        self.captioner.check_prompt(s.caption_prompt)  # within the budget the static cache is sized for
        self._compile_state = "on, not yet compiled" if self.captioner.compiled else "off"
        self._compile_failures, self._next_compile = 0, None
        self._auto_period, why = auto_caption_period(self.captioner.device)
        if s.caption_period == AUTO_PERIOD:
            self.get_logger().info(
                f"caption_period auto: every {self._auto_period:g} s, because {why}; "
                "set caption_period to choose another period"
            )
        self.get_logger().info(
            f"captioning {', '.join(c.topic for c in self.cameras)} every {self._period(s):g} s with "
            f"'{self.captioner.model_id}' on {self.captioner.device} ({dtype_name(self.captioner.dtype)})"
        )

    def _release(self) -> None:
        self.captioner = None
        self._clip = None

    def _apply(self, old: CaptionSettings, new: CaptionSettings) -> None:
        """A new caption_prompt must fit the prompt-token budget (ValueError with the budget): the
        static cache, hence the compiled decoding step, was sized for it at configure."""
        if new.caption_prompt != old.caption_prompt and self.captioner is not None:
            self.captioner.check_prompt(new.caption_prompt)

    def _activate(self) -> None:
        if self.settings.caption_embedding_source != "similarity_topic":
            return
        # Best effort: a missed embedding only delays a trigger, and never back-pressures clip_node.
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
        self._similarity_subs = [
            self.create_subscription(
                Similarity,
                output_topic(cam, "similarity"),
                lambda msg, cam=cam: self._on_similarity(cam, msg),
                qos,
            )
            for cam in self.cameras
        ]

    def _deactivate(self) -> None:
        self.asks.abort_all(f"the node is deactivating ({self.state})")
        for sub in self._similarity_subs:
            self.destroy_subscription(sub)
        self._similarity_subs = []

    def _period(self, s: CaptionSettings) -> float:
        """Seconds between captions per camera now (`caption_period`, auto resolved)."""
        return self._auto_period if s.caption_period == AUTO_PERIOD else s.caption_period

    # ---- embeddings -----------------------------------------------------------------------------
    def _load_clip(self, s: CaptionSettings) -> None:
        self.get_logger().info(f"loading CLIP model '{s.caption_clip_model}' for scene-change detection")
        self._clip = s.clip.build()

    def _on_similarity(self, cam: Camera, msg: Similarity) -> None:
        self._similarity_received += 1
        if len(msg.image_embedding) == 0:
            self._empty_embeddings += 1  # clip_node runs with publish_embedding:=false
            return
        self.scenes.add(cam.topic, _key(msg.header), np.asarray(msg.image_embedding, dtype=np.float32))

    def _computed_embedding(self, rgb: np.ndarray, s: CaptionSettings) -> np.ndarray | None:
        if self._clip is None and not self._clip_error:
            try:
                self._load_clip(s)  # threshold raised at runtime: load here, off the executor
            except ModelLoadError as exc:
                self._clip_error = str(exc)
                self.get_logger().error(f"scene-change detection disabled: {exc}")
        return None if self._clip is None else self._clip.encode_images([rgb])[0]

    # ---- worker ---------------------------------------------------------------------------------
    def _run(self) -> None:
        s = self.settings
        # Before the first torch op, so torch's OpenMP threads for this worker inherit the priority.
        self._thread_info["nice_error"] = lower_thread_priority(s.caption_nice)
        if self._thread_info["nice_error"]:
            self.get_logger().warning(f"caption_nice not applied: {self._thread_info['nice_error']}")
        self._thread_info["torch_threads"] = str(pin_torch_threads(s.caption_num_threads))
        use_own_cuda_stream(self.captioner.device)
        self._warm_up()
        super()._run()

    def _warm_up(self) -> None:
        """Compile the decoding step before the first caption (once per configure); frames that come
        meanwhile wait in their slots (newer ones replace them, counted as dropped). A failed compile
        captions eagerly and is tried again later (COMPILE_RETRIES times, further apart each time; out
        of memory also halves the batches, and the retry compiles for the smaller size)."""
        captioner = self.captioner
        if not captioner.compiled or captioner.compile_seconds is not None:
            return
        sizes = sorted({1, self.batch_limit.size(len(self.cameras))})
        self._compile_state = "compiling"
        self.get_logger().info(f"compiling the caption decoder for batches of {sizes} (~1 min on a GPU)")
        failure, out_of_memory = "", False
        try:
            seconds = captioner.warm_up(sizes)
        except Exception as exc:  # compiling is an optimisation: caption eagerly meanwhile
            captioner.use_eager()
            failure, out_of_memory = f"{type(exc).__name__}: {exc}"[:300], is_out_of_memory(exc)
            if out_of_memory:
                self.batch_limit.failed(max(sizes))
        if failure:  # outside the except: the traceback's tensors are gone before memory is released
            if out_of_memory:
                self._out_of_memory()
            self._compile_failures += 1
            retry = self._compile_failures <= COMPILE_RETRIES
            self._next_compile = (
                time.monotonic() + COMPILE_RETRY_S * self._compile_failures if retry else None
            )
            then = f"tried again in {COMPILE_RETRY_S * self._compile_failures:g} s" if retry else "for good"
            self._compile_state = f"failed, eager ({then}): {failure}"[:300]
            self.get_logger().error(
                f"compiling the caption model failed, captions run eagerly, {then}: {failure}"
            )
            return
        self._compile_state = f"compiled in {seconds:.1f} s"
        self.get_logger().info(f"caption model compiled in {seconds:.1f} s")

    def _retry_compile(self) -> None:
        """A failed compile's retry, when it is due (on the worker, between batches)."""
        due = self._next_compile
        if due is not None and time.monotonic() >= due:
            self._next_compile = None
            self.captioner.use_compiled()
            self._warm_up()

    def _keep(self, s: CaptionSettings, cam: Camera, msg: Any, now: float) -> bool:
        """Before decoding: a frame is due, or may be a new scene (decided here when the embedding
        comes from clip_node, after computing it otherwise)."""
        due = now - self._last_caption.get(cam.topic, -1e18) >= self._period(s)
        threshold = s.caption_scene_change_threshold
        if due or threshold <= 0 or s.caption_embedding_source != "similarity_topic":
            return due or threshold > 0
        emb = self.scenes.received(cam.topic, _key(msg.header), exact=False)
        return self.scenes.changed(cam.topic, emb, threshold)

    def stop_worker(self, timeout: float | None) -> bool:
        """Also end the questions still waiting (SIGINT/SIGTERM): their clients see them aborted."""
        ended = super().stop_worker(timeout)
        self.asks.abort_all("the node is shutting down")
        return ended

    def destroy_node(self) -> None:
        self.asks.destroy()
        super().destroy_node()

    def replies_pending(self) -> bool:
        """Action results the executor has yet to send (`run_nodes` spins a little for them)."""
        return self.asks.replies_pending()

    def _step(self) -> None:
        self._retry_compile()
        job = self.asks.next_job()  # questions first: one waits for at most the caption in progress
        if job is not None:
            self.asks.answer(job, self.captioner, self.settings, self._stop.is_set)
            return
        s, frames = self.take_frames(self.batch_limit.size(len(self.cameras)), self._keep)
        period, threshold = self._period(s), s.caption_scene_change_threshold
        work: list[_Work] = []
        for frame in frames:
            cam = frame.camera
            due = frame.picked - self._last_caption.get(cam.topic, -1e18) >= period
            computed = None
            if s.caption_embedding_source == "compute" and threshold > 0:
                with failures_counted([cam]):
                    computed = self._computed_embedding(frame.rgb, s)
                if not due and not self.scenes.changed(cam.topic, computed, threshold):
                    cam.skipped_period += 1
                    continue
            self._last_caption[cam.topic] = frame.picked
            work.append(_Work(**vars(frame), embedding=computed, triggered=not due))
        if work:
            try:
                with failures_counted(w.camera for w in work):
                    self._caption(work, s)
            except Exception:  # out of memory, ...: smaller batches next, then counted and logged
                self.batch_limit.failed(len(work))
                raise
            self.batch_limit.succeeded(len(self.cameras))

    def _caption(self, work: list[_Work], s: CaptionSettings) -> None:
        # Padded to a compiled size only within the batch limit (a halved batch must stay halved).
        limit = self.batch_limit.size(len(self.cameras))
        results = self.captioner.caption_batch([w.rgb for w in work], s.caption_prompt, max_batch=limit)
        self._latency.add(results[0].latency)
        model = self.captioner.model_id
        for w, r in zip(work, results, strict=True):
            pubs = self._pubs[w.camera.topic]
            pubs["caption"].publish(
                messages.caption(ros_message, w.header, r.text, r.prompt, model, r.latency, r.num_tokens)
            )
            if s.publish_text:
                pubs["caption_text"].publish(String(data=r.text))
            # Generation took a while: clip_node has usually published this frame's embedding by now.
            self.scenes.set_reference(w.camera.topic, _key(w.header), w.embedding)
            self.captions += 1
            self.triggered += int(w.triggered)
            self._tokens.add(r.num_tokens)
            self._caption_rate.tick(self.finish(w))

    # ---- diagnostics ----------------------------------------------------------------------------
    def _status(self, s: CaptionSettings) -> tuple[int, str, str, dict[str, object]]:
        level, message = DiagnosticStatus.OK, f"{self.captions} captions"
        if self._compile_state == "compiling":
            message = "compiling the caption model's decoding step; captions start after it"
        from_topic = s.caption_embedding_source == "similarity_topic"
        if s.caption_scene_change_threshold > 0 and from_topic and self._empty_embeddings:
            level, message = DiagnosticStatus.WARN, "similarity has no image_embedding (publish_embedding)"
        elif self._clip_error:
            level, message = DiagnosticStatus.WARN, "scene-change detection disabled: CLIP model failed"
        limit = self.batch_limit.size(len(self.cameras))
        if self.batch_limit.reduced:
            level = max(level, DiagnosticStatus.WARN)
            message = f"{message}; captions held at {limit} per batch after a failure"
        captioner = self.captioner
        return (
            level,
            message,
            str(captioner.device),
            {
                "model": captioner.model_id,
                "device": captioner.device,
                "dtype": dtype_name(captioner.dtype),
                "captions": self.captions,
                "compile": self._compile_state,
                "compile_failures": self._compile_failures,
                "prompt_token_budget": captioner.prompt_token_budget,
                "captions_per_min": f"{self._caption_rate.rate() * 60:.2f}",
                "caption_period_s": f"{self._period(s):g}",
                "latency_p50_ms": f"{self._latency.get(0.5) * 1e3:.1f}",
                "latency_p95_ms": f"{self._latency.get(0.95) * 1e3:.1f}",
                "tokens_p50": f"{self._tokens.get(0.5):.0f}",
                "scene_change_triggers": self.triggered,
                "embedding_source": s.caption_embedding_source,
                "similarity_received": self._similarity_received,
                "torch_threads": self._thread_info["torch_threads"],
                "nice": s.caption_nice,
                "batch_limit": limit,
                "failed_batches": self.batch_limit.failures,
                "worker_errors": self.worker_errors.count,
                "last_worker_error": self.worker_errors.last,
                **self.asks.values(),
            },
        )

    def _camera_values(self, cam: Camera) -> dict[str, object]:
        return {"captions": cam.processed}


def main(args: list[str] | None = None) -> int:
    """Entry point of `ros2 run av_scene_vlm caption_node`."""
    return run_nodes([CaptionNode], args, PARAMETERS)


if __name__ == "__main__":
    sys.exit(main())
