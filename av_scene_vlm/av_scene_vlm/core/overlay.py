"""The heatmap overlay clip_node publishes on `scene/heatmap`, and the text lines drawn on it.

`overlay_heatmap` runs on every published frame, so it is pure OpenCV (a few ms at 1080p) and
returns BGR, the `bgr8` encoding the node publishes. (The notebooks' plots are in `visualize`.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from .engine import FrameResult
from .tasks import DEFAULT_TASK

# Overlay text: white Hershey text on a darkened box, scaled with the frame width.
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_MIN_FONT_SCALE = 0.3


def overlay_heatmap(
    rgb: np.ndarray,
    heatmap: np.ndarray,
    *,
    alpha: float = 0.45,
    colormap: int = cv2.COLORMAP_JET,
    lines: Sequence[str] = (),
    max_width: int = 0,
) -> np.ndarray:
    """Blend a colour-mapped heatmap over an RGB frame and write `lines` top-left; returns BGR uint8.

    BGR because the node publishes the result as a `bgr8` sensor_msgs/Image as is.

    The heatmap (H×W float cosine map, e.g. `FrameResult.heatmap`; resized if its size differs from
    the frame's) is min-max normalised *per frame* to 0..255 before colour-mapping: raw patch cosines
    sit in a narrow band that differs between models, so only the relative pattern is meaningful.
    A constant (or all-NaN) map becomes all zeros (the colormap's low colour), NaN/inf count as the
    minimum. Output pixel = (1 - alpha) · frame + alpha · colour.

    `max_width` > 0 downscales a wider frame first (INTER_AREA, aspect kept), so the text size and the
    cost are those of the published size. Text that does not fit (tiny frames) is shrunk, truncated
    or skipped; the returned shape is always the (possibly downscaled) frame's.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    frame = as_rgb_uint8(rgb)
    height, width = frame.shape[:2]
    if max_width > 0 and width > max_width:
        height, width = max(1, round(height * max_width / width)), max_width
        frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
    heat = np.asarray(heatmap)
    if heat.ndim == 3 and heat.shape[2] == 1:
        heat = heat[:, :, 0]
    if heat.ndim != 2 or heat.size == 0:
        raise ValueError(f"heatmap must be a non-empty H×W array, got shape {heat.shape}")
    if heat.dtype not in (np.float32, np.float64):
        heat = heat.astype(np.float32)
    if heat.shape != (height, width):
        heat = cv2.resize(heat, (width, height), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(_normalise_u8(heat), colormap)
    out = cv2.addWeighted(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), 1.0 - alpha, colour, alpha, 0.0)
    if lines:
        _draw_lines(out, list(lines))
    return out


def _normalise_u8(heat: np.ndarray) -> np.ndarray:
    """Min-max to uint8 in one OpenCV pass; constant or non-finite-only maps give zeros."""
    lo, hi = cv2.minMaxLoc(heat)[:2]
    if not (math.isfinite(lo) and math.isfinite(hi)):  # rare: inf present, or nothing finite
        finite = np.isfinite(heat)
        if not finite.any():
            return np.zeros(heat.shape, np.uint8)
        lo, hi = float(heat[finite].min()), float(heat[finite].max())
        heat = np.where(finite, heat, lo)
    if hi - lo <= 1e-12:
        return np.zeros(heat.shape, np.uint8)
    scale = 255.0 / (hi - lo)
    # NaN saturates to 0 (the minimum); values are >= 0 so the "abs" does nothing.
    return cv2.convertScaleAbs(heat, alpha=scale, beta=-lo * scale)


def _draw_lines(img: np.ndarray, lines: list[str]) -> None:
    """White text on a darkened box at the top-left, in place; skips what cannot fit."""
    height, width = img.shape[:2]
    scale = min(1.0, max(_MIN_FONT_SCALE, width / 1600.0))
    thickness = 2 if scale >= 0.8 else 1
    pad = max(2, round(6 * scale))
    # Shrink for long lines (down to the minimum scale), then truncate what still does not fit.
    widest = max(cv2.getTextSize(t, _FONT, scale, thickness)[0][0] for t in lines)
    if widest + 2 * pad > width and scale > _MIN_FONT_SCALE:
        scale = max(_MIN_FONT_SCALE, scale * (width - 2 * pad) / max(widest, 1))
        thickness = 1
    (_, text_h), base = cv2.getTextSize("Ag", _FONT, scale, thickness)
    line_h = text_h + base + max(1, pad // 2)
    n_fit = min(len(lines), (height - 2 * pad) // line_h) if height > 2 * pad else 0
    shown = [t for t in (_fit_text(t, width - 2 * pad, scale, thickness) for t in lines[:n_fit]) if t]
    if not shown:
        return
    box_w = min(width, 2 * pad + max(cv2.getTextSize(t, _FONT, scale, thickness)[0][0] for t in shown))
    box_h = min(height, 2 * pad + len(shown) * line_h)
    roi = img[:box_h, :box_w]
    cv2.convertScaleAbs(roi, dst=roi, alpha=0.35)  # dark, translucent: the scene shows through
    y = pad + text_h
    for text in shown:
        cv2.putText(img, text, (pad, y), _FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)
        y += line_h


def _fit_text(text: str, max_w: int, scale: float, thickness: int) -> str:
    """`text`, cut with '..' until it is at most `max_w` pixels wide; '' if not even 1 char fits."""
    text = text.encode("ascii", "replace").decode()  # Hershey fonts draw ASCII only
    if max_w <= 0:
        return ""
    if cv2.getTextSize(text, _FONT, scale, thickness)[0][0] <= max_w:
        return text
    for n in range(len(text) - 1, 0, -1):
        cut = text[:n].rstrip() + ".."
        if cv2.getTextSize(cut, _FONT, scale, thickness)[0][0] <= max_w:
            return cut
    return ""


def format_lines(result: FrameResult, top_k: int = 1) -> list[str]:
    """One line per task — "weather: rain 0.77", or with top_k > 1 "weather: rain 0.77, fog 0.12".

    The implicit task of a plain label list (`DEFAULT_TASK`) is shown without its name, as the
    classify CLI does. Probabilities have 2 decimals.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    out = []
    for task in result.tasks:
        order = np.argsort(-np.asarray(task.probabilities), kind="stable")[:top_k]
        body = ", ".join(f"{task.labels[i]} {float(task.probabilities[i]):.2f}" for i in order)
        out.append(body if task.task == DEFAULT_TASK else f"{task.task}: {body}")
    return out


# ---- figures (matplotlib object API, no pyplot) -----------------------------------------------------


def as_rgb_uint8(img: np.ndarray) -> np.ndarray:
    """H×W×3 uint8 from RGB, RGBA, gray (H×W or H×W×1) or float in 0..1 arrays."""
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"expected an H×W×3 RGB image, got shape {a.shape}")
    a = a[:, :, :3]
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating):
            a = np.nan_to_num(a) * 255.0
        a = np.clip(a, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)
