"""av_scene_vlm: language-level scene understanding for autonomous vehicles.

`av_scene_vlm.core` is ROS-free (no rclpy import) so it runs and is tested anywhere;
`av_scene_vlm.ros` holds the thin rclpy node adapters; `av_scene_vlm.cli` the CLI.
"""

__version__ = "0.1.0"
