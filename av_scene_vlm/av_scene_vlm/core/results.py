"""What the engine returns per frame, and the submitted batch that produces it.

Why a module of its own: the engine only enqueues work; turning the batch's one downloaded tensor
into per-frame results (probabilities, heatmaps in frame pixels) happens on the host when the
caller asks for it, after the device is done — possibly while the next batch computes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from .scoring import ScoreLayout, unpack_scores
from .tasks import Task

if TYPE_CHECKING:
    from .preprocess import Preprocessor


@dataclass
class TaskResult:
    """One task's result for one frame."""

    task: str
    labels: list[str]
    probabilities: np.ndarray  # (L,) float64, sums to 1
    cosine: np.ndarray  # (L,) float32, raw cosine of the ensembled label embeddings

    @property
    def index(self) -> int:
        return int(np.argmax(self.probabilities))

    @property
    def label(self) -> str:
        return self.labels[self.index]

    @property
    def probability(self) -> float:
        return float(self.probabilities[self.index])


@dataclass
class FrameResult:
    """Everything the engine knows about one frame."""

    tasks: list[TaskResult]
    image_embedding: np.ndarray  # (D,) float32, L2-normalized
    latency: float  # seconds from submitting the batch this frame was in to its results
    heatmap: np.ndarray | None = None  # (H, W) float32 cosine map in frame pixels
    heatmap_label: str | None = None
    heatmap_task: str | None = None
    extra: dict = field(default_factory=dict)

    def task(self, name: str) -> TaskResult:
        for t in self.tasks:
            if t.task == name:
                return t
        raise KeyError(name)


def download(packed: torch.Tensor) -> tuple[torch.Tensor, object | None]:
    """Enqueue a batch's one device-to-host copy: (host tensor, CUDA event marking it done or None).

    Always a copy, also on a CPU, where it detaches the results from buffers the next batch reuses.
    """
    cuda = packed.device.type == "cuda"
    host = torch.empty(packed.shape, dtype=torch.float32, pin_memory=cuda)
    host.copy_(packed, non_blocking=cuda)
    if not cuda:
        return host, None
    event = done_event()
    event.record(torch.cuda.current_stream(packed.device))
    return host, event


def done_event() -> torch.cuda.Event:
    """The event a batch's host sync waits on: blocking (cudaEventBlockingSync), so the waiting
    thread sleeps until the GPU is done instead of spinning a core for the whole batch (a default
    event's `synchronize` busy-waits), which the copy threads and the other worker need."""
    return torch.cuda.Event(blocking=True)


def upsample_heatmap(grid: np.ndarray, preprocess: Preprocessor, height: int, width: int) -> np.ndarray:
    """Place the patch grid over the crop region of the frame; edges extend outside it."""
    import cv2

    r = preprocess.crop_region(height, width)
    top, left = round(r.top), round(r.left)
    bottom, right = max(top + 1, round(r.bottom)), max(left + 1, round(r.right))
    inner = cv2.resize(grid.astype(np.float32), (right - left, bottom - top), interpolation=cv2.INTER_LINEAR)
    pad = ((top, max(0, height - bottom)), (left, max(0, width - right)))
    return np.pad(inner, pad, mode="edge")[:height, :width]


class PendingBatch:
    """A submitted batch; `result()` waits for its one download (the first time) and builds the
    FrameResults in frame order. Holds the frames' shapes, not the frames."""

    def __init__(
        self,
        shapes: list[tuple[int, int]],
        want_heatmap: list[bool],
        tasks: list[Task],
        layout: ScoreLayout,
        host: tuple[torch.Tensor, object | None] | None,
        started: float,
        logit_scale: float,
        preprocess: Preprocessor,
        order: list[int] | None = None,
    ) -> None:
        self._shapes = shapes
        self._want = want_heatmap
        self._tasks = tasks
        self._layout = layout
        self._host = host
        self._started = started
        self._logit_scale = logit_scale
        self._preprocess = preprocess
        self._order = order  # the frame index of each downloaded row (rows come grouped by size)
        self._results: list[FrameResult] | None = None

    def done(self) -> bool:
        """True when the device has finished the batch (result() would not wait)."""
        if self._host is None or self._host[1] is None:
            return True
        return bool(self._host[1].query())  # type: ignore[attr-defined]

    def result(self) -> list[FrameResult]:
        """The batch's FrameResults, in frame order."""
        if self._results is None:
            self._results = self._build()
            self._host = None
        return self._results

    def _build(self) -> list[FrameResult]:
        if self._host is None:
            return []
        host, event = self._host
        if event is not None:
            event.synchronize()  # the batch's one host sync
        layout = self._layout
        rows = unpack_scores(host.numpy().copy(), layout, self._logit_scale)
        if self._order is not None and self._order != list(range(len(rows))):
            by_frame = [rows[0]] * len(rows)
            for row, i in zip(rows, self._order, strict=True):
                by_frame[i] = row
            rows = by_frame
        latency = time.perf_counter() - self._started
        results = []
        for (h, w), want, row in zip(self._shapes, self._want, rows, strict=True):
            tasks = [
                TaskResult(t.name, t.label_names, row.probabilities[k], row.cosines[k])
                for k, t in enumerate(self._tasks)
            ]
            fr = FrameResult(tasks, row.embedding, latency)
            if want and row.grid is not None:
                heat_task = self._tasks[layout.heat_task]
                fr.heatmap = upsample_heatmap(row.grid, self._preprocess, h, w)
                fr.heatmap_task, fr.heatmap_label = heat_task.name, heat_task.label_names[row.heat_label]
            results.append(fr)
        return results
