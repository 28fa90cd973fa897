"""A short synthetic drive: the package's bundled default input for the demo, docs and benchmarks.

Deterministic frames drawn with OpenCV (sky, road with moving lane marks, vehicles, a pedestrian,
dusk falling, rain in the second half) so a fresh machine has camera input without downloading data.
"""

from __future__ import annotations

import cv2
import numpy as np


def drive_frame(
    i: int, n: int = 60, height: int = 480, width: int = 640, camera: str = "front"
) -> np.ndarray:
    """Frame `i` of an `n`-frame drive as H×W×3 uint8 RGB."""
    t = i / max(1, n - 1)
    rng = np.random.default_rng(1000 * (camera == "rear") + i)
    light = 1.0 - 0.65 * t  # day -> dusk
    img = np.zeros((height, width, 3), np.uint8)
    horizon = int(height * 0.45)
    sky_top = np.array([90, 150, 235]) * light
    sky_low = np.array([200, 220, 245]) * light
    for y in range(horizon):
        a = y / max(1, horizon - 1)
        img[y] = (sky_top * (1 - a) + sky_low * a).astype(np.uint8)
    img[horizon:] = (np.array([70, 110, 60]) * light).astype(np.uint8)  # grass
    cx = width // 2 + (int(30 * np.sin(i / 9)) if camera == "front" else 0)
    road = np.array([[cx - 40, horizon], [cx + 40, horizon], [width - 20, height], [20, height]], np.int32)
    cv2.fillPoly(img, [road], tuple(int(v * light) for v in (80, 80, 85)))
    for k in range(8):  # lane marks moving towards the camera
        d = ((k + (i % 4) / 4) / 8) ** 2
        y0 = int(horizon + d * (height - horizon))
        y1 = int(horizon + min(1.0, d + 0.03) * (height - horizon))
        w0, w1 = 1 + int(4 * d), 1 + int(4 * min(1.0, d + 0.03))
        pts = np.array([[cx - w0, y0], [cx + w0, y0], [cx + w1, y1], [cx - w1, y1]], np.int32)
        cv2.fillPoly(img, [pts], (235, 235, 210))
    # A vehicle ahead (truck-sized box) that grows as we close in; a car in the other lane.
    s = 0.6 + 0.8 * t
    bw, bh = int(90 * s), int(70 * s)
    x0, y0 = cx + 10, horizon + int(40 * s)
    cv2.rectangle(img, (x0, y0), (x0 + bw, y0 + bh), (200, 40, 40), -1)
    cv2.rectangle(img, (x0 + 5, y0 + 8), (x0 + bw - 5, y0 + bh // 3), (40, 60, 90), -1)
    for wx in (x0 + bw // 5, x0 + 4 * bw // 5):
        cv2.circle(img, (wx, y0 + bh), max(3, bh // 6), (20, 20, 20), -1)
    cx2 = cx - 60 - int(40 * t)
    cv2.rectangle(img, (cx2 - 40, horizon + 60), (cx2 + 10, horizon + 95), (30, 90, 200), -1)
    if 20 <= i <= 40:  # a pedestrian crossing
        px = int(width * (0.15 + 0.5 * (i - 20) / 20))
        py = horizon + 70
        cv2.circle(img, (px, py - 38), 8, (230, 190, 160), -1)
        cv2.line(img, (px, py - 30), (px, py), (40, 40, 160), 5)
        cv2.line(img, (px, py), (px - 8 + 4 * (i % 3), py + 25), (40, 40, 40), 4)
        cv2.line(img, (px, py), (px + 8 - 4 * (i % 3), py + 25), (40, 40, 40), 4)
    if t > 0.5:  # rain streaks
        for _ in range(int(300 * (t - 0.5) * 2)):
            x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
            cv2.line(img, (x, y), (x - 3, y + 12), (190, 190, 200), 1)
    if camera == "rear":
        img = cv2.flip(img, 1)
    noise = rng.integers(0, 6, img.shape, dtype=np.uint8)
    return cv2.add(img, noise)


def drive(n: int = 60, height: int = 480, width: int = 640, camera: str = "front") -> list[np.ndarray]:
    """All frames of the synthetic drive."""
    return [drive_frame(i, n, height, width, camera) for i in range(n)]
