"""Replay a rosbag2 recording through the scene nodes on simulated time.

    ros2 launch av_scene_vlm bag_replay.launch.py bag:=/data/drive_0001 rate:=0.5 rviz:=true
    ros2 launch av_scene_vlm bag_replay.launch.py bag:=/data/drive_0001 enable_caption:=false delay:=5

Runs `ros2 bag play <bag> --clock` beside scene_vlm.launch.py with use_sim_time:=true, so node clocks
follow the bag's /clock; results carry the recorded image stamps either way. Every other
scene_vlm.launch.py argument (image_topics, params_file, model, rviz, ...) passes straight through;
`large_frames:=true` also gives `ros2 bag play`, the sender of the raw frames, the large-frame profile.

QoS: `ros2 bag play` republishes each topic with the QoS it was recorded with, which is usually
RELIABLE. clip_node subscribes BEST_EFFORT (input_reliability in config/scene_vlm.yaml), which matches
both reliable and best-effort publishers; a RELIABLE subscriber would see nothing from a best-effort
camera recording, the most common "no messages on replay" mistake.
"""

from __future__ import annotations

from av_scene_vlm.core.dds_profile import fastdds_major, profile_variables
from launch import LaunchContext, LaunchDescription
from launch.action import Action
from launch.actions import (
    DeclareLaunchArgument,
    ExecuteProcess,
    IncludeLaunchDescription,
    OpaqueFunction,
    TimerAction,
)
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

PACKAGE = "av_scene_vlm"


def _play(context: LaunchContext) -> list[Action]:
    """`ros2 bag play`, optionally looped and delayed until the models have loaded."""
    rate = float(LaunchConfiguration("rate").perform(context))
    delay = float(LaunchConfiguration("delay").perform(context))
    loop_text = LaunchConfiguration("loop").perform(context)
    if loop_text.strip().lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"launch argument loop:={loop_text!r} is not a boolean (use true or false)")
    loop = loop_text.strip().lower() in ("true", "1")
    if rate <= 0:
        raise ValueError(f"launch argument rate:={rate} must be > 0")
    cmd = ["ros2", "bag", "play", LaunchConfiguration("bag").perform(context), "--clock", "--rate", str(rate)]
    if loop:
        cmd.append("--loop")
    env = {}
    large = LaunchConfiguration("large_frames").perform(context).strip().lower()
    if large not in ("true", "false", "1", "0"):
        raise ValueError(f"launch argument large_frames:={large!r} is not a boolean (use true or false)")
    if large in ("true", "1"):
        share = FindPackageShare(PACKAGE).perform(context)
        profile = PathJoinSubstitution([share, "config", "fastdds_local_large_frames.xml"]).perform(context)
        env = dict.fromkeys(profile_variables(fastdds_major()), profile)
    play = ExecuteProcess(cmd=cmd, name="bag_play", output="screen", additional_env=env)
    # Frames played while a model still loads are dropped (newest-frame slots), so wait if asked.
    return [TimerAction(period=delay, actions=[play])] if delay > 0 else [play]


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    return LaunchDescription(
        [
            DeclareLaunchArgument("bag", description="rosbag2 folder (or .mcap / .db3 file) to play."),
            DeclareLaunchArgument("rate", default_value="1.0", description="Playback speed factor."),
            DeclareLaunchArgument("loop", default_value="false", description="Replay the bag forever."),
            DeclareLaunchArgument(
                "delay",
                default_value="0.0",
                description="Seconds to wait before playing, so the models have loaded.",
            ),
            DeclareLaunchArgument(
                "large_frames",
                default_value="false",
                description="The bundled Fast DDS profile for raw frames for the nodes and `ros2 bag play`.",
            ),
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", "scene_vlm.launch.py"])),
                # Forced, whatever the command line says: node clocks and timers must follow the bag's /clock.
                launch_arguments={"use_sim_time": "true"}.items(),
            ),
            OpaqueFunction(function=_play),
        ]
    )
