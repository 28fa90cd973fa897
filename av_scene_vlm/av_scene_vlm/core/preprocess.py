"""CLIP image preprocessing in torch, on the model's device, matching the checkpoint's processor.

Why not the processor itself: it converts each frame separately through generic code paths; here
uint8 frames are copied once into a pinned buffer and uploaded without blocking on CUDA, same-size
frames are resized as one batch, and rescale+normalize is one fused op. The arithmetic is the processor's own
(torchvision bicubic antialiased resize of uint8, int() output size, centre crop, (x - 255·mean) /
(255·std)), so results match `CLIPImageProcessor` exactly on CPU (see docs/PERFORMANCE.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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

    def __call__(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """Preprocess a batch; frames may differ in size (same-size frames share one resize call)."""
        out: list[torch.Tensor | None] = [None] * len(frames)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, frame in enumerate(frames):
            check_frame(frame)
            groups.setdefault(frame.shape[:2], []).append(i)
        for (h, w), idx in groups.items():
            batch = self._to_device([frames[i] for i in idx])
            crops = self._resize_crop(batch, h, w)
            for j, i in enumerate(idx):
                out[i] = crops[j]
        pixels = torch.stack(out) if len(out) > 1 else out[0][None]  # type: ignore[index]
        pixels = pixels.to(torch.float32)
        pixels.sub_(self._mean).div_(self._std)
        return pixels.to(self.dtype)

    def _to_device(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """Same-size frames -> N×3×H×W uint8 on the device.

        On CUDA the frames are copied once, straight into a pinned host buffer (from torch's caching
        host allocator), and uploaded asynchronously: np.stack + pin_memory() would copy every frame
        twice, 6 MB each at 1080p. On CPU a single contiguous frame is used without any copy.
        """
        cuda = self.device.type == "cuda"
        if len(frames) == 1 and not cuda:
            t = torch.from_numpy(np.ascontiguousarray(frames[0]))[None]
        else:
            h, w = frames[0].shape[:2]
            t = torch.empty((len(frames), h, w, 3), dtype=torch.uint8, pin_memory=cuda)
            host = t.numpy()
            for k, frame in enumerate(frames):
                host[k] = frame  # any strides (e.g. a BGR->RGB view): numpy copies once
            if cuda:
                t = t.to(self.device, non_blocking=True)
        return t.permute(0, 3, 1, 2)  # N×3×H×W view (channels-last memory, what the uint8 kernel likes)

    def _resize_crop(self, batch: torch.Tensor, h: int, w: int) -> torch.Tensor:
        rh, rw = resized_size(h, w, self.spec.shortest_edge)
        if (rh, rw) != (h, w):
            batch = _resize(batch, rh, rw)
        ch, cw = self.spec.crop_height, self.spec.crop_width
        if ch > rh or cw > rw:  # only when crop > shortest edge; pad like the processor
            pad = [(cw - rw) // 2 if cw > rw else 0, (ch - rh) // 2 if ch > rh else 0]
            pad += [(cw - rw + 1) // 2 if cw > rw else 0, (ch - rh + 1) // 2 if ch > rh else 0]
            batch = torch.nn.functional.pad(batch, (pad[0], pad[2], pad[1], pad[3]))
            rh, rw = batch.shape[-2:]
        top, left = int((rh - ch) / 2.0), int((rw - cw) / 2.0)
        return batch[..., top : top + ch, left : left + cw]


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
