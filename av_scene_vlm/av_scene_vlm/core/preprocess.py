"""CLIP image preprocessing in torch, on the model's device, matching the checkpoint's processor.

Why not the processor itself: it converts each frame separately through generic code paths; here
same-size frames are resized as one batch and rescale+normalize is one fused op. The arithmetic is the
processor's own (torchvision bicubic antialiased resize of uint8, int() output size, centre crop,
(x - 255·mean) / (255·std)), so results match `CLIPImageProcessor` exactly on CPU (see
docs/PERFORMANCE.md).

Only the part of a frame that reaches the crop is copied and uploaded (`FramePlan.window`): the
resize kernel reads, for each output pixel, a fixed span of source pixels, so the columns of a 16:9
frame that the centre crop discards (43 % at 1080p) never leave host memory, and the result is
bit-identical to resizing the whole frame. Frames so elongated that resizing them whole would need
gigabytes (a 1 × 100,000 sliver becomes 224 × 22,400,000) are cut to the region the crop sees first
(`FramePlan.bounded`): memory stays bounded, at the price of exactness for such frames only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

try:  # torchvision's resize is what CLIPImageProcessor uses; prefer it for exact parity
    from torchvision.transforms.v2 import functional as _tvF

    _BICUBIC = _tvF.InterpolationMode.BICUBIC
except Exception:  # pragma: no cover - exercised only where torchvision is missing
    _tvF = None


@dataclass(frozen=True)
class PreprocessSpec:
    """The numbers that define CLIP preprocessing for one checkpoint."""

    shortest_edge: int = 224
    crop_height: int = 224
    crop_width: int = 224
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    rescale_factor: float = 1 / 255

    @classmethod
    def from_image_processor(cls, ip: object) -> PreprocessSpec:
        """Read size/crop/mean/std from a transformers image processor (dict or SizeDict sizes)."""

        def get(obj: object, key: str, default: int) -> int:
            if obj is None:
                return default
            value = obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)
            return int(value) if value else default

        size = getattr(ip, "size", None)
        crop = getattr(ip, "crop_size", None)
        edge = get(size, "shortest_edge", 0) or get(size, "height", 224)
        return cls(
            shortest_edge=edge,
            crop_height=get(crop, "height", edge),
            crop_width=get(crop, "width", edge),
            mean=tuple(getattr(ip, "image_mean", None) or OPENAI_CLIP_MEAN),
            std=tuple(getattr(ip, "image_std", None) or OPENAI_CLIP_STD),
            rescale_factor=float(getattr(ip, "rescale_factor", None) or 1 / 255),
        )


def resized_size(height: int, width: int, shortest_edge: int) -> tuple[int, int]:
    """Output size when the shortest side becomes `shortest_edge` (transformers' int() rounding)."""
    if (height <= width and height == shortest_edge) or (width <= height and width == shortest_edge):
        return height, width
    if width < height:
        return int(shortest_edge * height / width), shortest_edge
    return shortest_edge, int(shortest_edge * width / height)


# Resized frames larger than this many crops (aspect ratios beyond ~64:1) are cut to the crop's region
# before resizing (FramePlan.bounded).
MAX_RESIZED_CROPS = 64
_BICUBIC_HALF_WIDTH = 2.0  # the bicubic kernel spans ±2 source pixels per unit of scale
_WINDOW_MARGIN = 2  # extra source pixels on each side of the exact span (float rounding in the kernel)


def _source_span(out_lo: int, out_hi: int, in_size: int, out_size: int) -> tuple[int, int]:
    """Source pixels [lo, hi) that torch's antialiased bicubic resize reads for outputs [out_lo, out_hi).

    As in ATen's `_compute_indices_min_size_weights_aa`: output i is centred on scale·(i + 0.5) and
    reads ±support around it, support = 2·scale when downscaling, 2 when upscaling.
    """
    scale = in_size / out_size
    support = _BICUBIC_HALF_WIDTH * max(scale, 1.0)
    lo = math.floor(scale * (out_lo + 0.5) - support + 0.5) - _WINDOW_MARGIN
    hi = math.floor(scale * (out_hi - 0.5) + support + 0.5) + 1 + _WINDOW_MARGIN
    return max(0, lo), min(in_size, hi)


@dataclass(frozen=True)
class FramePlan:
    """How frames of one source size become the model's crop.

    `window` (top, bottom, left, right) is the source region copied and uploaded. Exact plans resize a
    frame-sized buffer holding the window (pixels outside it are never read for the crop) to
    `resized`; bounded plans resize the window alone to `resized` (the crop's neighbourhood at the
    same scale). `top`/`left` place the crop in the resized image.
    """

    height: int
    width: int
    window: tuple[int, int, int, int]
    resized: tuple[int, int]
    top: int
    left: int
    bounded: bool

    @property
    def window_shape(self) -> tuple[int, int]:
        t, b, left, r = self.window
        return b - t, r - left


@dataclass(frozen=True)
class CropRegion:
    """Where the model's crop lies in the source frame, in source pixels (for heatmap placement)."""

    top: float
    left: float
    bottom: float
    right: float


class Preprocessor:
    """uint8 H×W×3 RGB frames -> normalized N×3×h×w tensor on `device` in `dtype`."""

    def __init__(self, spec: PreprocessSpec, device: torch.device, dtype: torch.dtype) -> None:
        self.spec = spec
        self.device = device
        self.dtype = dtype
        inv = 1.0 / spec.rescale_factor
        self._mean = (torch.tensor(spec.mean, device=device) * inv).view(1, 3, 1, 1)
        self._std = (torch.tensor(spec.std, device=device) * inv).view(1, 3, 1, 1)

    def crop_region(self, height: int, width: int) -> CropRegion:
        """The part of a height×width frame the model sees after resize + centre crop."""
        rh, rw = resized_size(height, width, self.spec.shortest_edge)
        top = int((rh - self.spec.crop_height) / 2.0)
        left = int((rw - self.spec.crop_width) / 2.0)
        sy, sx = height / rh, width / rw
        return CropRegion(
            top=top * sy,
            left=left * sx,
            bottom=(top + self.spec.crop_height) * sy,
            right=(left + self.spec.crop_width) * sx,
        )

    def plan(self, height: int, width: int) -> FramePlan:
        """The plan for frames of this size (cached: cameras keep their size)."""
        return _plan(self.spec.shortest_edge, self.spec.crop_height, self.spec.crop_width, height, width)

    def __call__(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """Preprocess a batch; frames may differ in size (same-size frames share one resize call)."""
        out: list[torch.Tensor | None] = [None] * len(frames)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, frame in enumerate(frames):
            check_frame(frame)
            groups.setdefault(frame.shape[:2], []).append(i)
        for (h, w), idx in groups.items():
            plan = self.plan(h, w)
            crops = self.crops(self._window_batch([frames[i] for i in idx], plan), plan)
            for j, i in enumerate(idx):
                out[i] = crops[j]
        pixels = torch.stack(out) if len(out) > 1 else out[0][None]  # type: ignore[index]
        return self.normalize(pixels)

    def normalize(self, crops: torch.Tensor) -> torch.Tensor:
        """uint8 N×3×h×w crops -> the model's normalized pixel values in its dtype."""
        pixels = crops.to(torch.float32)
        pixels.sub_(self._mean).div_(self._std)
        return pixels.to(self.dtype)

    def crops(self, windows: torch.Tensor, plan: FramePlan) -> torch.Tensor:
        """N×wh×ww×3 uint8 windows of `plan` (on the device), or N×H×W×3 frames holding them -> N×3×h×w
        uint8 crops.

        Exact plans place windows in a frame-sized buffer first, so the resize sees the source
        geometry; the buffer's other pixels are left as they are (never read for the crop).
        """
        if plan.bounded or tuple(windows.shape[1:3]) == (plan.height, plan.width):
            frame = windows  # a bounded plan's window, or whole frames (the CPU path, see host_batch)
        else:
            t, b, left, r = plan.window
            frame = torch.empty(
                (windows.shape[0], plan.height, plan.width, 3), dtype=torch.uint8, device=windows.device
            )
            frame[:, t:b, left:r] = windows
        batch = frame.permute(0, 3, 1, 2)  # N×3×H×W view (channels-last memory, what the uint8 kernel likes)
        return self._resize_crop(batch, plan)

    def host_batch(self, frames: Sequence[np.ndarray], plan: FramePlan, *, pin: bool = False) -> torch.Tensor:
        """Same-size frames as one uint8 host tensor holding what `crops` needs, copied once.

        For a GPU (`pin`): the windows alone, in pinned memory (the upload carries only them). On a
        CPU, where nothing is uploaded: exact plans get frame-sized buffers with only the window
        copied in (no second copy into place), a single frame is used as it is (no copy at all).
        """
        from .staging import copy_windows

        if pin or plan.bounded:
            if len(frames) == 1 and not pin:
                t, b, left, r = plan.window
                return torch.from_numpy(np.ascontiguousarray(frames[0][t:b, left:r]))[None]
            return copy_windows(frames, plan.window, pin=pin)
        if len(frames) == 1:
            return torch.from_numpy(np.ascontiguousarray(frames[0]))[None]
        return copy_windows(frames, plan.window, frame_shape=(plan.height, plan.width))

    def _window_batch(self, frames: Sequence[np.ndarray], plan: FramePlan) -> torch.Tensor:
        """Same-size frames -> what `crops` needs, on the device (core/staging.py has the parallel,
        pinned and overlapped upload the engine uses on CUDA)."""
        cuda = self.device.type == "cuda"
        return self.host_batch(frames, plan, pin=cuda).to(self.device, non_blocking=True)

    def _resize_crop(self, batch: torch.Tensor, plan: FramePlan) -> torch.Tensor:
        rh, rw = plan.resized
        if (rh, rw) != tuple(batch.shape[-2:]):
            batch = _resize(batch, rh, rw)
        ch, cw = self.spec.crop_height, self.spec.crop_width
        if ch > rh or cw > rw:  # only when crop > shortest edge; pad like the processor
            pad = [(cw - rw) // 2 if cw > rw else 0, (ch - rh) // 2 if ch > rh else 0]
            pad += [(cw - rw + 1) // 2 if cw > rw else 0, (ch - rh + 1) // 2 if ch > rh else 0]
            batch = torch.nn.functional.pad(batch, (pad[0], pad[2], pad[1], pad[3]))
            rh, rw = batch.shape[-2:]
            top, left = int((rh - ch) / 2.0), int((rw - cw) / 2.0)
        else:
            top, left = plan.top, plan.left
        return batch[..., top : top + ch, left : left + cw]


@lru_cache(maxsize=64)
def _plan(edge: int, ch: int, cw: int, height: int, width: int) -> FramePlan:
    rh, rw = resized_size(height, width, edge)
    if ch > rh or cw > rw:  # the processor pads: the whole frame is needed
        return FramePlan(height, width, (0, height, 0, width), (rh, rw), 0, 0, False)
    top, left = int((rh - ch) / 2.0), int((rw - cw) / 2.0)
    t, b = _source_span(top, top + ch, height, rh)
    lo, hi = _source_span(left, left + cw, width, rw)
    if rh * rw <= MAX_RESIZED_CROPS * ch * cw:
        return FramePlan(height, width, (t, b, lo, hi), (rh, rw), top, left, False)
    # Bounded: resize only the window, at the frame's scale; the crop keeps its place in it.
    sy, sx = height / rh, width / rw
    wh, ww = max(ch, round((b - t) / sy)), max(cw, round((hi - lo) / sx))
    return FramePlan(height, width, (t, b, lo, hi), (wh, ww), (wh - ch) // 2, (ww - cw) // 2, True)


def _resize(batch: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic antialiased resize of uint8 images, as CLIPImageProcessor does it."""
    if _tvF is not None:
        return _tvF.resize(batch, [height, width], interpolation=_BICUBIC, antialias=True)
    x = torch.nn.functional.interpolate(
        batch.float(), size=(height, width), mode="bicubic", align_corners=False, antialias=True
    )
    return x.clamp_(0, 255).round_().to(torch.uint8)


def check_frame(frame: object) -> None:
    """Frames must be H×W×3 uint8 RGB with H, W ≥ 1; anything else is a caller bug worth a clear error."""
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be H×W×3 uint8 RGB, got shape {frame.shape} dtype {frame.dtype}")
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ValueError(f"frame has zero size: {frame.shape}")
