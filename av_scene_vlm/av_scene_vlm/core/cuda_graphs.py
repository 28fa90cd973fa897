"""CUDA graphs for the engine's forward: preprocessing, image tower and scoring replayed as one launch.

Why: at batch 1 the GPU work of a 1080p frame is well under a millisecond, but launching its ~200
kernels one by one from Python costs several; replaying them as one captured graph measured 1.9 ms
instead of 9.1 ms on the H200. A graph has fixed shapes and addresses, so each (batch-size bucket,
frame plan, score layout) gets its own graph with static input buffers that each batch is copied
into; batches are padded up to a bucket (1, 2, 4, ... 64) and larger ones split, which keeps the set
of graphs — and the memory they hold, in one shared pool — small and bounded.

Each capture is replayed once beside the eager forward on the same input and kept only if their
probabilities agree (≤ 1e-3, same top-1); otherwise, or if capturing fails, the engine warns once
and runs eagerly from then on. The capture itself is a strategy (`CudaGraphCapture` on CUDA,
`EagerCapture` with the same static-buffer contract anywhere), so everything but the CUDA calls
runs, and is tested, on a CPU.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Protocol

import numpy as np
import torch

from .backend_options import check_cuda_graphs as check_mode  # noqa: F401  (the option's one checker)

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
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            out = fn(*static_inputs)

        def replay() -> torch.Tensor:
            graph.replay()
            return out

        replay.graph = graph  # type: ignore[attr-defined]  # kept alive with the replay
        return replay


class _Entry:
    def __init__(self, inputs: list[torch.Tensor], replay: Replay) -> None:
        self.inputs = inputs
        self.replay = replay


class GraphSet:
    """Captured forwards by key, each checked once against the eager forward.

    `run` copies a batch into the key's static buffers, replays, and returns the batch's output rows:
    a view of the static output, so read it (or enqueue a copy of it) before the next `run` of that
    key. `compare(a, b, key) -> error` scores a replay against eager on the host.
    """

    def __init__(
        self,
        capture: Capture,
        compare: Callable[[np.ndarray, np.ndarray, Hashable], float],
        *,
        max_graphs: int = 32,
        tolerance: float = PARITY_TOLERANCE,
    ) -> None:
        self.capture = capture
        self.compare = compare
        self.max_graphs = max_graphs
        self.tolerance = tolerance
        self.enabled = True
        self.disabled_reason = ""
        self.captures = 0  # graphs captured (and checked) so far
        self.last_error = 0.0  # the newest capture's max |Δp| against eager
        self._graphs: OrderedDict[Hashable, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._graphs)

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
        graphs are disabled (the caller then runs eagerly). `forward(batched, *shared)` is the eager
        function, captured the first time `key` is seen."""
        if not self.enabled:
            return None
        n = batched.shape[0]
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(key, bucket, batched, shared, forward)
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
            got = replay()[:n].float().cpu().numpy()
            want = forward(*inputs)[:n].float().cpu().numpy()
            error = self.compare(got, want, key)
        except Exception as exc:  # any capture failure: eager is always correct
            self.disable(f"capturing {key} failed: {type(exc).__name__}: {exc}")
            return None
        self.captures += 1
        self.last_error = error
        if not error <= self.tolerance:
            self.disable(
                f"the graph for {key} differs from the eager forward "
                f"(max |Δp| {error:.2e} > {self.tolerance:g} or another top-1 label)"
            )
            return None
        entry = _Entry(inputs, replay)
        self._graphs[key] = entry
        while len(self._graphs) > self.max_graphs:
            self._graphs.popitem(last=False)
        return entry

    def disable(self, reason: str) -> None:
        """Run eagerly from now on; one warning line with the reason."""
        self.enabled = False
        self.disabled_reason = reason
        self._graphs.clear()
        log.warning("cuda_graphs: %s; running the eager forward from now on", reason)

    def clear(self) -> None:
        """Drop every graph (their memory returns to the allocator)."""
        self._graphs.clear()
