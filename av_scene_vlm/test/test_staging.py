"""core.staging: frame windows copied by the shared pool (ordinary memory off CUDA), uploads."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from av_scene_vlm.core import staging
from av_scene_vlm.core.staging import Uploader, copy_windows


def test_windows_of_strided_frames_are_copied_exactly(rng) -> None:
    big = rng.integers(0, 256, (700, 900, 3), dtype=np.uint8)
    frames = [big[..., ::-1][:600, :800], big[50:650, 100:900], big[::-1][:600, ::-1][:, :800]]
    assert not any(f.flags["C_CONTIGUOUS"] for f in frames)
    window = (10, 590, 33, 777)
    out = copy_windows(frames, window)
    assert out.shape == (3, 580, 744, 3) and out.dtype == torch.uint8
    assert not out.is_pinned()  # no CUDA: ordinary memory
    for k, frame in enumerate(frames):
        np.testing.assert_array_equal(out[k].numpy(), frame[10:590, 33:777])


def test_large_frames_are_split_across_the_pool(rng, monkeypatch) -> None:
    """A 1080p frame becomes several row bands, copied on more than one thread."""
    monkeypatch.setenv("AV_SCENE_VLM_COPY_THREADS", "2")
    frames = [rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8) for _ in range(2)]
    tasks = staging._bands(2, 1080, 1920 * 3)
    assert len(tasks) > 4 and {k for k, _, _ in tasks} == {0, 1}
    assert sum(r1 - r0 for _, r0, r1 in tasks) == 2 * 1080
    seen: set[str] = set()
    lock = threading.Lock()

    class Watched:  # records which threads read the frame
        def __init__(self, a: np.ndarray) -> None:
            self.a = a

        def __getitem__(self, key):
            with lock:
                seen.add(threading.current_thread().name)
            return self.a[key]

    out = copy_windows([Watched(f) for f in frames], (0, 1080, 0, 1920))  # type: ignore[list-item]
    np.testing.assert_array_equal(out.numpy(), np.stack(frames))
    assert any(name.startswith("frame-copy") for name in seen)


def test_copy_errors_reach_the_caller() -> None:
    frames = [np.zeros((10, 10, 3), np.uint8), np.zeros((4, 10, 3), np.uint8)]  # second too small
    with pytest.raises(ValueError):
        copy_windows(frames, (0, 10, 0, 10))


def test_one_thread_setting_copies_inline(monkeypatch, rng) -> None:
    monkeypatch.setenv("AV_SCENE_VLM_COPY_THREADS", "1")
    assert staging.copy_threads() == 1
    frame = rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
    np.testing.assert_array_equal(copy_windows([frame], (5, 45, 6, 54))[0].numpy(), frame[5:45, 6:54])


def test_uploader_off_cuda_returns_the_host_tensor() -> None:
    up = Uploader(torch.device("cpu"))
    host = torch.zeros(2, 3)
    dev, event = up.upload(host)
    assert dev is host and event is None
    up.wait(event)  # nothing to wait for


def test_window_into_frame_sized_buffer(rng) -> None:
    """On a CPU the window goes straight to its place in a frame-sized buffer (one copy, no second)."""
    frames = [rng.integers(0, 256, (90, 160, 3), dtype=np.uint8) for _ in range(2)]
    out = copy_windows(frames, (0, 90, 40, 120), frame_shape=(90, 160))
    assert out.shape == (2, 90, 160, 3)
    np.testing.assert_array_equal(out[:, :, 40:120].numpy(), np.stack(frames)[:, :, 40:120])
