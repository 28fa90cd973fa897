"""core.preprocess: only the crop's source window is copied, and that changes no pixel of the crop.

The claim behind FramePlan.window: the antialiased bicubic resize reads, for every pixel of the crop,
only source pixels inside the window. Proven here by filling everything outside the window with
noise and requiring bit-identical crops, on the uint8 kernel a CPU runs and the float kernel CUDA runs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from av_scene_vlm.core.preprocess import (
    MAX_RESIZED_CROPS,
    Preprocessor,
    PreprocessSpec,
    _resize,
    resized_size,
)

SPECS = [PreprocessSpec(), PreprocessSpec(shortest_edge=256, crop_height=224, crop_width=224)]
CAMERA_SIZES = [(1080, 1920), (480, 640), (720, 1280), (1920, 1080), (1200, 1920), (224, 224), (225, 300)]


def _sizes(seed: int, n: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    out = [(int(h), int(w)) for h, w in rng.integers(1, 1500, (n, 2))]
    return out + CAMERA_SIZES + [(1, 1), (7, 300), (300, 7), (223, 224), (2000, 33)]


def _full_crop(frame: np.ndarray, spec: PreprocessSpec, float_kernel: bool) -> torch.Tensor:
    """The reference: resize the whole frame, then centre-crop (what the processor does)."""
    h, w = frame.shape[:2]
    rh, rw = resized_size(h, w, spec.shortest_edge)
    batch = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None]
    if float_kernel:  # torchvision's path on CUDA: float32 interpolate, clamp, round
        out = torch.nn.functional.interpolate(
            batch.float(), size=(rh, rw), mode="bicubic", align_corners=False, antialias=True
        )
        out = out.clamp_(0, 255).round_().to(torch.uint8)
    else:
        out = _resize(batch, rh, rw) if (rh, rw) != (h, w) else batch
    top, left = int((rh - spec.crop_height) / 2.0), int((rw - spec.crop_width) / 2.0)
    return out[..., top : top + spec.crop_height, left : left + spec.crop_width]


@pytest.mark.parametrize("float_kernel", [False, True], ids=["uint8-cpu-kernel", "float-cuda-kernel"])
@pytest.mark.parametrize("spec", SPECS, ids=["224", "256-224"])
def test_pixels_outside_the_window_never_reach_the_crop(spec, float_kernel) -> None:
    pre = Preprocessor(spec, torch.device("cpu"), torch.float32)
    rng = np.random.default_rng(3)
    checked = 0
    for h, w in _sizes(11, 12 if float_kernel else 25):
        plan = pre.plan(h, w)
        rh, rw = resized_size(h, w, spec.shortest_edge)
        if plan.bounded or spec.crop_height > rh or spec.crop_width > rw:
            continue
        frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        noisy = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        t, b, left, r = plan.window
        noisy[t:b, left:r] = frame[t:b, left:r]
        a = _full_crop(frame, spec, float_kernel)
        c = _full_crop(noisy, spec, float_kernel)
        assert torch.equal(a, c), f"{h}x{w}: a pixel outside window {plan.window} changed the crop"
        checked += 1
    assert checked >= 20


def test_window_is_much_smaller_than_a_wide_frame() -> None:
    pre = Preprocessor(PreprocessSpec(), torch.device("cpu"), torch.float32)
    plan = pre.plan(1080, 1920)
    wh, ww = plan.window_shape
    assert wh == 1080 and 1080 < ww < 1200  # 16:9: the crop needs ~57 % of the columns
    assert not plan.bounded


@pytest.mark.parametrize("shape", [(1080, 1920), (480, 640), (7, 300), (1, 1), (1920, 1080)])
def test_preprocessor_equals_whole_frame_reference(shape) -> None:
    """The engine's preprocessing (window, frame-sized buffer, resize, crop) = resize then crop."""
    spec = PreprocessSpec()
    pre = Preprocessor(spec, torch.device("cpu"), torch.float32)
    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for _ in range(3)]
    want = torch.cat([_full_crop(f, spec, float_kernel=False) for f in frames])
    want = (want.float() - pre._mean) / pre._std
    assert torch.equal(pre(frames), want)
    assert torch.equal(pre(frames[:1]), want[:1])


@pytest.mark.parametrize("shape", [(1, 100_000), (100_000, 1), (3, 60_000)])
def test_slivers_are_bounded(shape) -> None:
    """A 1 × 100,000 frame would be resized to 224 × 22,400,000 (15 GB); its plan resizes a few
    source pixels around the crop instead, and yields an ordinary crop."""
    spec = PreprocessSpec()
    pre = Preprocessor(spec, torch.device("cpu"), torch.float32)
    plan = pre.plan(*shape)
    assert plan.bounded
    rh, rw = plan.resized
    assert rh * rw <= MAX_RESIZED_CROPS * 224 * 224
    frame = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    pixels = pre([frame])
    assert pixels.shape == (1, 3, 224, 224) and torch.isfinite(pixels).all()


def test_moderate_aspect_ratios_stay_exact() -> None:
    """Frames up to ~64:1 (panoramas, the parity tests' 7 × 300) keep the exact plan."""
    pre = Preprocessor(PreprocessSpec(), torch.device("cpu"), torch.float32)
    assert not pre.plan(7, 300).bounded
    assert not pre.plan(300, 7).bounded
    assert not pre.plan(512, 8192).bounded
