"""Honest dependency declarations (issue 11, point 4): every third-party module the package imports
is a declared requirement, and torchvision — needed by the captioner, which is on by default — is a
requirement rather than an extra (setup.py for pip, package.xml for rosdep). The minimum versions
themselves are checked by installing exactly them: scripts/check_dependency_floors.sh (README)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1]
# Import name -> distribution name.
DISTRIBUTIONS = {
    "cv2": "opencv-python-headless",
    "yaml": "pyyaml",
    "PIL": "pillow",
}
# Modules that come with ROS 2 (package.xml), not from setup.py.
ROS = {
    "rclpy",
    "rcl_interfaces",
    "action_msgs",
    "std_msgs",
    "sensor_msgs",
    "diagnostic_msgs",
    "builtin_interfaces",
    "av_scene_vlm_msgs",
    "launch",
    "launch_ros",
    "ament_index_python",
    "cv_bridge",
}


def _requirements(which: str) -> dict[str, str]:
    """`install_requires`, or every extra's requirements together ('extras'), by distribution name."""
    tree = ast.parse((PKG / "setup.py").read_text())
    reqs: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires" and which == "install_requires":
            reqs = [e.value for e in node.value.elts]
        if isinstance(node, ast.keyword) and node.arg == "extras_require" and which == "extras":
            reqs = [e.value for group in node.value.values for e in group.elts]
    return {re.split(r"[<>=!~ \[]", r, maxsplit=1)[0].lower().replace("_", "-"): r for r in reqs}


def _install_requires() -> dict[str, str]:
    return _requirements("install_requires")


def _imported_modules() -> set[str]:
    names: set[str] = set()
    for path in (PKG / "av_scene_vlm").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - ROS - {"av_scene_vlm", "__future__"}


def test_every_imported_third_party_module_is_declared_with_a_minimum() -> None:
    """Required, or (for optional features imported where they are used) in an extra."""
    declared = {**_requirements("extras"), **_install_requires()}
    for module in sorted(_imported_modules()):
        dist = DISTRIBUTIONS.get(module, module).lower().replace("_", "-")
        assert dist in declared, f"{module} is imported but {dist} is not declared in setup.py"
        assert ">=" in declared[dist], declared[dist]


def test_torchvision_is_required_because_captions_are_on_by_default() -> None:
    from av_scene_vlm.ros.scene_vlm import PARAMETERS

    assert PARAMETERS["enable_caption"][0] is True
    assert "torchvision" in _install_requires()
    xml = (PKG / "package.xml").read_text()
    assert '<exec_depend condition="$AV_SCENE_VLM_TORCH != apt">python3-torchvision-pip</exec_depend>' in xml
    assert '<exec_depend condition="$AV_SCENE_VLM_TORCH == apt">python3-torchvision</exec_depend>' in xml


def test_workspace_requirements_pin_what_ci_runs() -> None:
    """requirements/ros-workspace.txt (the README's install block) pins exactly the versions of
    constraints.txt, so `make lock` cannot leave the vehicle route on other versions than CI's; and it
    holds the package of every pip key in package.xml (rosdep must find them all installed)."""

    def pins(path: Path) -> dict[str, str]:
        found = re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", path.read_text(), re.M)
        return {name.lower().replace("_", "-"): version for name, version in found}

    workspace = pins(PKG.parent / "requirements" / "ros-workspace.txt")
    constraints = pins(PKG.parent / "requirements" / "constraints.txt")
    assert workspace and {n: constraints.get(n) for n in workspace} == workspace
    assert {"torch", "torchvision"} <= set(workspace)  # the pinned pair
    keys = re.findall(r">python3-([a-z0-9\-]+)-pip<", (PKG / "package.xml").read_text())
    assert keys and all(key in workspace for key in keys), (keys, sorted(workspace))
