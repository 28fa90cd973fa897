"""scene_vlm.launch.py run by launch_testing: both nodes publish, arguments and params file take effect.

The launch file is included as users run it (`FindPackageShare`, `Node(package=...)` through the ament
index: `make` registers the venv, a colcon workspace registers install/), with a tiny random CLIP and a
tiny random Qwen2.5-VL. A params file of the test's own sets the tasks, the caption model and rate and
a model path that does not exist; the command line overrides that model and the camera topic. So a
classification with the file's tasks from the command line's model on the command line's camera
proves both took effect (the file's model would stop clip_node). Captions, classifications and
similarities must carry the source frame's header. At the end launch shuts down with SIGINT: every
node exits 0, prints no traceback and leaves the graph.
"""

from __future__ import annotations

import pytest

pytest.importorskip(
    "launch_testing", reason="launch_testing is not installed (make installs ../shared/ros-launch)"
)

import unittest
from pathlib import Path

import launch_testing
import launch_testing.actions
import launch_testing.asserts
from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription, SetLaunchConfiguration
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import PathJoinSubstitution
from launch_helpers import CameraProbe, has_source_header, remove_temp_dirs, temp_dir
from launch_ros.substitutions import FindPackageShare

from av_scene_vlm_msgs.msg import Caption, ClassificationArray, Similarity

CAMERA = "/launch_test/front/image_raw"
SCENE = "/launch_test/front/scene"
NODES = {"/clip_node", "/caption_node"}
TASKS = ["surface", "light"]


def _models_and_params() -> tuple[Path, Path, Path]:
    """Tiny models and the params file in a temporary directory (removed after the shutdown tests)."""
    from av_scene_vlm.random_weights import build_tiny_clip, build_tiny_qwen25vl

    tmp = temp_dir()
    clip = build_tiny_clip(tmp / "tiny-clip")
    qwen = build_tiny_qwen25vl(tmp / "tiny-qwen25vl")
    params = tmp / "vehicle.yaml"
    params.write_text(
        "/**:\n"
        "  ros__parameters:\n"
        "    image_topics: ['/params_file/camera/image_raw']\n"
        f"    model: {tmp / 'no-such-model'}\n"
        "    tasks: |\n"
        "      surface: [asphalt, gravel]\n"
        "      light: [day, night]\n"
        "    heatmap: false\n"
        f"    caption_model: {qwen}\n"
        "    caption_period: 0.5\n"
        "    caption_max_new_tokens: 4\n"
    )
    return clip, qwen, params


# On SIGINT launch escalates to SIGTERM after sigterm_timeout (5 s); a loaded CI machine may need
# longer to stop torch, and the exit codes must show the SIGINT path, not the escalation.
SIGTERM_AFTER = SetLaunchConfiguration("sigterm_timeout", "60")


@pytest.mark.launch_test
def generate_test_description():
    clip, qwen, params = _models_and_params()
    scene = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(
            PathJoinSubstitution([FindPackageShare("av_scene_vlm"), "launch", "scene_vlm.launch.py"])
        ),
        launch_arguments={
            "params_file": str(params),
            "model": str(clip),
            "image_topics": f"['{CAMERA}']",
        }.items(),
    )
    context = {"clip": str(clip), "qwen": str(qwen)}
    return LaunchDescription([SIGTERM_AFTER, scene, launch_testing.actions.ReadyToTest()]), context


class TestBothNodesPublish(unittest.TestCase):
    """Runs while the launched nodes are up."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.probe = CameraProbe()
        for msg_type, topic in (
            (ClassificationArray, f"{SCENE}/classification"),
            (Similarity, f"{SCENE}/similarity"),
            (Caption, f"{SCENE}/caption"),
        ):
            cls.probe.listen(msg_type, topic)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.probe.close()

    def test_results_with_the_source_header(self, proc_output, clip, qwen) -> None:
        probe = self.probe
        topics = [f"{SCENE}/classification", f"{SCENE}/similarity", f"{SCENE}/caption"]
        arrived = probe.feed(CAMERA, lambda: all(probe.messages(t) for t in topics))
        self.assertTrue(arrived, {t: len(probe.messages(t)) for t in topics})
        for topic in topics:
            for msg in probe.messages(topic):
                self.assertTrue(has_source_header(msg, probe), f"{topic}: header {msg.header} was not sent")
        result = probe.messages(f"{SCENE}/classification")[0]
        self.assertEqual([t.task for t in result.results], TASKS)  # the params file's tasks
        self.assertEqual({t.model_id for t in result.results}, {clip})  # the command line's model
        self.assertEqual(probe.messages(f"{SCENE}/similarity")[0].model_id, clip)
        caption = probe.messages(f"{SCENE}/caption")[0]
        self.assertEqual(caption.model_id, qwen)  # the params file's caption model
        self.assertGreater(caption.num_tokens, 0)

    def test_both_nodes_run(self) -> None:
        names = self.probe.wait_for_nodes(NODES)
        self.assertLessEqual(NODES, names)


@launch_testing.post_shutdown_test()
class TestCleanShutdown(unittest.TestCase):
    """Runs after launch stopped the nodes with SIGINT."""

    @classmethod
    def tearDownClass(cls) -> None:
        remove_temp_dirs()  # the models and params file of this launch

    def test_every_node_exits_0(self, proc_info) -> None:
        self.assertEqual(len(proc_info.process_names()), 2, proc_info.process_names())
        launch_testing.asserts.assertExitCodes(proc_info)

    def test_no_traceback(self, proc_output) -> None:
        for output in proc_output:
            self.assertNotIn("Traceback", output.text.decode(errors="replace"), output.process_name)

    def test_no_node_left(self) -> None:
        probe = CameraProbe("shutdown_probe")
        try:
            names = probe.wait_for_nodes(set(), absent=NODES)
        finally:
            probe.close()
        self.assertFalse(NODES & names, names)
