"""The bundled Fast DDS profile for raw frames between processes, applied on Fast DDS 2.x and 3.x alike.

Why: Fast DDS 2.x (Humble 2.6, Jazzy 2.14) reads its default profile from
``FASTRTPS_DEFAULT_PROFILES_FILE``, Fast DDS 3.x (Kilted) from ``FASTDDS_DEFAULT_PROFILES_FILE``
(eProsima's 3.0 migration notes); setting only one silently does nothing on the other major version —
``make demo`` on Jazzy then received 24 and 39 of 60 raw frames instead of 60. ROS-free: it only sets
environment variables, which must happen before rclpy (and so Fast DDS) loads.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

__all__ = ["LARGE_FRAMES_PROFILE", "PROFILE_VARIABLES", "large_frames_profile", "use_large_frames_profile"]

PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")  # 3.x, 2.x
LARGE_FRAMES_PROFILE = "fastdds_local_large_frames.xml"


def large_frames_profile() -> Path:
    """config/fastdds_local_large_frames.xml: the source tree's, else the installed share directory's."""
    here = Path(__file__).resolve().parents[2] / "config" / LARGE_FRAMES_PROFILE
    if here.is_file():
        return here
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("av_scene_vlm")) / "config" / LARGE_FRAMES_PROFILE
    except Exception:  # no ament index (plain pip install): the source tree's path, for the message
        return here


def use_large_frames_profile(environ: MutableMapping[str, str] | None = None) -> str:
    """Point both Fast DDS variables at one profile, unless one is chosen already: a value in either
    variable is then copied to the other, so the user's choice applies on both major versions.
    Call before rclpy is imported. Returns the profile in effect."""
    env = os.environ if environ is None else environ
    chosen = next((env[v] for v in PROFILE_VARIABLES if env.get(v)), None) or str(large_frames_profile())
    for variable in PROFILE_VARIABLES:
        if not env.get(variable):
            env[variable] = chosen
    return chosen
