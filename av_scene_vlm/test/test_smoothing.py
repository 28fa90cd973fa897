"""core.smoothing: clip_node's EMA of probabilities per camera and task, without DDS."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from av_scene_vlm.core.smoothing import EmaSmoother


def _tasks(probs, labels=("car", "truck", "bus"), name="default"):
    return [SimpleNamespace(task=name, labels=list(labels), probabilities=np.asarray(probs, float))]


def test_average_per_camera_and_restart_on_new_labels() -> None:
    ema = EmaSmoother()
    a, b, c = [0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.1, 0.8, 0.1]
    np.testing.assert_allclose(ema.update("front", _tasks(a), 0.5)[0], a)  # the first frame starts it
    np.testing.assert_allclose(ema.update("front", _tasks(b), 0.5)[0], [0.4, 0.25, 0.35])
    np.testing.assert_allclose(ema.update("rear", _tasks(c), 0.5)[0], c)  # cameras are separate
    expected = 0.5 * np.array([0.4, 0.25, 0.35]) + 0.5 * np.array(c)
    np.testing.assert_allclose(ema.update("front", _tasks(c), 0.5)[0], expected)
    # Same shape, other labels (a relabel racing a running batch): the average restarts.
    relabelled = ema.update("front", _tasks(a, labels=("bus", "van", "tram")), 0.5)[0]
    np.testing.assert_allclose(relabelled, a)
    ema.clear()
    np.testing.assert_allclose(ema.update("rear", _tasks(a), 0.9)[0], a)


def test_factor_zero_keeps_nothing() -> None:
    ema = EmaSmoother()
    assert ema.update("front", _tasks([0.5, 0.5, 0.0]), 0.0) is None
    np.testing.assert_allclose(ema.update("front", _tasks([0.2, 0.3, 0.5]), 0.5)[0], [0.2, 0.3, 0.5])
