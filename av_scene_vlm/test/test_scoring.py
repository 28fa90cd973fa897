"""core.scoring: one packed tensor per batch holds what the per-task computations gave."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from av_scene_vlm.core.scoring import (
    make_layout,
    max_probability_error,
    pack_scores,
    softmax64,
    unpack_scores,
)
from av_scene_vlm.core.tasks import TaskError, parse_tasks

TASKS = parse_tasks({"road": ["highway", "street", "tunnel"], "weather": ["clear", "rain"]})
SCALE = 100.0


def _normed(t: torch.Tensor) -> torch.Tensor:
    return t / t.norm(dim=-1, keepdim=True)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    emb = _normed(torch.randn(4, 8, generator=g))
    patch = _normed(torch.randn(4, 9, 8, generator=g))
    labels = _normed(torch.randn(5, 8, generator=g))
    return emb, patch, labels


def test_pack_then_unpack_equals_per_task_computation(batch) -> None:
    emb, patch, labels = batch
    layout = make_layout(TASKS, dim=8, patches=9, heatmap_task="road")
    rows = unpack_scores(pack_scores(emb, patch, labels, layout).numpy(), layout, SCALE)
    per_task = [labels[:3], labels[3:]]
    for i, row in enumerate(rows):
        np.testing.assert_array_equal(row.embedding, emb[i].numpy())
        for k, e in enumerate(per_task):
            cos = (emb[i] @ e.T).numpy()
            np.testing.assert_allclose(row.cosines[k], cos, atol=1e-6)
            # float64 softmax of the float32 cosines, as torch computes it
            want = torch.softmax(SCALE * torch.from_numpy(row.cosines[k]).double(), 0).numpy()
            np.testing.assert_allclose(row.probabilities[k], want, atol=1e-12)
            assert row.probabilities[k].sum() == pytest.approx(1.0, abs=1e-12)
        top = int(np.argmax(row.probabilities[0]))
        assert row.heat_label == top
        np.testing.assert_allclose(row.grid, (patch[i] @ labels[top]).reshape(3, 3).numpy(), atol=1e-6)


def test_fixed_heatmap_label_and_no_heatmap(batch) -> None:
    emb, patch, labels = batch
    layout = make_layout(TASKS, dim=8, patches=9, heatmap_task="weather", heatmap_label="rain")
    rows = unpack_scores(pack_scores(emb, patch, labels, layout).numpy(), layout, SCALE)
    for i, row in enumerate(rows):
        assert row.heat_label == 1
        np.testing.assert_allclose(row.grid.ravel(), (patch[i] @ labels[4]).numpy(), atol=1e-6)
    plain = make_layout(TASKS, dim=8, patches=0)
    packed = pack_scores(emb, None, labels, plain)
    assert packed.shape == (4, 8 + 5)
    assert all(r.grid is None for r in unpack_scores(packed.numpy(), plain, SCALE))


def test_layout_rejects_unknown_heatmap_choices() -> None:
    with pytest.raises(TaskError, match="heatmap task 'sky'"):
        make_layout(TASKS, 8, 9, heatmap_task="sky")
    with pytest.raises(TaskError, match="heatmap label 'snow'"):
        make_layout(TASKS, 8, 9, heatmap_task="weather", heatmap_label="snow")


def test_probability_error_catches_drift_top1_and_nan(batch) -> None:
    emb, _, labels = batch
    layout = make_layout(TASKS, dim=8, patches=0)
    a = pack_scores(emb, None, labels, layout).numpy()
    assert max_probability_error(a, a.copy(), layout, SCALE) == 0.0
    b = a.copy()
    b[:, 8:] += 1e-7
    assert 0 < max_probability_error(a, b, layout, SCALE) < 1e-3
    swapped = a.copy()
    swapped[:, 8:11] = swapped[:, 8:11][:, ::-1]  # other top-1 in task 'road'
    assert max_probability_error(a, swapped, layout, SCALE) == float("inf")
    nan = a.copy()
    nan[0, 0] = np.nan
    assert max_probability_error(a, nan, layout, SCALE) == float("inf")


def test_softmax64_is_stable_for_large_logits() -> None:
    p = softmax64(np.array([[1.0, 0.99, -1.0]], np.float32), 1e4)
    assert np.isfinite(p).all() and p.sum() == pytest.approx(1.0)
