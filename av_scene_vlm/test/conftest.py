"""Shared fixtures: keep DDS on this machine and Hugging Face offline, build tiny models once."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
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
