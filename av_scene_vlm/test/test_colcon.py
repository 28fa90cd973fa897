"""The ROS 2 workspace route: `colcon build` finds and builds both packages (README's colcon section)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_colcon_build_builds_both_packages(tmp_path) -> None:
    colcon = shutil.which("colcon")
    if colcon is None:
        pytest.skip("colcon is not installed")
    prefix = Path(sys.prefix)
    if not (prefix / "share" / "rosidl_default_generators").is_dir():
        pytest.skip("no ROS prefix with rosidl generators in this environment")
    src = tmp_path / "ws" / "src" / "av_scene_vlm"
    for pkg in ("av_scene_vlm", "av_scene_vlm_msgs"):
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    env = dict(os.environ, AMENT_PREFIX_PATH=str(prefix))
    proc = subprocess.run(
        [colcon, "build", "--event-handlers", "console_cohesion-"],
        cwd=tmp_path / "ws",
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    install = tmp_path / "ws" / "install"
    for exe in ("clip_node", "caption_node", "scene_vlm", "av-scene-vlm"):
        assert (install / "av_scene_vlm" / "lib" / "av_scene_vlm" / exe).is_file(), exe
    share = install / "av_scene_vlm" / "share" / "av_scene_vlm"
    for f in (
        "launch/scene_vlm.launch.py",
        "launch/bag_replay.launch.py",
        "config/scene_vlm.yaml",
        "rviz/scene_vlm.rviz",
    ):
        assert (share / f).is_file(), f
    msgs_share = install / "av_scene_vlm_msgs" / "share" / "av_scene_vlm_msgs" / "msg"
    assert (msgs_share / "ClassificationArray.msg").is_file()
    assert list((install / "av_scene_vlm_msgs").rglob("_classification_array.py")), (
        "no generated Python module"
    )
