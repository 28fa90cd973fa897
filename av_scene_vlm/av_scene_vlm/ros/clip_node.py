"""`clip_node`: CLIP zero-shot classification, similarity and heatmaps for one or more cameras.

A managed (lifecycle) node: configure loads the model and encodes the prompts, activate subscribes
to the cameras and publishes the latched label map (see `worker_node` for the whole life cycle).
Executor callbacks only store the newest frame per camera; a worker thread batches the newest frames
of all cameras into one engine call, so the node never falls behind and parameter services answer
while inference runs. Every output copies the source image header.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from av_scene_vlm.core import result_messages as messages
from av_scene_vlm.core.batch_limit import BatchLimit
from av_scene_vlm.core.event_detector import EventBank, Transition, stamp_ns
from av_scene_vlm.core.smoothing import EmaSmoother
from av_scene_vlm.ros.camera_input import Camera, Percentiles, RateMeter, failures_counted
from av_scene_vlm.ros.clip_parameters import EXAMPLES, PARAMETERS
from av_scene_vlm.ros.conversions import bgr_to_image, ros_message
from av_scene_vlm.ros.node_utils import (
    dtype_name,
    pin_torch_threads,
    run_nodes,
)
from av_scene_vlm.ros.settings import ClipSettings
from av_scene_vlm.ros.worker_node import LATCHED, Frame, WorkerNode
from av_scene_vlm_msgs.msg import ClassificationArray, LabelInfo, SceneEvent, SceneEventArray, Similarity

if TYPE_CHECKING:
    from av_scene_vlm.core.engine import FrameResult, PendingBatch, ZeroShotEngine


class ClipNode(WorkerNode):
    """The classifier node; see the module docstring and README for topics and parameters.

    `engine`: a loaded engine to use instead of loading `model` (tests); the node never drops it."""

    PARAMETERS = PARAMETERS
    EXAMPLES = EXAMPLES
    SETTINGS = ClipSettings
    OUTPUTS: ClassVar = {
        "classification": ClassificationArray,
        "similarity": Similarity,
        "heatmap": Image,
        "events": SceneEvent,
    }
    STATUS_NAME = "engine"
    WORKER_WHAT = "inference"

    def __init__(
        self, name: str = "clip_node", *, engine: ZeroShotEngine | None = None, **kwargs: Any
    ) -> None:
        self._given_engine = engine
        self.engine: ZeroShotEngine | None = None
        super().__init__(name, **kwargs)

    # ---- lifecycle ------------------------------------------------------------------------------
    def _configure(self, s: ClipSettings) -> None:
        if self._given_engine is None:
            s.engine.check(validated=True)  # a missing model fails here, before torch is imported
            self.get_logger().info(
                f"loading CLIP model '{s.engine.model}' (device={s.engine.device}, dtype={s.engine.dtype}, "
                f"backend={s.engine.backend}, precision={s.engine.precision})"
            )
            self.engine = s.engine.build(s.tasks, s.templates)
        else:
            self.engine = self._given_engine
            self.engine.set_tasks(s.tasks, s.templates)
        self.engine.prepare()  # encode prompts before the first frame
        import torch  # loaded with the engine

        # Pinned in the worker so a second model worker in this process (scene_vlm) cannot change it.
        self._torch_threads = torch.get_num_threads()
        self.smoother = EmaSmoother()
        self._last_publish: dict[str, float] = {}
        self._label_pubs = {
            ns: self.publisher(LabelInfo, f"{ns.rstrip('/')}/labels", LATCHED)
            for ns in dict.fromkeys(c.namespace for c in self.cameras)
        }
        # Scene events: on the raw probabilities of each frame, by frame stamp (docs/SCENE_EVENTS.md).
        self.scene_events = EventBank(s.events)
        self._active_pubs = {
            c.topic: self.publisher(SceneEventArray, f"{c.namespace.rstrip('/')}/active_events", LATCHED)
            for c in self.cameras
        }
        self._engine_time = Percentiles()
        self._processed_rate = RateMeter()
        self._batches = 0
        self.batch_limit = BatchLimit()
        self._pending: tuple[ClipSettings, list[Frame], PendingBatch] | None = None
        self.get_logger().info(
            f"classifying {', '.join(c.topic for c in self.cameras)} with {len(s.tasks)} task(s) on "
            f"{self.engine.device} ({dtype_name(self.engine.dtype)}), image tower: {self._backend_text()}, "
            f"CUDA graphs: {self.engine.graphs_state()}"
        )

    def _release(self) -> None:
        self.engine = None
        self._pending = None

    def _activate(self) -> None:
        self._publish_labels()
        for cam in self.cameras:  # the latched list, empty until an event starts
            self._publish_active(cam.topic, Header(stamp=self.get_clock().now().to_msg()))

    def _apply(self, old: ClipSettings, new: ClipSettings) -> None:
        """New label sets: swapped into the engine at once, re-encoded by the worker. New events: the
        open events of a removed definition end (published now, at the last frame seen)."""
        if new.events != old.events and self.engine is not None:
            for camera, ended in self.scene_events.redefine(new.events).items():
                self._publish_transitions(camera, ended)
        if (new.tasks, new.templates) == (old.tasks, old.templates) or self.engine is None:
            return
        self.engine.set_tasks(new.tasks, new.templates)
        self.smoother.clear()
        if self.state == "active":
            self._publish_labels()
        names = [t.name for t in new.tasks]
        self.get_logger().info(
            f"labels changed: {len(names)} task(s) {names}; texts re-encode on the next frame"
        )

    def _backend_text(self) -> str:
        """'torch, precision P (why)' or 'onnxruntime [providers], N threads, precision P (why), graph ...
        (cached|exported in s)'."""
        info = self.engine.backend_info()
        precision = f"precision {info.get('precision')} ({info.get('precision_reason')})"
        if info.get("backend") != "onnxruntime":
            return f"{info.get('backend')}, {precision}"
        how = "cached" if info.get("cache_hit") else f"exported in {info.get('graph_seconds')} s"
        return (
            f"onnxruntime {info.get('providers')}, {info.get('threads')} threads, {precision}, "
            f"graph {info.get('graph')} ({how})"
        )

    def _publish_labels(self) -> None:
        engine = self.engine
        header = Header(stamp=self.get_clock().now().to_msg())
        msg = messages.label_info(ros_message, header, engine.tasks, engine.templates, engine.model_id)
        for pub in self._label_pubs.values():
            pub.publish(msg)

    # ---- worker ---------------------------------------------------------------------------------
    def _run(self) -> None:
        pin_torch_threads(self._torch_threads)
        super()._run()

    def _publish_transitions(self, camera: str, transitions: list[Transition]) -> None:
        """SceneEvent messages, then the camera's new latched list of open events."""
        if not transitions or self.state != "active":
            return
        pub = self._pubs[camera]["events"]
        for t in transitions:
            pub.publish(messages.scene_event(ros_message, t))
        self._publish_active(camera, transitions[-1].header)

    def _publish_active(self, camera: str, header: Header) -> None:
        msg = messages.scene_event_array(ros_message, header, camera, self.scene_events.open_events(camera))
        self._active_pubs[camera].publish(msg)

    def _due(self, cam: Camera, period: float, now: float) -> bool:
        """`min_publish_period`: a camera's frame is skipped until the period since its last result."""
        return period <= 0 or now - self._last_publish.get(cam.topic, -1e9) >= period

    def _step(self) -> None:
        """Take and submit the next batch, then publish the one before it: on CUDA the next batch's
        frames are decoded, copied and uploaded while the GPU computes the current one. With a batch
        in flight the worker does not wait for frames (its results are due)."""
        pending, self._pending = self._pending, None
        s, frames = self.take_frames(
            self.batch_limit.size(self.settings.max_batch),
            lambda s, cam, _msg, now: self._due(cam, s.min_publish_period, now),
            timeout=0.0 if pending is not None else 0.2,
        )
        try:
            if frames:
                self._pending = (s, frames, self._submit(s, frames))
        finally:
            if pending is not None:
                self._complete(*pending)

    def _drain(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            self._complete(*pending)

    def _submit(self, s: ClipSettings, frames: list[Frame]) -> PendingBatch:
        heat = [
            s.heatmap and self._pubs[f.camera.topic]["heatmap"].get_subscription_count() > 0 for f in frames
        ]
        with self._batch_failures(frames):
            return self.engine.submit(
                [f.rgb for f in frames],
                heatmap=heat,
                heatmap_task=s.heatmap_task or None,
                heatmap_label=s.heatmap_label or None,
            )

    def _complete(self, s: ClipSettings, frames: list[Frame], pending: PendingBatch) -> None:
        with self._batch_failures(frames):
            results = pending.result()
        self.batch_limit.succeeded(s.max_batch)
        self._engine_time.add(results[0].latency)
        self._batches += 1
        for frame, result in zip(frames, results, strict=True):
            self._publish(frame, result, s)

    @contextmanager
    def _batch_failures(self, frames: list[Frame]) -> Iterator[None]:
        """A batch that raises (CUDA out of memory, ...): its frames counted failed, the next batches
        halved (BatchLimit); the exception goes on to the worker loop, which counts and logs it (and,
        after the `except`, calls `_out_of_memory`)."""
        try:
            with failures_counted(f.camera for f in frames):
                yield
        except Exception:
            self.batch_limit.failed(len(frames))
            raise

    def _out_of_memory(self) -> None:
        """The engine's graphs dropped (captured again at the smaller size) and its cache emptied."""
        if self.engine is not None:
            self.engine.release_memory()
        super()._out_of_memory()

    def _publish(self, frame: Frame, result: FrameResult, s: ClipSettings) -> None:
        from av_scene_vlm.core.overlay import format_lines, overlay_heatmap

        cam, engine = frame.camera, self.engine
        pubs = self._pubs[cam.topic]
        smoothed = self.smoother.update(cam.topic, result.tasks, s.smoothing)
        stamp = stamp_ns(frame.header.stamp.sec, frame.header.stamp.nanosec)
        self._publish_transitions(
            cam.topic, self.scene_events.update(cam.topic, stamp, result.tasks, frame.header)
        )
        pubs["classification"].publish(
            messages.classification_array(ros_message, frame.header, result, engine.model_id, smoothed)
        )
        if s.publish_similarity:
            pubs["similarity"].publish(
                messages.similarity(
                    ros_message,
                    frame.header,
                    result,
                    engine.model_id,
                    engine.logit_scale,
                    embedding=s.publish_embedding,
                )
            )
        if result.heatmap is not None:
            bgr = overlay_heatmap(
                frame.rgb,
                result.heatmap,
                alpha=s.heatmap_alpha,
                lines=[f"heatmap: {result.heatmap_task} = {result.heatmap_label}", *format_lines(result)],
                max_width=s.heatmap_max_width,
            )
            pubs["heatmap"].publish(bgr_to_image(bgr, frame.header))
        self._last_publish[cam.topic] = self.finish(frame, result.latency)
        self._processed_rate.tick(self._last_publish[cam.topic])

    # ---- diagnostics ----------------------------------------------------------------------------
    def _status(self, s: ClipSettings) -> tuple[int, str, str, dict[str, object]]:
        engine = self.engine
        fps = self._processed_rate.rate()
        level, message = DiagnosticStatus.OK, f"{fps:.1f} frames/s"
        limit = self.batch_limit.size(s.max_batch)
        if limit < min(s.max_batch, len(self.cameras)):  # errors make it ERROR while they keep coming
            level, message = DiagnosticStatus.WARN, f"{message}; batches held at {limit} after a failure"
        return (
            level,
            message,
            str(engine.device),
            {
                "model": engine.model_id,
                "device": engine.device,
                "dtype": dtype_name(engine.dtype),
                "backend": engine.backend,
                "precision": engine.precision,
                "precision_reason": engine.precision_reason,
                "onnx_providers": ",".join(engine.providers),
                "processed_fps": f"{fps:.2f}",
                "engine_time_p50_ms": f"{self._engine_time.get(0.5) * 1e3:.2f}",
                "engine_time_p95_ms": f"{self._engine_time.get(0.95) * 1e3:.2f}",
                "batches": self._batches,
                "cuda_graphs": engine.graphs_state(),
                **engine.graph_stats(),
                "batch_limit": limit,
                "failed_batches": self.batch_limit.failures,
                "tasks": ",".join(t.name for t in engine.tasks),
                "text_encoder_calls": engine.text_encoder_calls,
                "worker_errors": self.worker_errors.count,
                "last_worker_error": self.worker_errors.last,
            },
        )

    def _camera_values(self, cam: Camera) -> dict[str, object]:
        started, ended = self.scene_events.counts(cam.topic)
        return {
            "events_started": started,
            "events_ended": ended,
            "events_open": ",".join(t.name for t in self.scene_events.open_events(cam.topic)),
            "slot_wait_p50_ms": f"{cam.slot_wait.get(0.5) * 1e3:.2f}",
            "node_overhead_p50_ms": f"{cam.overhead.get(0.5) * 1e3:.2f}",
            "node_overhead_p95_ms": f"{cam.overhead.get(0.95) * 1e3:.2f}",
        }


def main(args: list[str] | None = None) -> int:
    """Entry point of `ros2 run av_scene_vlm clip_node`."""
    return run_nodes([ClipNode], args, PARAMETERS)


if __name__ == "__main__":
    sys.exit(main())
