"""Camera frames as Qwen2.5-VL's image processor accepts them, whatever their size or shape.

Why: the processor needs at least 28 px per side, rejects aspect ratios of 200 or more, and guesses
the channel axis of tiny arrays wrongly; a camera (or a hostile publisher) can send any of those.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

# Qwen's smart_resize rejects aspect ratios >= 200; slivers are squashed to this ratio first.
_MAX_ASPECT = 150.0


def as_rgb(image: Any) -> np.ndarray:
    """Validate an H×W×3 uint8 RGB array (H×W gray and H×W×4 RGBA are converted)."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array (H×W×3 uint8 RGB), got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be H×W×3 RGB, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty: shape {image.shape}")
    return image


def to_chw(image: np.ndarray, factor: int) -> torch.Tensor:
    """H×W×3 uint8 -> 3×H'×W' uint8 tensor the Qwen image processor accepts for any input size.

    Why: Qwen's processor needs at least `factor` (= patch 14 × merge 2 = 28) px per side,
    rejects aspect ratios >= 200, and guesses the channel axis of tiny arrays (1×1×3) wrongly.
    Slivers are squashed to 150:1, then images whose shorter side is under `factor` are upscaled
    (bilinear, aspect ratio kept) so that side is `factor` px. A channels-first tensor is passed
    so the channel axis is never guessed. Normal camera frames pass through without a copy.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    h, w = image.shape[:2]
    th, tw = float(h), float(w)
    if max(th, tw) / min(th, tw) > _MAX_ASPECT:
        if th > tw:
            th = tw * _MAX_ASPECT
        else:
            tw = th * _MAX_ASPECT
    if min(th, tw) < factor:
        scale = factor / min(th, tw)
        th, tw = th * scale, tw * scale
    size = (max(factor, math.ceil(th - 1e-6)), max(factor, math.ceil(tw - 1e-6)))
    if size == (h, w):
        return tensor
    resized = torch.nn.functional.interpolate(
        tensor[None].float(),
        size=size,
        mode="bilinear",
        align_corners=False,
        antialias=size[0] < h or size[1] < w,
    )
    return resized[0].round().clamp_(0, 255).to(torch.uint8)
