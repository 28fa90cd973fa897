"""How far a reduced precision of the image tower moves the results from fp32, on the user's own frames
and label sets: embedding cosine (mean, min), max |Δp| and top-1 agreement per task, against bounds.

Why: int8 and bf16 change results; whether they change them too much depends on the weights and the
labels, so it is measured where they will be used (`av-scene-vlm check-precision`), and a pass is what
lets `precision: auto` pick the faster precision (core/precision.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class Bounds:
    """What a precision must hold against fp32 (the issue's bounds, met by ViT-B/32 int8 with room)."""

    cos_mean: float = 0.999
    cos_min: float = 0.995
    max_dp: float = 0.01
    top1: float = 0.95  # per task


@dataclass
class Agreement:
    """The figures of one comparison; `rows()` prints them with their bounds and verdicts."""

    precision: str
    images: int
    cos_mean: float
    cos_min: float
    max_dp: float
    top1: dict[str, float] = field(default_factory=dict)
    bounds: Bounds = field(default_factory=Bounds)

    def rows(self) -> list[tuple[str, str, str, bool]]:
        """(metric, value, bound, ok) for every check."""
        b = self.bounds
        rows = [
            (
                "image-embedding cosine mean",
                f"{self.cos_mean:.6f}",
                f">= {b.cos_mean}",
                self.cos_mean >= b.cos_mean,
            ),
            (
                "image-embedding cosine min",
                f"{self.cos_min:.6f}",
                f">= {b.cos_min}",
                self.cos_min >= b.cos_min,
            ),
            ("max |delta p|", f"{self.max_dp:.6f}", f"<= {b.max_dp}", self.max_dp <= b.max_dp),
        ]
        for task, share in self.top1.items():
            rows.append(
                (
                    f"top-1 agreement [{task}]",
                    f"{share * 100:.1f} %",
                    f">= {b.top1 * 100:g} %",
                    share >= b.top1,
                )
            )
        return rows

    @property
    def passed(self) -> bool:
        return all(ok for *_, ok in self.rows())

    def record(self) -> dict:
        """A JSON-ready summary (the agreement record, `--json`)."""
        out = asdict(self)
        out["passed"] = self.passed
        return out


def probabilities(emb: np.ndarray, labels: np.ndarray, logit_scale: float) -> np.ndarray:
    """softmax(logit_scale · cos) over one task's labels: the engine's scoring (core/scoring.py)."""
    logits = logit_scale * (emb.astype(np.float64) @ labels.astype(np.float64).T)
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def compare(
    reference: np.ndarray,
    candidate: np.ndarray,
    label_sets: dict[str, np.ndarray],
    logit_scale: float,
    precision: str,
    bounds: Bounds | None = None,
) -> Agreement:
    """The agreement of `candidate` image embeddings (N×D) with the fp32 `reference` ones, scored
    against each task's label embeddings (L×D, fp32: text embeddings do not change with precision)."""
    ref = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    cand = candidate / np.linalg.norm(candidate, axis=1, keepdims=True)
    cos = (ref.astype(np.float64) * cand).sum(axis=1)
    max_dp, top1 = 0.0, {}
    for task, labels in label_sets.items():
        p_ref = probabilities(ref, labels, logit_scale)
        p_cand = probabilities(cand, labels, logit_scale)
        max_dp = max(max_dp, float(np.abs(p_ref - p_cand).max()))
        top1[task] = float((p_ref.argmax(1) == p_cand.argmax(1)).mean())
    return Agreement(
        precision, len(ref), float(cos.mean()), float(cos.min()), max_dp, top1, bounds or Bounds()
    )


def embed_all(
    encode: Callable[[Sequence[np.ndarray]], np.ndarray], frames: Sequence[np.ndarray], batch: int = 8
) -> np.ndarray:
    """Image embeddings of every frame, `batch` frames per call (bounded memory on many images)."""
    parts = [encode(frames[i : i + batch]) for i in range(0, len(frames), batch)]
    return np.concatenate(parts) if parts else np.empty((0, 0), np.float32)
