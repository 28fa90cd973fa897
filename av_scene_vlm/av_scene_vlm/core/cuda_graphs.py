"""CUDA graphs for the engine's forward: preprocessing, image tower and scoring replayed as one launch.

Why: at batch 1 the GPU work of a 1080p frame is well under a millisecond, but launching its ~200
kernels one by one from Python costs several; replaying them as one captured graph measured 1.9 ms
instead of 9.1 ms on the H200. A graph has fixed shapes and addresses, so each (batch-size bucket,
frame plan, score layout) gets its own graph with static input buffers that each batch is copied
into; batches are padded up to a bucket (1, 2, 4, ... 64) and larger ones split, which keeps the set
of graphs — and the memory they hold, in one shared pool — small and bounded.

Each capture is replayed once beside the eager forward on the same input and kept only if their
probabilities agree (≤ 1e-3, same top-1); a mismatch makes the engine warn once and run eagerly
from then on. Any other capture failure is transient as far as we can tell (another thread's
synchronize invalidated it, a cuBLAS workspace could not be allocated, ...): that batch runs eagerly
and the key is tried again after `retry_after` of its batches, at most `max_retries` times in all
before graphs are turned off (the count is in /diagnostics). Out of memory is not swallowed: the
graphs are dropped and the error goes on to the worker, which halves its batches (core/batch_limit.py)
and captures again at the smaller size. Captures hold the device's lock (core/device_lock.py) and
never wait for it: a batch that finds it taken (the captioner compiling) runs eagerly.

What graphs hold is bounded by `memory_budget` bytes: past it, the least recently used graphs are
dropped. The capture itself is a strategy (`CudaGraphCapture` on CUDA, `EagerCapture` with the same
static-buffer contract anywhere), so everything but the CUDA calls runs, and is tested, on a CPU.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Protocol

import numpy as np
import torch

from .backend_options import BackendError
from .backend_options import check_cuda_graphs as check_mode  # noqa: F401  (the option's one checker)
from .device_lock import device_lock, is_out_of_memory, is_sticky_cuda_error

log = logging.getLogger("av_scene_vlm.cuda_graphs")

BUCKETS = (1, 2, 4, 8, 16, 32, 64)
PARITY_TOLERANCE = 1e-3

Replay = Callable[[], torch.Tensor]


class Capture(Protocol):
    """Turns `fn(*static_inputs) -> output` into a replay that recomputes `output` in place from
    whatever the static inputs hold at replay time, and returns it."""

    def __call__(self, fn: Callable[..., torch.Tensor], static_inputs: Sequence[torch.Tensor]) -> Replay: ...


def bucket_for(n: int) -> int:
    """The smallest bucket that holds `n` frames (n ≤ the largest bucket)."""
    for b in BUCKETS:
        if n <= b:
            return b
    raise ValueError(f"{n} frames exceed the largest graph bucket {BUCKETS[-1]}; split them first")


def split_batch(n: int, largest: int = BUCKETS[-1]) -> list[tuple[int, int]]:
    """[start, end) chunks of at most `largest` frames covering n frames."""
    return [(s, min(n, s + largest)) for s in range(0, n, largest)]


class EagerCapture:
    """The capture contract without CUDA: replay runs `fn` again on the static inputs and writes the
    result into the same output tensor. What the CPU tests drive the graph machinery with."""

    def __call__(self, fn: Callable[..., torch.Tensor], static_inputs: Sequence[torch.Tensor]) -> Replay:
        out = fn(*static_inputs)

        def replay() -> torch.Tensor:
            out.copy_(fn(*static_inputs))
            return out

        return replay


class CudaGraphCapture:
    """torch.cuda.CUDAGraph capture: warm-up on a side stream, capture into a pool shared by all of
    this engine's graphs, thread-local capture mode (a caption worker in the same process may launch
    kernels meanwhile). CUDA only."""

    WARMUP = 3  # iterations before capture: cuBLAS workspaces, autotuning, lazy module state

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.pool = torch.cuda.graph_pool_handle()

    def __call__(self, fn: Callable[..., torch.Tensor], static_inputs: Sequence[torch.Tensor]) -> Replay:
        current = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP):
                fn(*static_inputs)
        current.wait_stream(side)
        before = torch.cuda.memory_reserved(self.device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            out = fn(*static_inputs)

        def replay() -> torch.Tensor:
            graph.replay()
            return out

        replay.graph = graph  # type: ignore[attr-defined]  # kept alive with the replay
        # What the capture added to the allocator's reserve (its share of the pool), an estimate.
        replay.nbytes = max(0, torch.cuda.memory_reserved(self.device) - before)  # type: ignore[attr-defined]
        return replay


class _Entry:
    def __init__(self, inputs: list[torch.Tensor], replay: Replay, nbytes: int) -> None:
        self.inputs = inputs
        self.replay = replay
        self.nbytes = nbytes  # static buffers + what the capture reserved


class GraphSet:
    """Captured forwards by key, each checked once against the eager forward.

    `run` copies a batch into the key's static buffers, replays, and returns the batch's output rows:
    a view of the static output, so read it (or enqueue a copy of it) before the next `run` of that
    key. `compare(a, b, key) -> error` scores a replay against eager on the host. `lock`: the device's
    capture lock (core/device_lock.py), tried without waiting; `memory_budget`: bytes the graphs may
    hold (None: unbounded), least recently used ones dropped past it.
    """

    def __init__(
        self,
        capture: Capture,
        compare: Callable[[np.ndarray, np.ndarray, Hashable], float],
        *,
        max_graphs: int = 32,
        tolerance: float = PARITY_TOLERANCE,
        lock: threading.Lock | None = None,
        memory_budget: int | None = None,
        max_retries: int = 5,
        retry_after: int = 20,
    ) -> None:
        self.capture = capture
        self.compare = compare
        self.max_graphs = max_graphs
        self.tolerance = tolerance
        self.lock = lock if lock is not None else threading.Lock()
        self.memory_budget = memory_budget
        self.max_retries = max_retries
        self.retry_after = retry_after
        self.enabled = True
        self.disabled_reason = ""
        self.captures = 0  # graphs captured (and checked) so far
        self.last_error = 0.0  # the newest capture's max |Δp| against eager
        self.retries = 0  # captures that failed (not on parity) and are tried again later
        self.last_failure = ""  # the newest of those, one line
        self.deferred = 0  # batches run eagerly because the device lock was taken
        self.dropped = 0  # graphs dropped to stay within max_graphs / memory_budget
        self._graphs: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._wait: dict[Hashable, int] = {}  # key -> its batches left before capturing it again

    def __len__(self) -> int:
        return len(self._graphs)

    @property
    def memory_bytes(self) -> int:
        """What the kept graphs hold (static buffers + their captures' reserve), bytes."""
        return sum(e.nbytes for e in self._graphs.values())

    def run(
        self,
        key: Hashable,
        bucket: int,
        batched: torch.Tensor,
        shared: Sequence[torch.Tensor],
        forward: Callable[..., torch.Tensor],
    ) -> torch.Tensor | None:
        """Replay the graph for `key` on `batched` (n ≤ `bucket` rows, padded to `bucket`) and
        `shared` (whole tensors such as the label embeddings); the first n output rows, or None when
        the caller must run eagerly (graphs off, the device lock taken, a capture to retry later).
        `forward(batched, *shared)` is the eager function, captured the first time `key` is seen.
        Out of memory (and a sticky CUDA error) during a capture is raised, the graphs dropped."""
        if not self.enabled:
            return None
        n = batched.shape[0]
        entry = self._graphs.get(key)
        if entry is None:
            left = self._wait.get(key, 0)
            if left > 0:
                self._wait[key] = left - 1
                return None
            if not self.lock.acquire(blocking=False):  # another capture or a compile on this device
                self.deferred += 1
                return None
            try:
                entry = self._capture(key, bucket, batched, shared, forward)
            finally:
                self.lock.release()
            if entry is None:
                return None
        else:
            self._graphs.move_to_end(key)
            entry.inputs[0][:n].copy_(batched)
            for static, value in zip(entry.inputs[1:], shared, strict=True):
                static.copy_(value)
        return entry.replay()[:n]

    def _capture(
        self,
        key: Hashable,
        bucket: int,
        batched: torch.Tensor,
        shared: Sequence[torch.Tensor],
        forward: Callable[..., torch.Tensor],
    ) -> _Entry | None:
        n = batched.shape[0]
        try:
            static = batched.new_zeros((bucket, *batched.shape[1:]))
            static[:n].copy_(batched)
            inputs = [static, *(s.clone() for s in shared)]
            replay = self.capture(forward, inputs)
            out = replay()
            got = out[:n].float().cpu().numpy()
            want = forward(*inputs)[:n].float().cpu().numpy()
            error = self.compare(got, want, key)
        except Exception as exc:
            if is_out_of_memory(exc) or is_sticky_cuda_error(exc):
                self.clear()  # the worker halves its batches (or stops); captured again later
                raise
            self._failed(key, f"capturing {key} failed: {type(exc).__name__}: {exc}")
            return None
        self.captures += 1
        self.last_error = error
        if not error <= self.tolerance:
            self.disable(
                f"the graph for {key} differs from the eager forward "
                f"(max |Δp| {error:.2e} > {self.tolerance:g} or another top-1 label)"
            )
            return None
        self._wait.pop(key, None)
        nbytes = sum(t.nbytes for t in inputs) + int(getattr(replay, "nbytes", out.nbytes))
        entry = _Entry(inputs, replay, nbytes)
        self._graphs[key] = entry
        self._trim()
        return entry

    def _failed(self, key: Hashable, reason: str) -> None:
        """A capture failed for another reason than parity: retry later, up to `max_retries` in all."""
        self.retries += 1
        self.last_failure = reason.splitlines()[0][:300]
        if self.retries > self.max_retries:
            self.disable(f"{self.retries} captures failed; the last: {self.last_failure}")
            return
        self._wait[key] = self.retry_after * self.retries
        log.warning(
            "cuda_graphs: %s; this batch runs eagerly, capture %d of %d tried again after %d batches",
            self.last_failure,
            self.retries,
            self.max_retries,
            self._wait[key],
        )

    def _trim(self) -> None:
        """Drop least recently used graphs past `max_graphs` or `memory_budget` (the newest stays)."""
        budget = self.memory_budget
        while len(self._graphs) > 1 and (
            len(self._graphs) > self.max_graphs or (budget is not None and self.memory_bytes > budget)
        ):
            self._graphs.popitem(last=False)
            self.dropped += 1

    def stats(self) -> dict[str, object]:
        """The graphs' memory (MB) and budget, failed captures to retry, batches deferred by the device
        lock, graphs dropped for the budget, the newest failure (/diagnostics)."""
        budget = "none" if self.memory_budget is None else f"{self.memory_budget / 2**20:.0f}"
        return {
            "graph_memory_mb": f"{self.memory_bytes / 2**20:.1f}",
            "graph_memory_budget_mb": budget,
            "graph_capture_retries": self.retries,
            "graph_captures_deferred": self.deferred,
            "graphs_dropped": self.dropped,
            "graph_last_failure": self.last_failure,
        }

    def disable(self, reason: str) -> None:
        """Run eagerly from now on; one warning line with the reason."""
        self.enabled = False
        self.disabled_reason = reason
        self._graphs.clear()
        log.warning("cuda_graphs: %s; running the eager forward from now on", reason)

    def clear(self) -> None:
        """Drop every graph (their memory returns to the allocator)."""
        self._graphs.clear()


AUTO_BUDGET_FRACTION = 0.1  # graph_memory_mb 0: a tenth of the device's memory


def memory_budget(megabytes: float, device: torch.device) -> int | None:
    """Bytes graphs may hold: `megabytes` (> 0), else a tenth of a CUDA device (None off CUDA)."""
    if megabytes < 0:
        raise ValueError(f"cuda_graphs_memory_mb must be >= 0 (0 = auto), got {megabytes:g}")
    if megabytes > 0:
        return int(megabytes * 2**20)
    if device.type != "cuda":
        return None
    return int(torch.cuda.get_device_properties(device).total_memory * AUTO_BUDGET_FRACTION)


def graph_set(
    mode: str,
    capture: Capture | None,
    memory_mb: float,
    device: torch.device,
    backend: str,
    compare: Callable[[np.ndarray, np.ndarray, Hashable], float],
) -> GraphSet | None:
    """The engine's graphs for the `cuda_graphs` mode (None: off), or BackendError with the reason.
    `capture` replaces the CUDA capture (EagerCapture on a CPU)."""
    cuda = device.type == "cuda"
    if mode == "off" or (mode == "auto" and not (cuda and backend == "torch")):
        return None
    if backend != "torch":
        raise BackendError(f"cuda_graphs on needs backend torch, not {backend}")
    if capture is None and not cuda:
        raise BackendError(f"cuda_graphs on needs a CUDA device, not {device}; use auto or off")
    return GraphSet(
        capture or CudaGraphCapture(device),
        compare,
        lock=device_lock(device),  # shared with a captioner's compile on this device
        memory_budget=memory_budget(memory_mb, device),
    )
