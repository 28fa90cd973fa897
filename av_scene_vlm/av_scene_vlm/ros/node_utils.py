"""Pieces shared by clip_node, caption_node and scene_vlm: parameter tables, start-up, worker threads.

Why one module: both nodes take the same camera inputs and must fail the same way when a model or
parameter is bad (one clear line; exit 1 for a model, 2 for a parameter); keeping that here keeps
their behaviour identical. Parameter types and their messages live in `parameters`.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence

import rclpy
from diagnostic_msgs.msg import KeyValue
from rclpy.node import Node

from av_scene_vlm.core.image_codec import DEFAULT_MAX_FRAME_PIXELS
from av_scene_vlm.core.models import ModelLoadError
from av_scene_vlm.core.tasks import TaskError
from av_scene_vlm.ros.parameters import (
    Examples,
    ParameterTypeError,
    ParamSpec,
    coerce,
    declare_parameters,
    params_files_with_yaml_text,
    quote_param_args,
    restore_declared_types,
    typed_value,
)

__all__ = ["ParamSpec", "declare_parameters"]  # re-exported: the nodes declare their tables with them

INPUT_PARAMETERS: dict[str, ParamSpec] = {
    "image_topics": (
        ["/camera/image_raw"],
        "Camera topics (sensor_msgs/Image, or CompressedImage for '.../compressed').",
        True,
    ),
    "input_type": ("auto", "auto (by the '/compressed' suffix), raw or compressed.", True),
    "input_reliability": (
        "best_effort",
        "Subscription reliability: best_effort (matches drivers and bag play) or reliable.",
        True,
    ),
    "input_depth": (1, "Subscription queue depth (1 = newest frame only).", True),
    "output_namespaces": ([""], "Per-camera output namespace; empty = '<camera ns>/scene'.", True),
    "max_frame_pixels": (
        DEFAULT_MAX_FRAME_PIXELS,
        "Largest frame accepted, width x height (default: 8K with headroom); a frame whose fields or "
        "compressed header claim more, or more bytes than it carries, is counted bad before decoding.",
        True,
    ),
}
# Values shown in type errors where the default is empty (see parameters.Examples).
INPUT_EXAMPLES = {"output_namespaces": ["/front/scene"]}
DIAGNOSTICS_PERIOD: ParamSpec = (1.0, "Seconds between /diagnostics messages.", True)
USE_CV_BRIDGE: ParamSpec = (
    True,
    "Decode raw images with ROS 2 cv_bridge where it is installed; else (and for CompressedImage) "
    "the built-in codec, tested against OpenCV for every encoding.",
    False,
)


def clean_list(values: Sequence[str] | None) -> list[str]:
    """Drop blank entries: ROS string arrays cannot be empty in YAML, so `[""]` means 'none'."""
    return [v for v in values if v.strip()] if values else []


def plan_inputs(node: WorkerNode) -> list:  # -> list[Camera]
    """Validate the parameters both nodes share (INPUT_PARAMETERS, diagnostics_period) and plan the
    cameras, before any model is loaded."""
    from av_scene_vlm.ros.camera_input import check_input_qos, plan_cameras

    p = node._p

    check_input_qos(p("input_reliability"), int(p("input_depth")))
    if int(p("max_frame_pixels")) < 1:
        raise ValueError("max_frame_pixels must be >= 1")
    if float(p("diagnostics_period")) <= 0:
        raise ValueError("diagnostics_period must be > 0")
    return plan_cameras(clean_list(p("image_topics")), clean_list(p("output_namespaces")), p("input_type"))


def kv(**values: object) -> list[KeyValue]:
    """Diagnostic key/values, every value as a string."""
    return [KeyValue(key=k, value=str(v)) for k, v in values.items()]


def pin_torch_threads(num_threads: int) -> int:
    """Fix the calling thread's torch intra-op (OpenMP) thread count; returns the count in effect.

    Why: `torch.set_num_threads` sets the OpenMP team size of the *calling* thread, but also a
    process-wide default that every other thread adopts lazily on its first parallel op. Two model
    workers in one process (scene_vlm) therefore each pin their own count once at start: first
    `get_num_threads()` (runs this thread's lazy initialisation), then `set_num_threads(n)`, so a
    later call in the other worker can no longer change this one. `num_threads <= 0` keeps the
    count the process had when the thread started.
    """
    import torch

    current = torch.get_num_threads()
    if num_threads > 0 and num_threads != current:
        torch.set_num_threads(num_threads)
    return torch.get_num_threads()


def lower_thread_priority(nice: int) -> str:
    """Raise the calling thread's nice value by `nice` (Linux: per thread); '' or why it failed.

    Threads created afterwards by this thread — torch's OpenMP team for it — inherit the value,
    so call this before the thread's first torch op. Lowering priority needs no privileges.
    """
    if nice <= 0:
        return ""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except (AttributeError, OSError) as exc:  # not Linux / not permitted
        return f"{type(exc).__name__}: {exc}"
    return ""


def use_own_cuda_stream(device: object) -> object | None:
    """Run the calling thread's CUDA work on a stream of its own; None off CUDA.

    Why: torch's current stream is per thread, and by default every thread shares the device's
    default stream, so a caption's kernels would queue in front of the classifier's. On its own
    non-blocking stream the caption overlaps the classifier instead of delaying each of its frames
    (both at CUDA's least priority, 0). The new stream first waits for the default stream, where the
    model was loaded. Not exercised by the CPU-only test suite.
    """
    import torch

    dev = torch.device(device)  # type: ignore[call-overload]
    if dev.type != "cuda" or not torch.cuda.is_available():
        return None
    stream = torch.cuda.Stream(device=dev, priority=0)  # 0: CUDA's least priority, like the default stream
    stream.wait_stream(torch.cuda.current_stream(dev))
    torch.cuda.set_stream(stream)
    return stream


NodeFactory = Callable[[], Node | None]


def run_nodes(
    factories: Sequence[NodeFactory],
    args: list[str] | None = None,
    params: Mapping[str, ParamSpec] | None = None,
) -> int:
    """Init rclpy, build nodes, spin. A bad parameter is one line per parameter and exit code 2
    (like the CLIs' usage errors), a model that cannot be loaded one line and exit 1; no traceback.

    `params`: every parameter the nodes declare, so `-p` values are quoted as they are meant
    (`parameters.quote_param_args`) before rcl parses them.

    A factory may return None to skip its node (scene_vlm with `enable_caption:=false`). All nodes
    share one executor; their model work runs on each node's own worker thread.

    Why a SingleThreadedExecutor: every callback is O(1) (frames only go into a slot), and rclpy's
    MultiThreadedExecutor spins its wait loop in Python while a pool thread has yet to take a ready
    message, starving the model worker of the GIL. Measured with clip_node (ViT-B/32, 640x480 at
    30 Hz, 2 cores): 0.9 processed fps and 7 Hz received with it, 9 fps and 30 Hz with this one.
    """
    import signal

    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.impl.implementation_singleton import rclpy_implementation

    argv = list(sys.argv if args is None else args)
    logger = rclpy.logging.get_logger("av_scene_vlm")
    argv, temps = params_files_with_yaml_text(quote_param_args(argv, params or {}))
    try:
        rclpy.init(args=argv)
    except rclpy_implementation.RCLError as exc:  # a params file or --ros-args rcl cannot parse
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        logger.fatal(f"cannot read the ROS arguments (params file, -p): {first}")
        return 2
    finally:
        for temp in temps:  # rcl has read them
            temp.unlink(missing_ok=True)
    nodes: list[Node] = []
    try:
        for factory in factories:
            node = factory()
            if node is not None:
                nodes.append(node)
    except (ModelLoadError, TaskError, ValueError) as exc:
        for line in str(exc).splitlines():  # ParameterTypeErrors: one line per parameter
            logger.fatal(line)
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()
        return 1 if isinstance(exc, ModelLoadError) else 2
    executor = SingleThreadedExecutor()
    for node in nodes:
        executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Ctrl-C on `ros2 launch` signals a node twice (the terminal's SIGINT, then launch's): a second
        # SIGINT during the clean-up below interrupted it (exit -2) or crashed rclpy (exit -11).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        executor.shutdown()
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # try_shutdown restored the handler from before init
    return 0


def camera_status(node_name: str, cam, **extra: object):  # -> DiagnosticStatus
    """The per-camera diagnostic both nodes publish: counters, rates and latencies, plus `extra`."""
    from diagnostic_msgs.msg import DiagnosticStatus

    level, message = DiagnosticStatus.OK, "ok"
    if cam.received == 0:
        level, message = DiagnosticStatus.WARN, "no frames received"
    elif cam.bad and cam.bad >= cam.processed:
        level, message = DiagnosticStatus.WARN, "most frames are malformed"
    return DiagnosticStatus(
        level=level,
        name=f"{node_name}: {cam.topic}",
        hardware_id=cam.topic,
        message=message,
        values=kv(
            input_rate_hz=f"{cam.input_rate.rate():.2f}",
            processed_fps=f"{cam.output_rate.rate():.2f}",
            received=cam.received,
            processed=cam.processed,
            dropped=cam.dropped,
            bad_frames=cam.bad,
            skipped_by_period=cam.skipped_period,
            failed=cam.failed,
            latency_stamp_to_publish_p50_ms=f"{cam.latency.get(0.5) * 1e3:.2f}",
            latency_stamp_to_publish_p95_ms=f"{cam.latency.get(0.95) * 1e3:.2f}",
            latency_receive_to_publish_p50_ms=f"{cam.node_latency.get(0.5) * 1e3:.2f}",
            latency_receive_to_publish_p95_ms=f"{cam.node_latency.get(0.95) * 1e3:.2f}",
            **extra,
            output_namespace=cam.namespace,
        ),
    )


class WorkerErrors:
    """Exceptions of a node's model worker, counted for /diagnostics.

    Why: the worker logs an exception and goes on (a transient CUDA error must not kill it), so
    without a count a node whose inference fails on every frame would still report itself healthy.
    """

    def __init__(self) -> None:
        self.count = 0
        self.last = ""
        self._reported = 0
        self._lock = threading.Lock()

    def record(self, exc: BaseException) -> None:
        with self._lock:
            self.count += 1
            self.last = f"{type(exc).__name__}: {exc}"[:300]

    def escalate(self, level: int, message: str) -> tuple[int, str]:
        """ERROR (with the newest error) while errors keep coming in, i.e. any since the last call."""
        from diagnostic_msgs.msg import DiagnosticStatus

        with self._lock:
            new, self._reported = self.count - self._reported, self.count
            last = self.last
        if new:
            return DiagnosticStatus.ERROR, f"{new} worker error(s) since the last report; last: {last}"
        return level, message


class WorkerNode(Node):
    """A node whose model work runs on one worker thread: start, loop, error count and stop.

    Subclasses implement `_step` (take the newest frames, run the model, publish) and
    `_publish_diagnostics`, set `inputs` (their CameraInputs) and call `start_worker` last in
    `__init__`. Why a base class: both nodes must keep the executor free and survive, count and
    report worker failures, and shut down the same way.
    """

    WORKER_WHAT = "model work"  # for log lines: "<what> failed: ..."
    STOP_TIMEOUT_S = 5.0  # how long destroy_node waits for a step in progress

    def declare(self, specs: Mapping[str, ParamSpec], examples: Examples | None = None) -> None:
        """Declare the node's parameter table (see `parameters.declare_parameters`); call first."""
        self._specs = dict(specs)
        self._examples = {**INPUT_EXAMPLES, **(examples or {})}
        declare_parameters(self, self._specs, self._examples)

    def _p(self, name: str):
        """A parameter's value, as its declared type."""
        return typed_value(self, name, self._specs)

    def _proposed(self, names: Sequence[str], params: list) -> dict:
        """The values of `names` as they would be after a parameter change, for validating it whole;
        ValueError with the one-line reason when a new value has the wrong type."""
        restore_declared_types(self, params, self._specs)
        new = {k: self._p(k) for k in names}
        for param in params:
            spec = self._specs.get(param.name)
            if spec is None:
                new[param.name] = param.value
                continue
            try:
                new[param.name] = coerce(param.name, param.value, spec, self._examples.get(param.name))
            except ParameterTypeError as exc:
                raise ValueError(exc.line("runtime", self.get_fully_qualified_name())) from None
        return new

    def start_worker(self) -> None:
        """Start the worker thread and the /diagnostics timer."""
        self.worker_errors = WorkerErrors()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run, name=f"{self.get_name()}_worker", daemon=True)
        self._worker.start()
        self.create_timer(float(self._p("diagnostics_period")), self._publish_diagnostics)

    def _run(self) -> None:
        """The worker thread; subclasses that set thread-local state first override and call this."""
        self._loop()

    def _loop(self) -> None:
        """Call `_step` until the node stops. An exception is counted, logged (at most every 5 s) and
        the loop goes on: one bad frame or a transient CUDA error must not kill the worker."""
        import time

        while not self._stop.is_set():
            try:
                self._step()
            except Exception as exc:
                self.worker_errors.record(exc)
                self.get_logger().error(
                    f"{self.WORKER_WHAT} failed: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0
                )
                time.sleep(0.1)

    def _step(self) -> None:
        raise NotImplementedError

    def _publish_diagnostics(self) -> None:
        raise NotImplementedError

    def destroy_node(self) -> None:
        """Stop the worker before the node goes. Also called by context shutdown on a node whose
        __init__ failed part-way (e.g. the model could not be loaded), so a missing worker is fine."""
        worker = getattr(self, "_worker", None)
        if worker is not None:
            self._stop.set()
            self.inputs.wake()
            if worker.is_alive():
                worker.join(timeout=self.STOP_TIMEOUT_S)
        super().destroy_node()


def dtype_name(dtype: object) -> str:
    """'float16' for torch.float16: how diagnostics and logs show a dtype."""
    return str(dtype).replace("torch.", "")
