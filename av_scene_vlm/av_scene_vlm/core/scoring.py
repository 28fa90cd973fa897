"""Scores of a batch: computed on the model's device, leaving it as one tensor, read on the host.

Why one tensor: every `.cpu()` is a device-to-host sync, and the engine used to make one per task and
one per output. Here the device computes, per frame, [image embedding | cosine with every label of
every task | heatmap patch scores] into one N×width float32 tensor that is copied to the host once;
probabilities (float64 softmax, as the pipeline computes them) and the heatmap's label are derived
from it on the host, where they cost microseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .tasks import Task, TaskError


@dataclass(frozen=True)
class ScoreLayout:
    """Where each number sits in a packed row; also the shape key of a captured graph.

    `sizes`: labels per task; `dim`: embedding size; `patches`: patch tokens per frame (0: no heatmap);
    `heat_task`: the heatmap's task; `heat_label`: a fixed label of it, or None for each frame's top label.
    """

    sizes: tuple[int, ...]
    dim: int
    patches: int = 0
    heat_task: int = 0
    heat_label: int | None = None

    @property
    def offsets(self) -> tuple[int, ...]:
        """Column of each task's first cosine (after the embedding)."""
        out, col = [], self.dim
        for n in self.sizes:
            out.append(col)
            col += n
        return tuple(out)

    @property
    def width(self) -> int:
        return self.dim + sum(self.sizes) + self.patches


def make_layout(
    tasks: Sequence[Task],
    dim: int,
    patches: int,
    heatmap_task: str | None = None,
    heatmap_label: str | None = None,
) -> ScoreLayout:
    """The layout for `tasks`; TaskError when the heatmap's task or label is not among them."""
    k = 0
    if heatmap_task is not None:
        names = [t.name for t in tasks]
        if heatmap_task not in names:
            raise TaskError(f"heatmap task {heatmap_task!r} is not one of {names}")
        k = names.index(heatmap_task)
    j = None
    if heatmap_label is not None:
        labels = tasks[k].label_names
        if heatmap_label not in labels:
            raise TaskError(f"heatmap label {heatmap_label!r} is not a label of task {tasks[k].name!r}")
        j = labels.index(heatmap_label)
    return ScoreLayout(tuple(len(t.labels) for t in tasks), dim, patches, k, j)


def pack_scores(
    emb: torch.Tensor, patch: torch.Tensor | None, labels: torch.Tensor, layout: ScoreLayout
) -> torch.Tensor:
    """N×width float32 rows on the device: embedding, cosines, heatmap patch scores.

    `labels` is every task's label embeddings stacked (ΣL×D). No host sync: the heatmap's label per
    frame is chosen on the device (the top cosine is the top probability: softmax is monotonic).
    Capturable in a CUDA graph (fixed shapes for a fixed layout).
    """
    cos = emb @ labels.T
    parts = [emb, cos]
    if layout.patches:
        if patch is None:
            raise ValueError("the layout has a heatmap but the tower returned no patch embeddings")
        start = layout.offsets[layout.heat_task] - layout.dim
        if layout.heat_label is not None:
            chosen = labels[start + layout.heat_label].expand(emb.shape[0], -1)
        else:
            top = cos[:, start : start + layout.sizes[layout.heat_task]].argmax(dim=1)
            chosen = labels[start + top]
        parts.append(torch.einsum("npd,nd->np", patch, chosen))
    return torch.cat(parts, dim=1)


@dataclass
class UnpackedRow:
    """One frame's numbers from a packed row (host side)."""

    embedding: np.ndarray  # (D,) float32
    cosines: list[np.ndarray]  # per task (L,) float32
    probabilities: list[np.ndarray]  # per task (L,) float64, sums to 1
    grid: np.ndarray | None  # (side, side) float32 patch cosines of the heatmap label
    heat_label: int  # index of the heatmap label within its task


def softmax64(cos: np.ndarray, logit_scale: float) -> np.ndarray:
    """softmax(logit_scale · cos) in float64 along the last axis, as the pipeline computes it."""
    x = logit_scale * cos.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def unpack_scores(packed: np.ndarray, layout: ScoreLayout, logit_scale: float) -> list[UnpackedRow]:
    """Split N×width packed rows into per-frame embeddings, cosines, probabilities and heatmap grids."""
    d = layout.dim
    cos = [packed[:, o : o + n] for o, n in zip(layout.offsets, layout.sizes, strict=True)]
    probs = [softmax64(c, logit_scale) for c in cos]
    side = round(layout.patches**0.5)
    rows = []
    for i in range(packed.shape[0]):
        grid, heat = None, layout.heat_label
        if heat is None:
            heat = int(np.argmax(cos[layout.heat_task][i])) if layout.sizes else 0
        if layout.patches:
            grid = packed[i, layout.width - layout.patches :].reshape(side, side)
        rows.append(UnpackedRow(packed[i, :d], [c[i] for c in cos], [p[i] for p in probs], grid, heat))
    return rows


def max_probability_error(a: np.ndarray, b: np.ndarray, layout: ScoreLayout, logit_scale: float) -> float:
    """Largest |Δp| between two packed outputs, or inf when a top-1 label differs or a value is not
    finite: the check a captured graph must pass against the eager forward."""
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("inf")
    worst = 0.0
    for o, n in zip(layout.offsets, layout.sizes, strict=True):
        pa, pb = softmax64(a[:, o : o + n], logit_scale), softmax64(b[:, o : o + n], logit_scale)
        if (pa.argmax(axis=1) != pb.argmax(axis=1)).any():
            return float("inf")
        worst = max(worst, float(np.abs(pa - pb).max()))
    return worst
