"""The ROS 2 workspace route of the README: `colcon build`, source install/setup.bash, `ros2 launch`.

One workspace per test session (module fixture) in a temporary directory: both packages copied into
src/, built with colcon against this environment's ROS 2 (the venv's wheels, or a ROS install), then
used the way the README says, through the `ros2` command with install/setup.bash sourced:
`ros2 pkg prefix` finds the workspace's package, `ros2 launch ... --show-args` lists exactly the
arguments of the README's tables, and a real `ros2 launch` of the installed package publishes
results and stops cleanly on Ctrl-C (SIGINT to its process group).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CAMERA = "/colcon_test/image_raw"
EXECUTABLES = ("clip_node", "caption_node", "scene_vlm", "av-scene-vlm")


@pytest.fixture(scope="module")
def workspace():
    """A colcon workspace with both packages built (install/ ready to source)."""
    from launch_helpers import ament_env, tool

    prefix = Path(sys.prefix)
    if not (prefix / "share" / "rosidl_default_generators").is_dir() and not os.environ.get("ROS_DISTRO"):
        pytest.skip("no ROS 2 here: neither a venv with the ROS wheels nor a sourced ROS install")
    with tempfile.TemporaryDirectory(prefix="av_scene_vlm_ws_") as tmp:
        ws = Path(tmp)
        for pkg in ("av_scene_vlm", "av_scene_vlm_msgs"):
            shutil.copytree(
                REPO / pkg,
                ws / "src" / "av_scene_vlm" / pkg,
                ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "install", "log"),
            )
        proc = subprocess.run(
            [tool("colcon"), "build", "--event-handlers", "console_cohesion-"],
            cwd=ws,
            env=ament_env(),
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        yield ws


def needs_ros2() -> None:
    """The `ros2` command: a ROS install's, or the kit's that make installs from ../shared/ros-launch."""
    pytest.importorskip(
        "ros2launch", reason="the ros2 command is not installed (make installs ../shared/ros-launch)"
    )


def sourced(ws: Path, command: str) -> list[str]:
    """bash running `command` with the workspace sourced (the venv stays on AMENT_PREFIX_PATH)."""
    return ["bash", "-c", f"source {shlex.quote(str(ws / 'install' / 'setup.bash'))} && exec {command}"]


def run_sourced(ws: Path, command: str, timeout: float = 120.0) -> str:
    from launch_helpers import ament_env

    proc = subprocess.run(
        sourced(ws, command), env=ament_env(), capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"`{command}` exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.slow
def test_colcon_build_installs_both_packages(workspace: Path) -> None:
    install = workspace / "install"
    for exe in EXECUTABLES:
        assert (install / "av_scene_vlm" / "lib" / "av_scene_vlm" / exe).is_file(), exe
    share = install / "av_scene_vlm" / "share" / "av_scene_vlm"
    for f in (
        "launch/scene_vlm.launch.py",
        "launch/bag_replay.launch.py",
        "config/scene_vlm.yaml",
        "config/scene_events.yaml",
        "rviz/scene_vlm.rviz",
    ):
        assert (share / f).is_file(), f
    assert (
        install / "av_scene_vlm_msgs" / "share" / "av_scene_vlm_msgs" / "msg" / "ClassificationArray.msg"
    ).is_file()
    assert list((install / "av_scene_vlm_msgs").rglob("_classification_array.py")), (
        "no generated Python module"
    )


@pytest.mark.slow
def test_sourced_workspace_provides_the_package(workspace: Path) -> None:
    needs_ros2()
    prefix = run_sourced(workspace, "ros2 pkg prefix av_scene_vlm").strip()
    assert Path(prefix) == workspace / "install" / "av_scene_vlm"
    listed = run_sourced(workspace, "ros2 pkg executables av_scene_vlm").split("\n")
    assert sorted(line.split()[1] for line in listed if line.strip()) == sorted(EXECUTABLES)


def show_args(text: str) -> dict[str, str | None]:
    """`ros2 launch ... --show-args` output -> {argument: default (None when required)}.

    Defaults built from FindPackageShare print as PathJoin('FindPackageShare(pkg='p') + 'a' + 'b''):
    they become 'share/p/a/b', as the README writes them.
    """
    args: dict[str, str | None] = {}
    for block in text.split("\n\n"):
        name = re.search(r"^\s*'([^']+)':", block, re.M)
        if not name:
            continue
        default = re.search(r"\(default: (.*)\)\s*$", block.strip())
        value = default.group(1) if default else None
        if value and value.startswith("PathJoin("):
            value = "share/" + "/".join(re.findall(r"'([^'()]+)'", value))
        elif value:
            value = value.strip("'")
        args[name.group(1)] = value
    return args


def readme_table(after: str) -> dict[str, str | None]:
    """The `| argument | default | meaning |` table following the text `after` in README.md."""
    text = (REPO / "README.md").read_text()
    rows = text[text.index(after) :].split("| argument | default | meaning |", 1)[1].split("\n\n", 1)[0]
    table: dict[str, str | None] = {}
    for row in rows.splitlines()[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        value = re.match(r"`([^`]*)`", cells[1])
        table[cells[0].strip("`")] = (
            (value.group(1).replace('""', "") if value else None) if cells[1] else None
        )
    return table


@pytest.mark.slow
def test_show_args_are_the_readme_tables(workspace: Path) -> None:
    needs_ros2()
    scene = readme_table("**`scene_vlm.launch.py`**")
    replay = readme_table("**`bag_replay.launch.py`**")
    assert scene and replay
    shown = show_args(run_sourced(workspace, "ros2 launch av_scene_vlm scene_vlm.launch.py --show-args"))
    assert shown == scene
    shown = show_args(run_sourced(workspace, "ros2 launch av_scene_vlm bag_replay.launch.py --show-args"))
    assert shown == {**replay, **scene}  # bag_replay passes every scene_vlm argument through


@pytest.mark.slow
def test_ros2_launch_publishes_and_stops_on_ctrl_c(workspace: Path, tiny_clip: Path) -> None:
    needs_ros2()
    from launch_helpers import (
        CameraProbe,
        ament_env,
        group_alive,
        has_source_header,
        interrupt_group,
        start_group,
    )

    from av_scene_vlm_msgs.msg import ClassificationArray

    command = (
        f"ros2 launch av_scene_vlm scene_vlm.launch.py enable_caption:=false model:={tiny_clip} "
        f"image_topics:=\"['{CAMERA}']\" sigterm_timeout:=60"  # launch's SIGTERM escalation: not before 60 s
    )
    launch = start_group(sourced(workspace, command), env=ament_env())
    probe = CameraProbe("colcon_probe")
    results = "/colcon_test/scene/classification"
    try:
        probe.listen(ClassificationArray, results)
        assert probe.feed(CAMERA, lambda: bool(probe.messages(results))), f"no result on {results}"
        assert has_source_header(probe.messages(results)[0], probe)
    finally:
        probe.close()
        code, output = interrupt_group(launch)
    assert code == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert re.search(r"\[clip_node-\d+\]: process has finished cleanly", output), output[-3000:]
    assert not group_alive(launch.pid), "processes of the launch are left running"
