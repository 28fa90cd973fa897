"""bag_replay.launch.py loaded by `launch` and walked as `ros2 launch` would, without starting anything.

rosbag2 is not installable here, so nothing is played: the launch file is included with arguments the
way `ros2 launch av_scene_vlm bag_replay.launch.py bag:=... rate:=...` includes it, its actions are
visited with a LaunchContext (arguments declared, configurations set, the included scene_vlm.launch.py
and the OpaqueFunctions evaluated), and processes and timers are inspected instead of executed. That
checks what `launch` makes of the file: the included launch file, sim time forced for its nodes, every
other argument passed through, and the `ros2 bag play` command line with `--clock`, rate, loop, delay.
"""

from __future__ import annotations

import pytest

pytest.importorskip("launch_ros", reason="launch is not installed (make installs ../shared/ros-launch)")

from dataclasses import dataclass, field

from launch import LaunchContext, LaunchDescription
from launch.actions import ExecuteProcess, IncludeLaunchDescription, TimerAction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.utilities import perform_substitutions
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


@dataclass
class Walk:
    """What visiting a launch description produced, in order."""

    includes: list[str] = field(default_factory=list)  # launch files included
    nodes: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # executable, configurations
    processes: list[tuple[float, list[str]]] = field(default_factory=list)  # (delay s, command line)
    env: dict[str, dict[str, str]] = field(default_factory=dict)  # executable -> its additional_env


def walk(arguments: dict[str, str]) -> Walk:
    """Include bag_replay.launch.py with `arguments` as `ros2 launch` does and visit every action."""
    share = FindPackageShare("av_scene_vlm").find("av_scene_vlm")
    root = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(f"{share}/launch/bag_replay.launch.py"),
        launch_arguments=arguments.items(),
    )
    context = LaunchContext()
    found = Walk()

    def env_of(entity: ExecuteProcess) -> dict[str, str]:
        pairs = entity.additional_env or []
        return {perform_substitutions(context, k): perform_substitutions(context, v) for k, v in pairs}

    def visit(entity, delay: float = 0.0) -> None:
        if isinstance(entity, Node):  # launch_ros Node: record what it would start, with the configuration
            found.nodes.append((entity.node_executable, dict(context.launch_configurations)))
            found.env[entity.node_executable] = env_of(entity)
            return
        if isinstance(entity, ExecuteProcess):  # never executed here
            cmd = [perform_substitutions(context, part) for part in entity.cmd]
            found.processes.append((delay, cmd))
            found.env[" ".join(cmd[:3])] = env_of(entity)
            return
        if isinstance(entity, TimerAction):
            period = entity.period
            seconds = float(
                period if isinstance(period, (int, float)) else perform_substitutions(context, period)
            )
            for action in entity.actions:
                visit(action, delay + seconds)
            return
        children = entity.visit(context) or []
        if isinstance(entity, IncludeLaunchDescription):  # its source's location is known once visited
            found.includes.append(entity.launch_description_source.location)
        for child in children:
            visit(child, delay)

    visit(LaunchDescription([root]))
    return found


def test_replay_includes_the_scene_launch_on_sim_time() -> None:
    found = walk({"bag": "/data/drive_0001", "use_sim_time": "false", "enable_caption": "false"})
    assert [inc.rsplit("/", 2)[-2:] for inc in found.includes] == [
        ["launch", "bag_replay.launch.py"],
        ["launch", "scene_vlm.launch.py"],
    ]
    # enable_caption:=false passed through: only clip_node; use_sim_time forced true despite the command line.
    assert [exe for exe, _ in found.nodes] == ["clip_node"]
    assert found.nodes[0][1]["use_sim_time"] == "true"


def test_play_command_line_with_clock_rate_loop_and_delay() -> None:
    found = walk({"bag": "/data/drive_0001", "rate": "0.5", "loop": "true", "delay": "5"})
    assert found.processes == [
        (5.0, ["ros2", "bag", "play", "/data/drive_0001", "--clock", "--rate", "0.5", "--loop"])
    ]
    assert sorted(exe for exe, _ in found.nodes) == ["caption_node", "clip_node"]
    assert all(config["use_sim_time"] == "true" for _, config in found.nodes)


def test_defaults_play_once_at_once_at_normal_speed() -> None:
    found = walk({"bag": "/data/drive_0001.mcap"})
    assert found.processes == [
        (0.0, ["ros2", "bag", "play", "/data/drive_0001.mcap", "--clock", "--rate", "1.0"])
    ]


def test_large_frames_profile_for_fast_dds_2_and_3() -> None:
    """large_frames:=true: the nodes and `ros2 bag play` (the sender of the raw frames) get the bundled
    profile in the variable the installed Fast DDS reads (FASTDDS_... on 3.x, FASTRTPS_... on 2.x; a
    deprecation warning in every process otherwise); by default none of them gets either."""
    from pathlib import Path

    from av_scene_vlm.core.dds_profile import fastdds_major, profile_variables

    expected = sorted(profile_variables(fastdds_major()))
    assert len(expected) == 1  # the wheels of this venv say which
    found = walk({"bag": "/data/b", "large_frames": "true"})
    assert sorted(found.env) == ["caption_node", "clip_node", "ros2 bag play"]
    for env in found.env.values():
        assert sorted(env) == expected
        profile = Path(env[expected[0]])
        assert profile.is_file() and profile.name == "fastdds_local_large_frames.xml"
    assert not any(walk({"bag": "/data/b"}).env.values())
    with pytest.raises(ValueError, match="large_frames"):
        walk({"bag": "/data/b", "large_frames": "maybe"})


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({}, "bag"),  # required
        ({"bag": "/data/b", "rate": "0"}, "rate"),
        ({"bag": "/data/b", "loop": "sometimes"}, "loop"),
    ],
)
def test_bad_arguments_fail_naming_the_argument(arguments: dict[str, str], error: str) -> None:
    with pytest.raises((RuntimeError, ValueError), match=error):
        walk(arguments)
