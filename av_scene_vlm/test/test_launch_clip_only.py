"""scene_vlm.launch.py with `enable_caption:=false autostart:=false`, run by launch_testing: only
clip_node starts, and it waits unconfigured.

The launch file from the ament index with a tiny random CLIP given on the command line (`model:=`);
the package's own params file otherwise (vehicle tasks). clip_node must come up unconfigured and not
subscribe to its camera; configured and activated through its lifecycle services (as `ros2 lifecycle
set` or a lifecycle manager would) it must answer frames. caption_node must be neither launched nor in
the graph, and SIGINT at the end must stop clip_node with exit 0. (`autostart:=true`, the default, is
run by test_launch_scene_vlm.py.)
"""

from __future__ import annotations

import pytest

pytest.importorskip(
    "launch_testing", reason="launch_testing is not installed (make installs ../shared/ros-launch)"
)

import unittest

import launch_testing
import launch_testing.actions
import launch_testing.asserts
from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription, SetLaunchConfiguration
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import PathJoinSubstitution
from launch_helpers import STARTUP_S, CameraProbe, has_source_header, remove_temp_dirs, temp_dir
from launch_ros.substitutions import FindPackageShare
from ros_helpers import Lifecycle

from av_scene_vlm_msgs.msg import ClassificationArray

CAMERA = "/clip_only/image_raw"
RESULTS = "/clip_only/scene/classification"

# On SIGINT launch escalates to SIGTERM after sigterm_timeout (5 s); a loaded CI machine may need
# longer to stop torch, and the exit codes must show the SIGINT path, not the escalation.
SIGTERM_AFTER = SetLaunchConfiguration("sigterm_timeout", "60")


@pytest.mark.launch_test
def generate_test_description():
    from av_scene_vlm.random_weights import build_tiny_clip

    tmp = temp_dir()
    scene = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(
            PathJoinSubstitution([FindPackageShare("av_scene_vlm"), "launch", "scene_vlm.launch.py"])
        ),
        launch_arguments={
            "enable_caption": "false",
            "model": str(build_tiny_clip(tmp / "tiny-clip")),
            "image_topics": CAMERA,  # one bare topic is accepted too
            "autostart": "false",
        }.items(),
    )
    return LaunchDescription([SIGTERM_AFTER, scene, launch_testing.actions.ReadyToTest()])


class TestOnlyTheClassifier(unittest.TestCase):
    def test_clip_node_waits_then_answers_and_caption_node_is_absent(self, proc_info) -> None:
        probe = CameraProbe("clip_only_probe")
        try:
            life = Lifecycle(probe.node, "/clip_node")
            self.assertEqual(life.state(timeout=STARTUP_S), "unconfigured")  # autostart:=false: it waits
            self.assertEqual(probe.node.count_subscribers(CAMERA), 0)  # no camera subscription yet
            self.assertTrue(life.set("configure") and life.set("activate"))
            probe.listen(ClassificationArray, RESULTS)
            self.assertTrue(
                probe.feed(CAMERA, lambda: bool(probe.messages(RESULTS))), f"nothing on {RESULTS}"
            )
            result = probe.messages(RESULTS)[0]
            self.assertTrue(has_source_header(result, probe))
            self.assertIn("road_user", [t.task for t in result.results])  # the package's params file
            names = probe.wait_for_nodes({"/clip_node"}, absent={"/caption_node"})
        finally:
            probe.close()
        self.assertIn("/clip_node", names)
        self.assertNotIn("/caption_node", names)
        self.assertEqual([name.rsplit("-", 1)[0] for name in proc_info.process_names()], ["clip_node"])


@launch_testing.post_shutdown_test()
class TestCleanShutdown(unittest.TestCase):
    @classmethod
    def tearDownClass(cls) -> None:
        remove_temp_dirs()  # the models and params file of this launch

    def test_clip_node_exits_0_without_traceback(self, proc_info, proc_output) -> None:
        launch_testing.asserts.assertExitCodes(proc_info)
        for output in proc_output:
            self.assertNotIn("Traceback", output.text.decode(errors="replace"), output.process_name)
