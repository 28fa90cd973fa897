"""Start the scene-understanding nodes: `clip_node`, optionally `caption_node`, optionally RViz.

    ros2 launch av_scene_vlm scene_vlm.launch.py
    ros2 launch av_scene_vlm scene_vlm.launch.py image_topics:="['/front/image_raw', '/rear/image_raw']"
    ros2 launch av_scene_vlm scene_vlm.launch.py enable_caption:=false model:=/opt/models/clip rviz:=true
    ros2 launch av_scene_vlm scene_vlm.launch.py autostart:=false   # unconfigured, for a supervisor

Both nodes are lifecycle nodes, started unconfigured (their `autostart` parameter false): with
`autostart:=true` (default) this launch file drives each to active with launch_ros lifecycle events
(configure now; activate once that node is inactive after configuring); with `autostart:=false` they
wait for `ros2 lifecycle set` or a lifecycle manager.

Every node loads `params_file` first; launch arguments left empty keep the file's values, so a vehicle's
params file stays the single source of truth and the command line only overrides what it names.
`use_sim_time` goes to every node (RViz too), so bag replay with `--clock` lines up everywhere.
`large_frames:=true` gives every process it starts the bundled Fast DDS profile for raw frames on
this computer, in the variable the installed Fast DDS reads (3.x FASTDDS_DEFAULT_PROFILES_FILE, 2.x
FASTRTPS_...; both where its version is unknown: `core.dds_profile`).
"""

from __future__ import annotations

import yaml
from av_scene_vlm.core.dds_profile import fastdds_major, profile_variables
from launch import LaunchContext, LaunchDescription
from launch.action import Action
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

PACKAGE = "av_scene_vlm"

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def _as_bool(name: str, text: str) -> bool:
    """Launch booleans as `ros2 launch` users write them; anything else is a clear error, not False."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"launch argument {name}:={text!r} is not a boolean (use true or false)")


def _as_topics(text: str) -> list[str]:
    """`image_topics` as a YAML list ("['/a/image_raw', '/b/image_raw']") or one bare topic name.

    Parsed here rather than by launch_ros so a single topic also works and a malformed value fails
    at launch with the argument's name instead of as a parameter type error inside the node.
    """
    if not text.strip():
        return []
    value = yaml.safe_load(text)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError(
            f"launch argument image_topics:={text!r} must be a topic or a YAML list of topics, "
            "e.g. \"['/camera/image_raw']\""
        )
    return value


def large_frames_env(context: LaunchContext) -> dict[str, str]:
    """The environment a process needs for the large-frame profile when `large_frames` is true."""
    if not _as_bool("large_frames", LaunchConfiguration("large_frames").perform(context)):
        return {}
    share = FindPackageShare(PACKAGE).perform(context)
    profile = PathJoinSubstitution([share, "config", "fastdds_local_large_frames.xml"]).perform(context)
    return dict.fromkeys(profile_variables(fastdds_major()), profile)


def _managed(node: LifecycleNode, autostart: bool) -> list[Action]:
    """The node, and with `autostart` the events that bring it to active: configure at once, activate
    when it reaches inactive from configuring (not after a later deactivate)."""
    if not autostart:
        return [node]

    def change(transition: int) -> EmitEvent:
        return EmitEvent(
            event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition)
        )

    activate = OnStateTransition(
        target_lifecycle_node=node,
        start_state="configuring",
        goal_state="inactive",
        entities=[change(Transition.TRANSITION_ACTIVATE)],
    )
    return [RegisterEventHandler(activate), node, change(Transition.TRANSITION_CONFIGURE)]


def _nodes(context: LaunchContext) -> list[Action]:
    """Build the nodes once the arguments are known (optional overrides need real values)."""
    params_file = LaunchConfiguration("params_file").perform(context)
    namespace = LaunchConfiguration("namespace").perform(context)
    use_sim_time = _as_bool("use_sim_time", LaunchConfiguration("use_sim_time").perform(context))
    enable_caption = _as_bool("enable_caption", LaunchConfiguration("enable_caption").perform(context))
    rviz = _as_bool("rviz", LaunchConfiguration("rviz").perform(context))
    autostart = _as_bool("autostart", LaunchConfiguration("autostart").perform(context))
    topics = _as_topics(LaunchConfiguration("image_topics").perform(context))
    model = LaunchConfiguration("model").perform(context).strip()
    caption_model = LaunchConfiguration("caption_model").perform(context).strip()
    env = large_frames_env(context)

    # Overrides come after params_file in `parameters`, so they win; empty arguments add nothing.
    # The nodes never start themselves here: this file (or a supervisor) drives their life cycle.
    common: dict[str, object] = {"use_sim_time": use_sim_time, "autostart": False}
    if topics:
        common["image_topics"] = topics
    clip_params: dict[str, object] = {**common}
    if model:
        # value_type=str: a path or hub id must never be YAML-typed (e.g. a model dir named "1.0").
        clip_params["model"] = ParameterValue(model, value_type=str)
    caption_params: dict[str, object] = {**common}
    if caption_model:
        caption_params["caption_model"] = ParameterValue(caption_model, value_type=str)

    clip = LifecycleNode(
        package=PACKAGE,
        executable="clip_node",
        name="clip_node",
        namespace=namespace,
        parameters=[params_file, clip_params],
        output="screen",
        emulate_tty=True,
        additional_env=env,
    )
    actions = _managed(clip, autostart)
    if enable_caption:
        caption = LifecycleNode(
            package=PACKAGE,
            executable="caption_node",
            name="caption_node",
            namespace=namespace,
            parameters=[params_file, caption_params],
            output="screen",
            emulate_tty=True,
            additional_env=env,
        )
        actions += _managed(caption, autostart)
    if rviz:
        actions.append(
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                arguments=["-d", LaunchConfiguration("rviz_config").perform(context)],
                parameters=[{"use_sim_time": use_sim_time}],
                output="screen",
                additional_env=env,
            )
        )
    return actions


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "image_topics",
                default_value="",
                description="Camera topics as a YAML list, e.g. \"['/front/image_raw', "
                "'/rear/image_raw/compressed']\" (or one topic); empty = params_file's image_topics.",
            ),
            DeclareLaunchArgument(
                "namespace",
                default_value="",
                description="Namespace of the nodes (absolute image topics and their results stay put).",
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value=PathJoinSubstitution([share, "config", "scene_vlm.yaml"]),
                description="Parameter file loaded by every node (vehicle defaults).",
            ),
            DeclareLaunchArgument(
                "use_sim_time",
                default_value="false",
                description="Follow /clock (set true for `ros2 bag play --clock`).",
            ),
            DeclareLaunchArgument(
                "enable_caption",
                default_value="true",
                description="Also start caption_node (Qwen2.5-VL captions at a low rate).",
            ),
            DeclareLaunchArgument(
                "autostart",
                default_value="true",
                description="Drive the lifecycle nodes to active (configure, then activate); false: "
                "they wait unconfigured for `ros2 lifecycle set` or a lifecycle manager.",
            ),
            DeclareLaunchArgument(
                "rviz", default_value="false", description="Start RViz with the camera and heatmap."
            ),
            DeclareLaunchArgument(
                "rviz_config",
                default_value=PathJoinSubstitution([share, "rviz", "scene_vlm.rviz"]),
                description="RViz config used when rviz:=true.",
            ),
            DeclareLaunchArgument(
                "model",
                default_value="",
                description="CLIP model (hub id or local dir) for clip_node; empty = params_file's model.",
            ),
            DeclareLaunchArgument(
                "caption_model",
                default_value="",
                description="Captioner model for caption_node; empty = params_file's caption_model.",
            ),
            DeclareLaunchArgument(
                "large_frames",
                default_value="false",
                description="Give every process started here the bundled Fast DDS profile for raw frames "
                "between processes on this computer (Fast DDS 2.x and 3.x).",
            ),
            OpaqueFunction(function=_nodes),
        ]
    )
