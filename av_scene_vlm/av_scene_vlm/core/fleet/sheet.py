"""Contact sheet of search hits: each thumbnail titled with rank, score, bag, topic and time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .search import Hit


def stamp_text(ns: int) -> str:
    """A header stamp as UTC date and time with milliseconds."""
    t = datetime.fromtimestamp(ns / 1e9, tz=timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d} UTC"


def decode_thumbnail(data: bytes) -> np.ndarray:
    """RGB pixels of a stored JPEG thumbnail (a grey tile when there is none)."""
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if img is None:
        return np.full((96, 128, 3), 128, np.uint8)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def contact_sheet(hits: Sequence[Hit], out: str | Path, cols: int | None = None) -> tuple[int, int]:
    """Save the hits' thumbnails as a titled grid (PNG); returns its (width, height) in pixels."""
    from ..visualize import plot_grid

    images = [decode_thumbnail(h.thumbnail) for h in hits]
    titles = [
        f"#{i} score {h.score:.3f}\n{Path(h.bag).name}\n{h.topic}\n{stamp_text(h.stamp)}"
        for i, h in enumerate(hits, 1)
    ]
    return plot_grid(images, titles, out=out, cols=cols)
