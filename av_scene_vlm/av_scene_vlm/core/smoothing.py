"""EMA smoothing of classification probabilities over a camera's frames (clip_node's `smoothing`).

p = s * p_prev + (1 - s) * p_new per camera and task. A camera's average restarts whenever its label
sets change (other tasks, other labels, another order), so probabilities of two vocabularies are
never mixed — also for the frames of a batch that began before a relabel and ends after it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np


class EmaSmoother:
    """Per-camera exponential moving averages of each task's probabilities."""

    def __init__(self) -> None:
        self._state: dict[str, tuple[tuple, list[np.ndarray]]] = {}
        self._lock = threading.Lock()

    def update(self, camera: str, tasks: Sequence[Any], factor: float) -> list[np.ndarray] | None:
        """Fold one frame's task results (`.task`, `.labels`, `.probabilities` each) into `camera`'s
        averages and return them, one array per task; None (nothing kept) when `factor` is 0."""
        if factor <= 0:
            return None
        signature = tuple((t.task, tuple(t.labels)) for t in tasks)
        current = [np.asarray(t.probabilities, np.float64) for t in tasks]
        with self._lock:
            kept = self._state.get(camera)
            if kept is None or kept[0] != signature:
                smoothed = current
            else:
                smoothed = [factor * p + (1.0 - factor) * c for p, c in zip(kept[1], current, strict=True)]
            self._state[camera] = (signature, smoothed)
        return smoothed

    def clear(self) -> None:
        """Forget every camera's average (labels changed)."""
        with self._lock:
            self._state.clear()
