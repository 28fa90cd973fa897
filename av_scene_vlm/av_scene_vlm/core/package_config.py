"""Where the package's own vehicle defaults live: `config/scene_vlm.yaml`.

Why one function: a bare `ros2 run av_scene_vlm clip_node` and the CLIs' `--config` default must read
the same file, from a source checkout or from an install (`share/av_scene_vlm/config`, found through
the ament index as `ros2 pkg prefix` finds it). ROS-free: no rclpy; ament_index_python is optional.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["default_config"]

CONFIG = Path("config") / "scene_vlm.yaml"


def default_config() -> Path | None:
    """The package's config/scene_vlm.yaml: the installed share directory, else the source tree
    (a checkout used without an install), else None (a plain pip install without an ament index)."""
    try:
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory("av_scene_vlm")) / CONFIG
        if share.is_file():
            return share
    except Exception:  # no ament index, or the package is not in it
        pass
    here = Path(__file__).resolve().parents[2] / CONFIG
    return here if here.is_file() else None
