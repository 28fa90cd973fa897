"""Scene-change detection for the captioner (caption_node's `caption_scene_change_threshold`).

A camera's frame is "a new scene" when its image embedding is farther (cosine distance 1 - cos) than
a threshold from the embedding of the camera's last captioned frame (the reference). Embeddings come
from clip_node's `<ns>/similarity` messages, matched to frames by (stamp, frame_id) — kept here for
the last `history` frames per camera —, or are computed by the caller. A reference whose embedding
has not arrived yet when its caption is done (clip_node is still busy with that frame) is looked up
again at the next decision.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

StampKey = tuple[int, int, str]
"""(stamp sec, stamp nanosec, frame_id): which frame an embedding belongs to."""


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 - cos(a, b); 0 for identical directions, 2 for opposite ones (0 for a zero vector)."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return 1.0 - float(np.dot(a, b)) / (na * nb)


class SceneChangeDetector:
    """Received embeddings and the reference (last captioned frame) per camera; thread-safe: the
    executor adds embeddings while the caption worker decides."""

    def __init__(self, history: int = 64) -> None:
        self._history = history
        self._received: dict[str, deque[tuple[StampKey, np.ndarray]]] = {}
        self._reference: dict[str, tuple[StampKey, np.ndarray | None]] = {}
        self._lock = threading.Lock()

    def add(self, camera: str, key: StampKey, embedding: np.ndarray) -> None:
        """An embedding received for the frame `key` of `camera` (newest last)."""
        with self._lock:
            self._received.setdefault(camera, deque(maxlen=self._history)).append((key, embedding))

    def received(self, camera: str, key: StampKey, *, exact: bool) -> np.ndarray | None:
        """The received embedding of the frame `key`, else (unless `exact`) the newest one."""
        with self._lock:
            history = self._received.get(camera, ())
            for k, emb in reversed(history):
                if k == key:
                    return emb
            return None if exact or not history else history[-1][1]

    def set_reference(self, camera: str, key: StampKey, embedding: np.ndarray | None = None) -> None:
        """`camera`'s frame `key` was captioned; without `embedding`, the received one (now or later)."""
        if embedding is None:
            embedding = self.received(camera, key, exact=True)
        with self._lock:
            self._reference[camera] = (key, embedding)

    def changed(self, camera: str, embedding: np.ndarray | None, threshold: float) -> bool:
        """True when `embedding` is farther than `threshold` from the reference; False while either is
        unknown or they differ in size (another model)."""
        with self._lock:
            ref = self._reference.get(camera)
        if ref is None or embedding is None:
            return False
        key, ref_emb = ref
        if ref_emb is None:  # the captioned frame's embedding came late: look again
            ref_emb = self.received(camera, key, exact=True)
            if ref_emb is None:
                return False
            with self._lock:
                self._reference[camera] = (key, ref_emb)
        if ref_emb.shape != embedding.shape:
            return False
        return cosine_distance(embedding, ref_emb) > threshold
