#!/usr/bin/env python3
"""Print which ROS 2 this Python runs and where its launch system comes from (make test's first line).

Why: the suite proves the package against whatever ROS 2 the venv holds (PyPI wheels of Kilted or
Jazzy, or a sourced ROS install), and the launch tests need `launch`, from a ROS install or from
the ../shared/ros-launch kit; the log should say which was used.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import sys
from pathlib import Path


def version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "?"


def launch_source() -> str:
    spec = importlib.util.find_spec("launch_ros")
    if spec is None or spec.origin is None:
        return "not installed (no ROS install and no ../shared/ros-launch): launch tests are skipped"
    where = Path(spec.origin).resolve()
    prefix = Path(sys.prefix).resolve()
    if prefix in where.parents:
        if (prefix / ".stamps" / "ros-launch-kit").is_file():
            return f"the ros-launch kit, installed in {prefix}"
        return f"installed in {prefix}"
    return f"a ROS install ({where.parent})"


def main() -> int:
    if importlib.util.find_spec("rclpy") is None:
        print("ROS 2: rclpy is not importable", file=sys.stderr)
        return 1
    distro = os.environ.get("ROS_DISTRO", "?")
    rclpy = version("ros-rclpy") if version("ros-rclpy") != "?" else version("rclpy")  # PyPI wheel, or apt
    print(
        f"ROS 2 {distro}: rclpy {rclpy}, Python {sys.version.split()[0]} ({sys.prefix}); "
        f"launch {version('launch')}: {launch_source()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
