"""The model worker's loop, and what a failed step leads to.

Why a module of its own: a failure is one of three kinds, each handled differently.
- Most (a bad frame, a transient CUDA error) are counted, logged at most every 5 s, and the loop
  goes on: one failure must not kill the worker.
- Out of memory: the node has already halved its batches (core/batch_limit.py); cached memory is
  given back *after* the `except` block, once the traceback and the tensors its frames hold are
  gone (inside it, `torch.cuda.empty_cache` cannot free them).
- A sticky CUDA error (an illegal address, a launch failure: every later call on the device fails
  too; core/device_lock.is_sticky_cuda_error) is not retried: one FATAL line, the worker stops, and
  the executor deactivates the node, which returns ERROR, so it goes through the lifecycle's
  ErrorProcessing to Finalized (`fatal_error` says why); `run_nodes` then ends the process with exit
  code 3, for a launch `respawn` or a lifecycle manager to start a fresh one.
"""

from __future__ import annotations

import time
from typing import Any

from av_scene_vlm.core.device_lock import is_out_of_memory, is_sticky_cuda_error
from av_scene_vlm.ros.node_utils import FATAL_EXIT_CODE, release_memory

__all__ = ["FATAL_EXIT_CODE", "WorkerLoop"]


class WorkerLoop:
    """Mixed into WorkerNode (which provides `_stop`, `worker_errors`, `fatal_error`,
    `_fatal_signal`, the lifecycle and `_step`)."""

    _stop: Any
    worker_errors: Any
    fatal_error: BaseException | None
    _fatal_signal: Any
    WORKER_WHAT: str

    def _loop(self) -> None:
        """Call `_step` until the node stops. An exception is counted, logged (at most every 5 s) and
        the loop goes on: one bad frame or a transient CUDA error must not kill the worker. Out of
        memory releases cached memory after the `except` block, when the traceback (and the tensors
        its frames hold) is gone; a sticky CUDA error stops the node (`_fatal`)."""
        while not self._stop.is_set():
            failed = out_of_memory = False
            try:
                self._step()
            except Exception as exc:
                self.worker_errors.record(exc)
                if is_sticky_cuda_error(exc):
                    self._fatal(exc)
                    return
                failed, out_of_memory = True, is_out_of_memory(exc)
                self.get_logger().error(
                    f"{self.WORKER_WHAT} failed: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0
                )
            if out_of_memory:
                self._out_of_memory()
            if failed:
                time.sleep(0.1)

    def _out_of_memory(self) -> None:
        """After a batch ran out of memory (it is already counted and its size halved): give cached
        memory back so the smaller batches find room. Nodes add their model's own (graphs)."""
        release_memory()

    def _fatal(self, exc: BaseException) -> None:
        """A sticky device error: every later call fails the same way, so stop instead of retrying."""
        self.fatal_error = exc
        first = (str(exc).strip().splitlines() or [""])[0]
        self.get_logger().fatal(
            f"{self.WORKER_WHAT} failed with an unrecoverable device error, the node stops "
            f"(lifecycle error state; a new process is needed): {type(exc).__name__}: {first}"
        )
        self._stop.set()
        self._fatal_signal.trigger()

    def _enter_error_state(self) -> None:
        """On the executor, after a sticky device error: deactivate, which returns ERROR (above)."""
        if self.fatal_error is not None and self.state == "active":
            self.trigger_deactivate()
