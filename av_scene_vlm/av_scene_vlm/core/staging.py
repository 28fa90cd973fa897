"""Getting frames to the GPU: windows copied in parallel into pinned host memory, uploaded on a stream.

Why: at 1080p a batch of 64 frames is 400 MB. One thread copying it into page-locked memory took
81 ms on the H200 machine, longer than everything the GPU does with it (~14 ms); numpy copies release
the GIL, so a few threads copy it several times faster. From pinned memory the upload is asynchronous
and runs on a copy stream of the engine's own, so the next batch's upload overlaps the current batch's
compute (see `Uploader`). Off CUDA the same code fills ordinary memory, which is what the CPU tests
exercise.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

# A copy task is a band of rows of one frame of about this many bytes: big enough that the pool's
# per-task cost (tens of µs) is small, small enough that one 1080p frame splits across the threads.
_BAND_BYTES = 1 << 20
_MAX_THREADS = 8  # measured on the H200 machine: 8 threads copy 64 × 1080p in 17 ms (one: 81 ms)

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def copy_threads() -> int:
    """Threads that copy frames: AV_SCENE_VLM_COPY_THREADS, else min(8, CPUs)."""
    env = os.environ.get("AV_SCENE_VLM_COPY_THREADS", "").strip()
    if env:
        return max(1, int(env))
    return max(1, min(_MAX_THREADS, os.cpu_count() or 1))


def _shared_pool() -> ThreadPoolExecutor | None:
    """One pool per process, shared by every engine (a node re-configured 20 times keeps 1 pool)."""
    global _pool
    n = copy_threads()
    if n == 1:
        return None
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="frame-copy")
        return _pool


def _bands(n_frames: int, rows: int, row_bytes: int) -> list[tuple[int, int, int]]:
    """(frame, first row, end row) copy tasks of about _BAND_BYTES each."""
    per = max(1, _BAND_BYTES // max(1, row_bytes))
    return [(k, r, min(rows, r + per)) for k in range(n_frames) for r in range(0, rows, per)]


def copy_windows(
    frames: Sequence[np.ndarray],
    window: tuple[int, int, int, int],
    *,
    pin: bool = False,
    frame_shape: tuple[int, int] | None = None,
) -> torch.Tensor:
    """The `window` (top, bottom, left, right) of each same-size H×W×3 uint8 frame, as one N×h×w×3
    uint8 tensor: pinned (page-locked) when `pin`, filled by the shared copy pool. With `frame_shape`
    the tensor is N×H×W×3 with only the window filled (the rest is left uninitialised).

    Frames may have any strides (a BGR->RGB view, a crop): numpy copies each pixel once.
    """
    t, b, left, r = window
    h, w = b - t, r - left
    shape = (len(frames), *(frame_shape or (h, w)), 3)
    out = torch.empty(shape, dtype=torch.uint8, pin_memory=pin)
    host = out.numpy()
    if frame_shape is not None:
        host = host[:, t:b, left:r]
    tasks = _bands(len(frames), h, w * 3)
    pool = _shared_pool() if len(tasks) > 1 else None

    def copy(task: tuple[int, int, int]) -> None:
        k, r0, r1 = task
        host[k, r0:r1] = frames[k][t + r0 : t + r1, left:r]

    if pool is None:
        for task in tasks:
            copy(task)
    else:
        for future in [pool.submit(copy, task) for task in tasks]:
            future.result()  # re-raises a copy's exception here
    return out


class Uploader:
    """Uploads host batches on a CUDA stream of its own; the compute stream waits only for its batch.

    Why a separate stream: an upload issued on the compute stream would wait for the batch in flight
    to finish. On its own stream the next batch's frames travel while the current batch computes;
    `wait` makes the compute stream wait for exactly that upload (an event, no host sync). Off CUDA
    `upload` returns the host tensor itself.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self._stream = torch.cuda.Stream(device=device) if self.cuda else None

    def upload(self, host: torch.Tensor) -> tuple[torch.Tensor, object | None]:
        """(device tensor, event to wait for) — the copy is enqueued, not finished."""
        if not self.cuda:
            return host, None
        stream = self._stream
        assert stream is not None
        with torch.cuda.stream(stream):
            dev = host.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(stream)
        # Allocated on the copy stream, used on the compute stream: not reused before that is done.
        dev.record_stream(torch.cuda.current_stream(self.device))
        return dev, event

    def wait(self, event: object | None) -> None:
        """Make the current (compute) stream wait for an upload."""
        if event is not None:
            torch.cuda.current_stream(self.device).wait_event(event)  # type: ignore[arg-type]
