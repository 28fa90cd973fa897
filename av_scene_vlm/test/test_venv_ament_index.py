"""The venv `make` sets up is an ament prefix: `ros2 pkg` finds av_scene_vlm there once it is activated.

scripts/venv_ament_index.sh registers the package (marker, share files, lib/<pkg> executables) and makes
`bin/activate` put the venv on AMENT_PREFIX_PATH, after a sourced ROS install and in place of another
venv activated before: a stale venv there ran the other venv's executables (another ROS distro's).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

VENV = Path(sys.prefix)
pytestmark = pytest.mark.skipif(
    not (VENV / ".stamps" / "package").is_file(), reason="not a venv set up by make (no .stamps/package)"
)


def activated(command: str, **env: str) -> str:
    """`command` run by /bin/sh (as make runs it) after sourcing the venv's activate script."""
    proc = subprocess.run(
        ["sh", "-c", f'. "{VENV}/bin/activate" && {command}'],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip()


def test_activate_puts_the_venv_last_and_replaces_another_venv() -> None:
    other = "/elsewhere/.venv-other"
    before = {"AMENT_PREFIX_PATH": f"/opt/ros/kilted:{other}", "AV_SCENE_VLM_AMENT_VENV": other}
    assert activated('echo "$AMENT_PREFIX_PATH"', **before) == f"/opt/ros/kilted:{VENV}"
    assert activated('. "$VIRTUAL_ENV/bin/activate" && echo "$AMENT_PREFIX_PATH"') == str(VENV)  # once


def test_ros2_pkg_finds_the_package_in_the_venv() -> None:
    pytest.importorskip(
        "ros2pkg", reason="the ros2 command is not installed (make installs ../shared/ros-launch)"
    )
    assert activated("ros2 pkg prefix av_scene_vlm") == str(VENV)
    executables = activated("ros2 pkg executables av_scene_vlm").splitlines()
    assert sorted(line.split()[1] for line in executables) == [
        "av-scene-vlm",
        "caption_node",
        "clip_node",
        "scene_vlm",
    ]
    share = VENV / "share" / "av_scene_vlm"
    for rel in ("package.xml", "launch/scene_vlm.launch.py", "config/scene_vlm.yaml", "rviz/scene_vlm.rviz"):
        assert (share / rel).is_file(), rel
