"""The bundled Fast DDS profile for raw frames between processes, applied on Fast DDS 2.x and 3.x alike.

Why: Fast DDS 2.x (Humble 2.6, Jazzy 2.14) reads its default profile from
``FASTRTPS_DEFAULT_PROFILES_FILE``, Fast DDS 3.x (Kilted) from ``FASTDDS_DEFAULT_PROFILES_FILE``
(eProsima's 3.0 migration notes); setting only one silently does nothing on the other major version —
``make demo`` on Jazzy then received 24 and 39 of 60 raw frames instead of 60 — and setting the 2.x one
on 3.x makes every participant log that it is deprecated. So where the installed major version is known
(`fastdds_major`: the Python distribution of the ROS wheels, else the ament prefixes' share directory,
else ROS_DISTRO) only its variable is set; both where it is not. ROS-free: it only reads metadata and
sets environment variables, which must happen before rclpy (and so Fast DDS) loads.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from importlib import metadata
from pathlib import Path

__all__ = [
    "LARGE_FRAMES_PROFILE",
    "PROFILE_VARIABLES",
    "fastdds_major",
    "large_frames_profile",
    "profile_variables",
    "use_large_frames_profile",
]

PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")  # 3.x, 2.x
LARGE_FRAMES_PROFILE = "fastdds_local_large_frames.xml"
# Fast DDS 3.x is packaged as `fastdds`, 2.x as `fastrtps` (ROS wheels `ros-<name>`, ament share dirs).
_PACKAGES = (("fastdds", 3), ("fastrtps", 2))
_DISTROS = {"humble": 2, "iron": 2, "jazzy": 2, "kilted": 3}
AUTO = "auto"


def _major_of(version: str, fallback: int) -> int:
    match = re.match(r"\s*(\d+)\.", version)
    return int(match.group(1)) if match else fallback


def fastdds_major(
    environ: Mapping[str, str] | None = None, prefixes: Iterable[str | Path] | None = None
) -> int | None:
    """The installed Fast DDS's major version (2 or 3) without loading it; None when unknown."""
    env = os.environ if environ is None else environ
    for name, major in _PACKAGES:  # the ROS wheels of this Python (the venv)
        try:
            return _major_of(metadata.version(f"ros-{name}"), major)
        except metadata.PackageNotFoundError:
            pass
    if prefixes is None:
        prefixes = [sys.prefix, *env.get("AMENT_PREFIX_PATH", "").split(os.pathsep)]
    for prefix in (p for p in prefixes if p):
        for name, major in _PACKAGES:  # a ROS install or colcon workspace
            share = Path(prefix) / "share" / name
            if share.is_dir():
                xml = share / "package.xml"
                found = re.search(r"<version>([^<]+)</version>", xml.read_text()) if xml.is_file() else None
                return _major_of(found.group(1), major) if found else major
    return _DISTROS.get(env.get("ROS_DISTRO", "").strip().lower())


def profile_variables(major: int | None) -> tuple[str, ...]:
    """The variables that name the default profile for Fast DDS `major` (both when unknown)."""
    return {3: PROFILE_VARIABLES[:1], 2: PROFILE_VARIABLES[1:]}.get(major, PROFILE_VARIABLES)


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


def use_large_frames_profile(
    environ: MutableMapping[str, str] | None = None, major: int | str | None = AUTO
) -> str:
    """Point the installed Fast DDS's variable (`major`: 2, 3, None = unknown: both; default: detected)
    at the bundled profile, unless a profile is chosen already: a value in either variable is then
    copied to the one the installed version reads, so the user's choice applies on it.
    Call before rclpy is imported. Returns the profile in effect."""
    env = os.environ if environ is None else environ
    if major == AUTO:
        major = fastdds_major(env)
    chosen = next((env[v] for v in PROFILE_VARIABLES if env.get(v)), None) or str(large_frames_profile())
    for variable in profile_variables(major):  # type: ignore[arg-type]
        if not env.get(variable):
            env[variable] = chosen
    return chosen
