"""Pieces shared by clip_node, caption_node and scene_vlm: parameter tables, start-up, thread set-up.

Why one module: both nodes take the same camera inputs and must fail the same way when a model or
parameter is bad (one clear line; exit 1 for a model, 2 for a parameter: `core.exit_codes`); keeping
that here keeps their behaviour identical. Parameter types and their messages live in `parameters`,
the lifecycle and worker base class in `worker_node`.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import rclpy
from rclpy.node import Node

from av_scene_vlm.core.exit_codes import EXIT_DEVICE_LOST, EXIT_USAGE, model_error_code
from av_scene_vlm.core.image_codec import DEFAULT_MAX_FRAME_PIXELS
from av_scene_vlm.core.models import ModelLoadError
from av_scene_vlm.core.tasks import TaskError
from av_scene_vlm.ros import signals
from av_scene_vlm.ros.parameters import ParamSpec
from av_scene_vlm.ros.ros_args import params_files_with_yaml_text, quote_param_args
from av_scene_vlm.ros.signals import WORKER_WAIT_S

INPUT_PARAMETERS: dict[str, ParamSpec] = {
    "image_topics": (
        ["image_raw"],
        "Camera topics (sensor_msgs/Image, or CompressedImage for '.../compressed'); relative names "
        "resolve in the node's namespace and follow remapping (-r image_raw:=/cam9/image_raw).",
        True,
    ),
    "input_type": ("auto", "auto (by the '/compressed' suffix), raw or compressed.", True),
    "input_reliability": (
        "best_effort",
        "Subscription reliability: best_effort (matches drivers and bag play) or reliable.",
        True,
    ),
    "input_depth": (1, "Subscription queue depth (1 = newest frame only).", True),
    "output_namespaces": (
        [""],
        "Per-camera output namespace; empty = '<camera ns>/scene', beside the resolved camera topic.",
        True,
    ),
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
AUTOSTART: ParamSpec = (
    True,
    "Configure and activate at start-up (lifecycle); false: wait unconfigured for `ros2 lifecycle set` "
    "or a lifecycle manager.",
    True,
)


def clean_list(values: Sequence[str] | None) -> list[str]:
    """Drop blank entries: ROS string arrays cannot be empty in YAML, so `[""]` means 'none'."""
    return [v for v in values if v.strip()] if values else []


def dtype_name(dtype: object) -> str:
    """'float16' for torch.float16: how diagnostics and logs show a dtype."""
    return str(dtype).replace("torch.", "")


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


def release_memory() -> None:
    """Give freed model memory back: collect cycles, return CUDA's cached blocks (so
    `torch.cuda.memory_allocated` and the driver's view drop), and trim glibc's heap (freed tensors
    otherwise stay in the process's resident set)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


NodeFactory = Callable[[], Node | None]
FATAL_EXIT_CODE = EXIT_DEVICE_LOST  # a node stopped on a sticky device error (ros/worker_loop.py)


def lifecycle_state(node: Node) -> str:
    """The node's lifecycle state ('unconfigured', 'inactive', 'active', 'finalized'); '' for a node
    that is not a lifecycle node."""
    machine = getattr(node, "_state_machine", None)
    return str(machine.current_state[1]) if machine is not None else ""


def run_nodes(
    factories: Sequence[NodeFactory],
    args: list[str] | None = None,
    params: Mapping[str, ParamSpec] | None = None,
) -> int:
    """Init rclpy, build nodes, spin. A bad parameter is one line per parameter and exit code 2
    (like the CLIs' usage errors), a model that cannot be loaded one line and exit 1; no traceback.
    (A node with `autostart` configures and activates itself when built, so these come from there.)

    `params`: every parameter the nodes declare, so `-p` values are quoted as they are meant
    (`parameters.quote_param_args`) before rcl parses them.

    A factory may return None to skip its node (scene_vlm with `enable_caption:=false`). All nodes
    share one executor; their model work runs on each node's own worker thread. The process ends with
    exit code 0 on SIGINT or SIGTERM at any moment (`signals`: rclpy's own handlers are off), or once
    every node has been shut down (`ros2 lifecycle set ... shutdown`); with exit code 3 once a node
    stopped on a sticky CUDA error (ros/worker_loop.py: the device is lost for the whole process).

    Why a SingleThreadedExecutor: every callback is O(1) (frames only go into a slot), and rclpy's
    MultiThreadedExecutor spins its wait loop in Python while a pool thread has yet to take a ready
    message, starving the model worker of the GIL. Measured with clip_node (ViT-B/32, 640x480 at
    30 Hz, 2 cores): 0.9 processed fps and 7 Hz received with it, 9 fps and 30 Hz with this one.
    """
    policy = signals.POLICY
    policy.install()  # already done by the console scripts, before their imports
    try:
        return _start_and_spin(factories, args, params or {}, policy)
    except signals.Interrupted:  # during rclpy.init or a node's start-up (model load, compilation)
        policy.ignore()
        rclpy.try_shutdown()
        return 0


def _start_and_spin(
    factories: Sequence[NodeFactory],
    args: list[str] | None,
    params: Mapping[str, ParamSpec],
    policy: signals.StopOnSignal,
) -> int:
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.impl.implementation_singleton import rclpy_implementation
    from rclpy.signals import SignalHandlerOptions

    argv = list(sys.argv if args is None else args)
    logger = rclpy.logging.get_logger("av_scene_vlm")
    argv, temps = params_files_with_yaml_text(quote_param_args(argv, params))
    try:
        rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    except rclpy_implementation.RCLError as exc:  # a params file or --ros-args rcl cannot parse
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        logger.fatal(f"cannot read the ROS arguments (params file, -p): {first}")
        return EXIT_USAGE
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
        _close(nodes, None, wait=WORKER_WAIT_S)
        return model_error_code(exc) if isinstance(exc, ModelLoadError) else EXIT_USAGE
    except signals.Interrupted:
        _close(nodes, None, wait=WORKER_WAIT_S)
        raise
    policy.running()
    executor = SingleThreadedExecutor()
    for node in nodes:
        executor.add_node(node)
    exit_code = 0
    try:
        while rclpy.ok() and not policy.stopping.is_set():
            lost = [n for n in nodes if getattr(n, "fatal_error", None) is not None]
            if lost and all(lifecycle_state(n) == "finalized" for n in lost):
                exit_code = FATAL_EXIT_CODE  # the device is lost for every node of this process
            if exit_code or all(lifecycle_state(n) == "finalized" for n in nodes):
                grace = time.monotonic() + 1.0  # let the last replies and events go out
                while rclpy.ok() and time.monotonic() < grace:
                    executor.spin_once(timeout_sec=0.1)
                break
            executor.spin_once(timeout_sec=0.25)
    except ExternalShutdownException:
        pass
    finally:
        policy.ignore()
        busy = _close(nodes, executor, wait=WORKER_WAIT_S if policy.stopping.is_set() else None)
    if busy:  # model work that cannot be interrupted (a caption, a compilation): end without it
        logger.info(f"stopped with {', '.join(busy)} still busy")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)
    return exit_code


def _send_replies(nodes: Sequence[Node], executor: Any, wait: float = 1.0) -> None:
    """Spin until the nodes' pending action results are sent (goals ended by the stop), at most
    `wait` s: a client whose goal was running sees it end instead of waiting forever."""
    deadline = time.monotonic() + wait
    pending = [n for n in nodes if getattr(n, "replies_pending", lambda: False)()]
    if not pending:
        return
    while time.monotonic() < deadline and any(n.replies_pending() for n in pending):
        executor.spin_once(timeout_sec=0.05)
    for _ in range(4):  # the result responses themselves are done callbacks, one spin later
        executor.spin_once(timeout_sec=0.05)


def _close(nodes: Sequence[Node], executor: object | None, wait: float | None) -> list[str]:
    """Stop the nodes' workers (waiting at most `wait` s in all; None: for as long as they take),
    destroy the nodes and shut rclpy down; returns the workers still busy."""
    deadline = None if wait is None else time.monotonic() + wait
    busy = []
    for node in nodes:
        stop = getattr(node, "stop_worker", None)
        if stop is not None:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not stop(left):
                busy.append(node.get_name())
    if executor is not None:
        _send_replies(nodes, executor)
        executor.shutdown()  # type: ignore[attr-defined]
    for node in nodes:
        node.destroy_node()
    rclpy.try_shutdown()
    return busy
