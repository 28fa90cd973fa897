"""`WorkerNode`: the managed (lifecycle) node clip_node and caption_node are, and all they share
around their model; the nodes themselves only wire a model to it.

- constructor: the parameters (type errors are kept for configure), /diagnostics; with `autostart`
  (default) configure and activate at once, raising the reason when either fails (`ros2 run` exits
  1 for a model, 2 for a parameter, one line each, as before);
- configure: the parameters become one settings snapshot (`settings`), the cameras are planned, the
  result publishers made and the model loaded (`_configure`); a failure returns FAILURE with the
  one-line reasons logged, and the node stays unconfigured and fixable (`ros2 param set`: what
  configure reads is read-only only from configure to cleanup);
- activate: publishers on, `_activate` (clip_node's latched labels), the worker, then the camera
  subscriptions; deactivate: the reverse, so nothing is published while inactive (services answer),
  and the memory the worker and the subscriptions freed is given back (`release_memory`: without it
  glibc keeps it in per-thread arenas and every cycle added ~20 MB of RSS in the soak);
- cleanup: the model (`_release`), publishers and cameras dropped and the memory given back
  (`release_memory`); shutdown does what its state needs, from any state;
- the worker loop and what a failed step leads to (out of memory, a sticky CUDA error: FATAL, the
  lifecycle's error state, exit code 3) are in ros/worker_loop.py.

The worker's share: `take_frames` (newest frames, skipped before decoding when the node says so,
decoded with bad frames counted and logged), `finish` (per-frame bookkeeping) and the diagnostics
preamble (the node's status with its lifecycle state, one status per camera while active).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header

from av_scene_vlm.core.image_codec import ImageDecodeError
from av_scene_vlm.core.models import ModelLoadError
from av_scene_vlm.core.tasks import TaskError
from av_scene_vlm.ros.camera_input import Camera, CameraInputs, output_topic
from av_scene_vlm.ros.conversions import image_to_rgb
from av_scene_vlm.ros.diagnostics import WorkerErrors, node_diagnostics
from av_scene_vlm.ros.node_utils import INPUT_EXAMPLES, lifecycle_state, release_memory
from av_scene_vlm.ros.parameters import (
    ParameterTypeError,
    ParamSpec,
    coerce,
    declare_parameters,
    restore_declared_types,
    set_read_only,
    typed_values,
)
from av_scene_vlm.ros.worker_loop import WorkerLoop

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
ERROR = TransitionCallbackReturn.ERROR
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
# What a failed configure can raise: a model (exit 1 under autostart), a parameter or task (exit 2).
CONFIGURE_ERRORS = (ModelLoadError, TaskError, ValueError)


@dataclass
class Frame:
    """A decoded frame the worker took: its camera, source header, pixels and times (monotonic)."""

    camera: Camera
    header: Header
    rgb: np.ndarray
    received: float  # the callback stored it
    picked: float  # the worker took it


class WorkerNode(WorkerLoop, LifecycleNode):
    """See the module docstring. Subclasses set the class attributes and implement `_configure`,
    `_release`, `_step` and `_status`; `_activate`, `_deactivate` and `_apply` are optional."""

    PARAMETERS: ClassVar[Mapping[str, ParamSpec]] = {}
    EXAMPLES: ClassVar[Mapping[str, object]] = {}
    SETTINGS: ClassVar[Any]  # a settings class with `parse(values, previous=None, changed=())`
    OUTPUTS: ClassVar[Mapping[str, type]] = {}  # per camera: leaf under its namespace -> message type
    STATUS_NAME = "worker"  # diagnostics: "<node>: <STATUS_NAME>"
    WORKER_WHAT = "model work"  # for log lines: "<what> failed: ..."
    STOP_TIMEOUT_S = 5.0  # how long destroy_node waits for a step in progress

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self._specs = dict(self.PARAMETERS)
        self._examples = {**INPUT_EXAMPLES, **self.EXAMPLES}
        declare_parameters(self, self._specs, self._examples, strict=False, read_only=False)
        self.settings: Any = None  # the snapshot, from configure to cleanup
        self.cameras: list[Camera] = []
        self.inputs: CameraInputs | None = None
        self.worker_errors = WorkerErrors()
        self.transition_error: Exception | None = None  # why the last transition failed
        self.fatal_error: BaseException | None = None  # the sticky device error that stopped the node
        self._fatal_signal = self.create_guard_condition(self._enter_error_state)
        self._pubs: dict[str, dict[str, Any]] = {}  # camera topic -> leaf -> publisher
        self._publishers_made: list[Any] = []
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._autostarting = False
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._diag_timer = self._diagnostics_timer(self._startup_diagnostics_period())
        self.add_on_set_parameters_callback(self._on_set_parameters)
        if self._value("autostart", True) is not False:
            try:
                self.start()
            except BaseException:
                # Nobody holds a node whose constructor raised: destroy it now, or its services (a
                # stale /<name>/change_state among them) stay in the graph until garbage collection.
                self.destroy_node()
                raise

    # ---- parameters ------------------------------------------------------------------------------
    def _value(self, name: str, fallback: Any) -> Any:
        """A parameter's value as its declared type, or `fallback` while it has another type."""
        try:
            return coerce(name, self.get_parameter(name).value, self._specs[name])
        except (ParameterTypeError, KeyError):
            return fallback

    def _diagnostics_timer(self, period: float) -> Any:
        """/diagnostics every `period` s of steady time: with `use_sim_time` a paused, looping or
        jumping /clock must not stop, flood or skip a node's health reports."""
        return self.create_timer(period, self._publish_diagnostics, clock=self._steady)

    def _startup_diagnostics_period(self) -> float:
        period = self._value("diagnostics_period", 1.0)
        return period if period > 0 else 1.0  # an invalid one fails configure with the reason

    def _proposed(self, params: list[Parameter]) -> dict[str, Any]:
        """Every parameter value as it would be after a change, for validating it whole; ValueError
        with the one-line reason when a new value has the wrong type."""
        restore_declared_types(self, params, self._specs)
        new = typed_values(self, self._specs, self._examples)
        for param in params:
            spec = self._specs.get(param.name)
            if spec is None:
                continue
            try:
                new[param.name] = coerce(param.name, param.value, spec, self._examples.get(param.name))
            except ParameterTypeError as exc:
                raise ValueError(exc.line("runtime", self.get_fully_qualified_name())) from None
        return new

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """While configured, a change is validated as a whole new settings snapshot and swapped in;
        unconfigured, values only need their type (configure reads them)."""
        old = self.settings
        if old is None:
            return SetParametersResult(successful=True)
        try:
            new = self.SETTINGS.parse(self._proposed(params), old, {p.name for p in params})
            self._apply(old, new)
        except (*CONFIGURE_ERRORS, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self.settings = new
        return SetParametersResult(successful=True)

    def _apply(self, old: Any, new: Any) -> None:
        """A valid change is about to be swapped in: act on it (e.g. new label sets), or raise."""

    # ---- lifecycle ------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """The lifecycle state: unconfigured, inactive, active or finalized."""
        return lifecycle_state(self)

    def start(self) -> None:
        """Configure and activate (`autostart`); raises the reason a transition failed with."""
        self._autostarting = True
        try:
            for trigger in (self.trigger_configure, self.trigger_activate):
                if trigger() != SUCCESS:
                    raise self.transition_error or RuntimeError(f"{trigger.__name__} failed")
        finally:
            self._autostarting = False

    def _failed(self, what: str, exc: Exception) -> TransitionCallbackReturn:
        self.transition_error = exc
        if not self._autostarting:  # autostart raises it instead: ros2 run prints it once, as FATAL
            known = isinstance(exc, CONFIGURE_ERRORS)
            for line in (str(exc) or type(exc).__name__).splitlines():
                self.get_logger().error(
                    f"{what} failed: {line if known else f'{type(exc).__name__}: {line}'}"
                )
        return FAILURE

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            settings = self.SETTINGS.parse(typed_values(self, self._specs, self._examples))
            self.cameras = settings.inputs.cameras(self.resolve_topic_name)
            for cam in self.cameras:
                self._pubs[cam.topic] = {
                    leaf: self.publisher(msg_type, output_topic(cam, leaf))
                    for leaf, msg_type in self.OUTPUTS.items()
                }
            self._configure(settings)
        except Exception as exc:  # CONFIGURE_ERRORS, and anything a model load may raise
            self._teardown()
            return self._failed("configure", exc)
        self.settings = settings
        self.transition_error = None
        self.worker_errors = WorkerErrors()
        set_read_only(self, self._specs, True)
        if settings.inputs.diagnostics_period != self._diag_timer.timer_period_ns / 1e9:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self._diagnostics_timer(settings.inputs.diagnostics_period)
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # result publishers on
        self._activate()
        self._stop.clear()
        self._worker = threading.Thread(target=self._run, name=f"{self.get_name()}_worker", daemon=True)
        self._worker.start()
        s = self.settings.inputs
        self.inputs = CameraInputs(
            self,
            self.cameras,
            reliability=s.input_reliability,
            depth=s.input_depth,
            max_frame_pixels=s.max_frame_pixels,
        )
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_taking_frames(timeout=None)  # a step in progress finishes and publishes first
        self._deactivate()
        release_memory()  # the frames, buffers and readers just dropped: back to the system
        result = super().on_deactivate(state)
        return ERROR if self.fatal_error is not None else result

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if state.label == "active":
            self.on_deactivate(state)
        self._teardown()
        self.destroy_timer(self._diag_timer)
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_taking_frames(timeout=self.STOP_TIMEOUT_S)
        self._teardown()
        # Back to unconfigured, unless the device is lost for this process: then Finalized.
        return FAILURE if self.fatal_error is not None else SUCCESS

    def _teardown(self) -> None:
        """Drop what configure made: the model (subclass), publishers, cameras, settings; free memory."""
        self._release()
        for pub in self._publishers_made:
            self.destroy_lifecycle_publisher(pub)
        self._publishers_made.clear()
        self._pubs.clear()
        self.cameras = []
        self.settings = None
        set_read_only(self, self._specs, False)
        release_memory()

    def _stop_taking_frames(self, timeout: float | None) -> None:
        """Camera subscriptions gone, then the worker stopped and joined."""
        if self.inputs is not None:
            self.inputs.close()
            self.inputs = None
        worker, self._worker = self._worker, None
        if worker is not None:
            self._stop.set()
            if worker.is_alive():
                worker.join(timeout=timeout)

    def stop_worker(self, timeout: float | None) -> bool:
        """Stop taking frames and stop the worker, waiting at most `timeout` s for a step in progress
        (None: as long as it takes); True when the worker has ended."""
        worker = self._worker
        self._stop_taking_frames(timeout=timeout)
        return worker is None or not worker.is_alive()

    def destroy_node(self) -> None:
        """Stop the worker before the node goes (also on a node whose configure never finished).

        rclpy's LifecycleNode.destroy_node leaves its state machine, which holds the node, to the
        garbage collector: until then the node and a /<name>/change_state server that nobody spins
        stay in the graph, and a client that finds that one first sends its request into the void."""
        self._stop_taking_frames(timeout=self.STOP_TIMEOUT_S)
        super().destroy_node()
        self._state_machine.destroy_when_not_in_use()

    def publisher(self, msg_type: type, topic: str, qos: QoSProfile = RELIABLE) -> Any:
        """A result publisher (lifecycle: publishes only while active), destroyed at cleanup."""
        pub = self.create_lifecycle_publisher(msg_type, topic, qos)
        self._publishers_made.append(pub)
        return pub

    # ---- subclass hooks -------------------------------------------------------------------------
    def _configure(self, settings: Any) -> None:
        """Check and load the model for `settings`; raise one of CONFIGURE_ERRORS to fail."""
        raise NotImplementedError

    def _release(self) -> None:
        """Drop the model and what `_configure` made (also after it failed part-way)."""
        raise NotImplementedError

    def _activate(self) -> None:
        """Called when activating, before the worker and subscriptions start."""

    def _deactivate(self) -> None:
        """Called when deactivating, after the worker stopped."""

    # ---- worker ---------------------------------------------------------------------------------
    def _run(self) -> None:
        """The worker thread; subclasses that set thread-local state first override and call this."""
        self._loop()
        if self.fatal_error is not None:
            return  # nothing in flight can finish on a lost device
        try:
            self._drain()
        except Exception as exc:  # e.g. publishing while the context shuts down: no thread traceback
            self.worker_errors.record(exc)
            self.get_logger().warning(f"{self.WORKER_WHAT} still in flight at stop was lost: {exc}")

    def _drain(self) -> None:
        """The worker is stopping (deactivate, shutdown): finish work still in flight."""

    def _step(self) -> None:
        raise NotImplementedError

    def take_frames(
        self,
        max_frames: int,
        keep: Callable[[Any, Camera, Any, float], bool] | None = None,
        timeout: float = 0.2,
    ) -> tuple[Any, list[Frame]]:
        """The newest frame of up to `max_frames` cameras (waiting up to `timeout` s), decoded, and
        the settings snapshot they are handled with — taken after the wait, so a change made meanwhile
        applies to them. `keep(settings, camera, msg, now)` false skips a frame before decoding
        (counted in `skipped_period`); one that cannot be decoded is counted in `bad` and logged."""
        inputs = self.inputs
        items = inputs.take(max_frames, timeout=timeout) if inputs is not None else []
        settings, now = self.settings, time.monotonic()
        frames: list[Frame] = []
        for cam, msg, received in items:
            if keep is not None and not keep(settings, cam, msg, now):
                cam.skipped_period += 1
                continue
            try:
                rgb = image_to_rgb(
                    msg, use_cv_bridge=settings.use_cv_bridge, max_pixels=settings.inputs.max_frame_pixels
                )
            except ImageDecodeError as exc:
                inputs.reject(cam, exc)  # counted in `bad`, one warning per camera per 5 s
                continue
            inputs.decoded(cam, msg)
            frames.append(Frame(cam, msg.header, rgb, received, now))
        return settings, frames

    def finish(self, frame: Frame, model_seconds: float | None = None) -> float:
        """Per-frame bookkeeping once its results are published; returns the time it is done."""
        done = time.monotonic()
        cam = frame.camera
        cam.processed += 1
        cam.output_rate.tick(done)
        cam.node_latency.add(done - frame.received)
        stamp_ns = frame.header.stamp.sec * 10**9 + frame.header.stamp.nanosec
        age_ns = self.get_clock().now().nanoseconds - stamp_ns
        if age_ns >= 0:
            cam.latency.add(age_ns / 1e9)
        else:  # the clock went back (a looping bag's /clock, a stepped system clock): no latency
            cam.stamp_ahead += 1
        if model_seconds is not None:
            cam.slot_wait.add(frame.picked - frame.received)
            # The node's own cost per frame: decode, batching, conversion, drawing, publishing.
            cam.overhead.add(max(0.0, done - frame.picked - model_seconds))
        return done

    # ---- diagnostics ----------------------------------------------------------------------------
    def _status(self, settings: Any) -> tuple[int, str, str, dict[str, object]]:
        """(level, message, hardware id, values) of the node's own status while configured."""
        raise NotImplementedError

    def _camera_values(self, cam: Camera) -> dict[str, object]:
        """Extra values of a camera's status."""
        return {}

    def _publish_diagnostics(self) -> None:
        self._diag_pub.publish(node_diagnostics(self))
