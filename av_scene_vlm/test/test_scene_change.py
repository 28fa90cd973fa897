"""core.scene_change: caption_node's scene-change decision, without DDS."""

from __future__ import annotations

import numpy as np
import pytest
from av_scene_vlm.core.scene_change import SceneChangeDetector, cosine_distance

A, B = np.array([1.0, 0.0]), np.array([0.0, 1.0])  # orthogonal: distance 1
A_CLOSE = np.array([1.0, 0.1])  # distance ~0.005


def test_cosine_distance() -> None:
    assert cosine_distance(A, B) == pytest.approx(1.0)
    assert cosine_distance(A, -A) == pytest.approx(2.0)
    assert cosine_distance(np.array([1.0, 0.0]), np.array([0.0, 2.0])) == pytest.approx(1.0)
    assert cosine_distance(A, np.zeros(2)) == 0.0


def test_received_embeddings_by_frame_and_newest() -> None:
    d = SceneChangeDetector(history=2)
    d.add("cam", (1, 0, "f"), A)
    d.add("cam", (2, 0, "f"), B)
    assert d.received("cam", (1, 0, "f"), exact=True) is A
    assert d.received("cam", (9, 0, "f"), exact=True) is None
    assert d.received("cam", (9, 0, "f"), exact=False) is B  # the newest
    d.add("cam", (3, 0, "f"), A_CLOSE)  # history 2: frame 1 falls out
    assert d.received("cam", (1, 0, "f"), exact=True) is None
    assert d.received("other", (1, 0, "f"), exact=False) is None


def test_changed_against_the_reference() -> None:
    d = SceneChangeDetector()
    assert not d.changed("cam", B, 0.3)  # no reference yet: never a change
    d.set_reference("cam", (1, 0, "f"), A)
    assert not d.changed("cam", A_CLOSE, 0.3) and d.changed("cam", B, 0.3)
    assert not d.changed("cam", None, 0.3)
    assert not d.changed("cam", np.ones(3), 0.3)  # another model's size: not comparable


def test_a_late_reference_embedding_is_looked_up_again() -> None:
    d = SceneChangeDetector()
    d.set_reference("cam", (1, 0, "f"))  # captioned before clip_node's embedding arrived
    assert not d.changed("cam", B, 0.3)
    d.add("cam", (1, 0, "f"), A)
    assert d.changed("cam", B, 0.3) and not d.changed("cam", A_CLOSE, 0.3)
