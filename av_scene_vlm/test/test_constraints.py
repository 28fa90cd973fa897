"""scripts/constraints.py: Jazzy's pins laid over Kilted's, and `make lock` pins only what pip can fetch.

`pip freeze` of a venv with the launch kit lists its wheels as `name @ file://...` and the CMake-built
composition_interfaces; neither may end up in a constraints file (a clean machine could not install them).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("constraints", REPO / "scripts" / "constraints.py")
constraints = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(constraints)

FREEZE = [
    "composition_interfaces==2.2.0",
    "launch @ file:///work/shared/ros-launch/wheels/launch-3.7.1-py3-none-any.whl",
    "ros2cli @ file:///work/shared/ros-launch/wheels/ros2cli-0.36.1-py3-none-any.whl",
    "av_scene_vlm_msgs==0.1.0",
    "numpy==2.4.6",
    "ros-rclpy==7.1.6",
    "PyYAML==6.0.4",
]


def test_lock_leaves_out_what_pip_cannot_fetch() -> None:
    path, lines = constraints.lock(FREEZE, "jazzy")
    pins = [line for line in lines if not line.startswith("#")]
    assert path.name == "constraints-jazzy.txt"
    assert "ros-rclpy==7.1.6" in pins  # differs from Kilted's
    assert "numpy==2.4.6" not in pins and "PyYAML==6.0.4" not in pins  # same as constraints.txt
    assert not [p for p in pins if " @ " in p or p.startswith(("composition_interfaces", "av_scene_vlm"))]


def test_merge_replaces_a_distribution_whatever_its_spelling() -> None:
    base = ["# header", "ros-rclpy==9.1.2", "rosidl_parser==4.9.5", "numpy==2.4.6"]
    merged = constraints.merge(base, ["# jazzy", "ros-rclpy==7.1.6", "rosidl-parser==4.6.6"])
    assert merged == ["# header", "numpy==2.4.6", "ros-rclpy==7.1.6", "rosidl-parser==4.6.6"]


def test_committed_constraints_are_installable_by_name() -> None:
    for path in sorted((REPO / "requirements").glob("constraints*.txt")):
        for line in path.read_text().splitlines():
            assert " @ " not in line and not line.startswith("composition_interfaces"), f"{path.name}: {line}"
            assert line.startswith("#") or "==" in line, f"{path.name}: not an exact pin: {line}"
