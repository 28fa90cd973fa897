"""core.cuda_graphs on a CPU: buckets, splitting, static buffers, the parity check and its fallback.

The capture is a strategy: `EagerCapture` keeps CUDA graphs' contract (static inputs copied into,
static output overwritten by each replay) without CUDA, so the engine's graph path — bucketing,
padding, splitting, per-key capture, the check against eager, the fallback — runs here. A wrong
"graph" is injected to prove the fallback. The CUDA capture itself runs in benchmarks/gpu_suite.sh.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from av_scene_vlm.core.backend_options import BackendError
from av_scene_vlm.core.cuda_graphs import (
    BUCKETS,
    EagerCapture,
    GraphSet,
    bucket_for,
    check_mode,
    split_batch,
)
from av_scene_vlm.core.engine import ZeroShotEngine
from av_scene_vlm.core.tasks import parse_tasks

TASKS = parse_tasks({"road_user": ["car", "truck", "pedestrian"], "weather": ["clear", "rain"]})


class WrongCapture(EagerCapture):
    """A 'graph' whose replay returns other numbers than the eager forward (a broken capture)."""

    def __call__(self, fn, static_inputs):
        replay = super().__call__(fn, static_inputs)

        def wrong() -> torch.Tensor:
            out = replay()
            out[:, -5:] = out[:, -5:].flip(1)  # the cosines of the last task, reversed
            return out

        return wrong


class CountingCapture(EagerCapture):
    def __init__(self) -> None:
        self.keys = 0

    def __call__(self, fn, static_inputs):
        self.keys += 1
        return super().__call__(fn, static_inputs)


def test_buckets_and_splits() -> None:
    assert [bucket_for(n) for n in (1, 2, 3, 5, 8, 9, 33, 64)] == [1, 2, 4, 8, 8, 16, 64, 64]
    with pytest.raises(ValueError):
        bucket_for(65)
    assert split_batch(150) == [(0, 64), (64, 128), (128, 150)]
    assert split_batch(3) == [(0, 3)]
    assert BUCKETS[-1] == 64


@pytest.mark.parametrize("value,want", [("auto", "auto"), ("ON", "on"), ("false", "off"), ("off", "off")])
def test_modes(value, want) -> None:
    assert check_mode(value) == want


def test_bad_mode_is_one_line() -> None:
    with pytest.raises(ValueError, match="cuda_graphs must be auto, on or off, got 'sometimes'"):
        check_mode("sometimes")


def _double(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return x.float() * 2 + bias


def test_graph_set_pads_reuses_and_bounds() -> None:
    capture = CountingCapture()
    graphs = GraphSet(capture, lambda a, b, key: float(np.abs(a - b).max()), max_graphs=2)
    bias = torch.tensor([1.0])
    out = graphs.run("k4", 4, torch.arange(3.0)[:, None], [bias], _double)
    assert out.tolist() == [[1.0], [3.0], [5.0]]  # 3 rows of a 4-row bucket
    out = graphs.run("k4", 4, torch.tensor([[10.0]]), [torch.tensor([0.0])], _double)
    assert out.tolist() == [[20.0]] and capture.keys == 1  # replayed with new inputs, not recaptured
    graphs.run("k8", 8, torch.ones(5, 1), [bias], _double)
    graphs.run("k16", 16, torch.ones(9, 1), [bias], _double)
    assert len(graphs) == 2 and capture.keys == 3  # the oldest graph was dropped


def test_graph_set_falls_back_once_on_a_wrong_graph(caplog) -> None:
    def bad_capture(fn, inputs):
        return lambda: fn(*inputs) + 1

    graphs = GraphSet(bad_capture, lambda a, b, key: float(np.abs(a - b).max()))
    with caplog.at_level(logging.WARNING, logger="av_scene_vlm.cuda_graphs"):
        assert graphs.run("k", 1, torch.ones(1, 1), [torch.zeros(1)], _double) is None
        assert graphs.run("k", 1, torch.ones(1, 1), [torch.zeros(1)], _double) is None
    assert not graphs.enabled and "differs from the eager forward" in graphs.disabled_reason
    assert len([r for r in caplog.records if "cuda_graphs" in r.getMessage()]) == 1


def test_graph_set_retries_a_failed_capture_then_gives_up(caplog) -> None:
    """A capture that raises (not a parity mismatch) runs that batch eagerly and is tried again later;
    only after max_retries failures are graphs turned off."""
    calls = []

    def failing(fn, inputs):
        calls.append(1)
        raise RuntimeError("operation not permitted when stream is capturing")

    graphs = GraphSet(failing, lambda a, b, key: 0.0, max_retries=2, retry_after=3)
    with caplog.at_level(logging.WARNING, logger="av_scene_vlm.cuda_graphs"):
        for _ in range(40):
            assert graphs.run("k", 1, torch.ones(1, 1), [torch.zeros(1)], _double) is None
    assert len(calls) == 3 and graphs.retries == 3  # tried at batches 1, 5 (3 later) and 12 (6 later)
    assert "RuntimeError: operation not permitted" in graphs.disabled_reason
    assert "3 captures failed" in graphs.disabled_reason and not graphs.enabled
    assert "tried again after 3 batches" in caplog.text
    assert "running the eager forward from now on" in caplog.text


# ---- the engine with graphs on (EagerCapture) against the engine without ------------------------
@pytest.fixture(scope="module")
def engines(tiny_clip):
    eager = ZeroShotEngine(str(tiny_clip), tasks=TASKS, backend="torch", cuda_graphs="off")
    capture = CountingCapture()
    graphed = ZeroShotEngine(
        eager.clip, tasks=TASKS, backend="torch", cuda_graphs="on", graph_capture=capture
    )
    return eager, graphed, capture


def _assert_same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for tx, ty in zip(x.tasks, y.tasks, strict=True):
            np.testing.assert_allclose(tx.probabilities, ty.probabilities, atol=1e-6)
            assert tx.label == ty.label
        np.testing.assert_allclose(x.image_embedding, y.image_embedding, atol=1e-6)
        assert (x.heatmap is None) == (y.heatmap is None)
        if x.heatmap is not None:
            np.testing.assert_allclose(x.heatmap, y.heatmap, atol=1e-5)
            assert x.heatmap_label == y.heatmap_label


def test_engine_graph_path_equals_eager(engines, rng) -> None:
    eager, graphed, capture = engines
    assert graphed.graphs is not None and eager.graphs is None
    sizes = [(120, 160)] * 3 + [(90, 200)] * 2 + [(120, 160)]
    frames = [rng.integers(0, 256, (*s, 3), dtype=np.uint8) for s in sizes]
    heat = [True, False, True, False, True, False]
    for batch, flags in [(frames, heat), (frames[:1], [True]), (frames[3:5], False)]:
        _assert_same(graphed.classify(batch, heatmap=flags), eager.classify(batch, heatmap=flags))
    before = capture.keys
    _assert_same(graphed.classify(frames, heatmap=heat), eager.classify(frames, heatmap=heat))
    assert capture.keys == before  # same buckets, sizes and layout: replayed, not captured again
    assert graphed.graphs_state().startswith("on (")


def test_engine_splits_batches_beyond_the_largest_bucket(engines, rng) -> None:
    eager, graphed, _ = engines
    """130 frames: the bucket-64 graph replays twice in one batch (its static output must be copied out
    before the second replay) and a bucket-2 graph takes the rest."""
    frames = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(130)]
    _assert_same(graphed.classify(frames), eager.classify(frames))


def test_engine_falls_back_to_eager_on_a_wrong_graph(tiny_clip, rng, caplog) -> None:
    eager = ZeroShotEngine(str(tiny_clip), tasks=TASKS, backend="torch", cuda_graphs="off")
    broken = ZeroShotEngine(
        eager.clip, tasks=TASKS, backend="torch", cuda_graphs="on", graph_capture=WrongCapture()
    )
    frames = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    with caplog.at_level(logging.WARNING, logger="av_scene_vlm.cuda_graphs"):
        first = broken.classify(frames)
        second = broken.classify(frames)
    _assert_same(first, eager.classify(frames))  # the wrong graph's numbers were never returned
    _assert_same(second, eager.classify(frames))
    assert sum("cuda_graphs" in r.getMessage() for r in caplog.records) == 1
    assert broken.graphs_state().startswith("off after a failed check")


def test_engine_option_errors(tiny_clip) -> None:
    with pytest.raises(ValueError, match="cuda_graphs must be"):
        ZeroShotEngine(str(tiny_clip), tasks=TASKS, cuda_graphs="maybe")
    with pytest.raises(BackendError, match="needs a CUDA device"):
        ZeroShotEngine(str(tiny_clip), tasks=TASKS, backend="torch", cuda_graphs="on")
    auto = ZeroShotEngine(str(tiny_clip), tasks=TASKS, backend="torch", cuda_graphs="auto")
    assert auto.graphs is None and auto.graphs_state() == "off"  # auto: CUDA only
