"""Shared fixtures: keep DDS on this machine and Hugging Face offline, build tiny models once, and
what many test modules need: image files, a tiny engine, a bag typestore, the CLI in a process."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

# Before anything imports rclpy: DDS stays on this host, on a domain of this run's own.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(50 + os.getpid() % 50))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Everything the tests and the processes they start write goes under one directory removed after
# the run: temporary files (pytest's tmp_path, launch_ros's launch_params_* files, Ray's session
# directory), the ROS log files (not ~/.ros/log, a directory per process) and the ONNX graph cache
# (not ~/.cache/av_scene_vlm). A short name: Ray's socket paths under it must stay below 108 bytes.
_RUN_DIR = tempfile.mkdtemp(prefix="avsv")
atexit.register(shutil.rmtree, _RUN_DIR, True)
os.environ["TMPDIR"] = tempfile.tempdir = _RUN_DIR
os.environ.setdefault("ROS_LOG_DIR", os.path.join(_RUN_DIR, "ros_log"))
os.environ.setdefault("AV_SCENE_VLM_ONNX_CACHE", os.path.join(_RUN_DIR, "onnx"))


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIP checkpoint saved with save_pretrained (loaded like any hub model)."""
    from av_scene_vlm.random_weights import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip")


@pytest.fixture(scope="session")
def tiny_clip_2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny CLIP with other weights (a different model for swap/mismatch tests)."""
    from av_scene_vlm.random_weights import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip-2", seed=1)


@pytest.fixture(scope="module")
def engine(tiny_clip):  # -> ZeroShotEngine
    """The tiny CLIP with two tasks (road_user, weather); a module that needs others defines its own."""
    from av_scene_vlm.core.engine import ZeroShotEngine
    from av_scene_vlm.core.tasks import parse_tasks

    tasks = parse_tasks({"road_user": ["car", "truck", "bus"], "weather": ["clear", "rain", "fog"]})
    return ZeroShotEngine(str(tiny_clip), tasks=tasks)


def write_images(directory: Path, frames: Sequence[np.ndarray]) -> list[str]:
    """RGB frames as PNG files (lossless) `frame<i>.png` in `directory`; their paths."""
    import cv2

    paths = []
    for i, rgb in enumerate(frames):
        path = directory / f"frame{i}.png"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        paths.append(str(path))
    return paths


@pytest.fixture
def image_files(tmp_path: Path, rng: np.random.Generator) -> list[str]:
    """Three noise images of different shapes (a wide, a 7 px narrow and a square one) as PNG files."""
    return write_images(
        tmp_path, [rng.integers(0, 256, s, dtype=np.uint8) for s in [(90, 160, 3), (300, 7, 3), (64, 64, 3)]]
    )


@pytest.fixture(scope="session")
def run_cli() -> Callable[..., subprocess.CompletedProcess]:
    """`run_cli(*args)`: `av-scene-vlm ARGS` in a process of its own, offline, output captured."""

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "av_scene_vlm.cli.main", *args],
            capture_output=True,
            text=True,
            env=dict(os.environ, HF_HUB_OFFLINE="1"),
            timeout=timeout,
        )

    return run


@pytest.fixture(scope="session")
def store():
    """The rosbags typestore of bags: the standard messages and ours."""
    from av_scene_vlm.core.bag import bag_typestore

    return bag_typestore()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2.5-VL checkpoint saved with save_pretrained (loaded like the hub model)."""
    from av_scene_vlm.random_weights import build_tiny_qwen25vl

    return build_tiny_qwen25vl(tmp_path_factory.mktemp("models") / "tiny-qwen25vl")


@pytest.fixture
def ros():
    """A private rclpy context with a background spinner: (context, Spinner) for node tests."""
    rclpy = pytest.importorskip("rclpy")
    from ros_helpers import Spinner

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    spinner = Spinner(ctx)
    yield ctx, spinner
    spinner.stop()  # also destroys the nodes it spun
    rclpy.shutdown(context=ctx)
