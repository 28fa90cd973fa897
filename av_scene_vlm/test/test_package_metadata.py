"""Package metadata agrees with itself: entry points import, versions match, data files exist."""

from __future__ import annotations

import ast
import importlib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

PKG_DIR = Path(__file__).resolve().parents[1]
REPO = PKG_DIR.parent


def _setup_kwargs() -> dict:
    """Evaluate setup.py's constants and setup() keywords without running setuptools."""
    tree = ast.parse((PKG_DIR / "setup.py").read_text())
    env: dict = {"__builtins__": {}}

    def value(node: ast.AST) -> object:
        return eval(compile(ast.Expression(node), "setup.py", "eval"), env)  # our own file

    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            env[node.targets[0].id] = value(node.value)
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    kwargs = {}
    for kw in call.keywords:
        try:
            kwargs[kw.arg] = value(kw.value)
        except (NameError, TypeError):  # calls such as find_packages() are not needed here
            continue
    return kwargs


def test_setup_and_package_xml_agree() -> None:
    root = ET.parse(PKG_DIR / "package.xml").getroot()
    kwargs = _setup_kwargs()
    assert kwargs["name"] == root.findtext("name") == "av_scene_vlm"
    assert kwargs["version"] == root.findtext("version")
    assert root.find("export/build_type").text == "ament_python"
    import av_scene_vlm

    assert av_scene_vlm.__version__ == kwargs["version"]
    msgs_root = ET.parse(REPO / "av_scene_vlm_msgs" / "package.xml").getroot()
    assert msgs_root.find("export/build_type").text == "ament_cmake"
    assert "av_scene_vlm_msgs" in {d.text for d in root.iter("exec_depend")}


def test_resource_marker_exists() -> None:
    assert (PKG_DIR / "resource" / "av_scene_vlm").is_file()


def test_every_data_file_exists() -> None:
    data_files = _setup_kwargs()["data_files"]
    assert data_files, "setup.py installs no data files"
    for _dest, files in data_files:
        for f in files:
            assert (PKG_DIR / f).is_file(), f"setup.py references missing file {f}"


def test_every_launch_and_config_file_is_installed() -> None:
    installed = {f for _dest, files in _setup_kwargs()["data_files"] for f in files}
    for folder in ("launch", "config", "rviz"):
        for f in (PKG_DIR / folder).glob("*"):
            if f.is_file():
                assert f"{folder}/{f.name}" in installed, f"{folder}/{f.name} is not installed by setup.py"


@pytest.mark.parametrize("spec", _setup_kwargs()["entry_points"]["console_scripts"])
def test_console_script_imports(spec: str) -> None:
    name, target = (s.strip() for s in spec.split("="))
    module, func = target.split(":")
    obj = getattr(importlib.import_module(module), func)
    assert callable(obj), f"{name} -> {target} is not callable"


def test_core_imports_no_rclpy() -> None:
    """The ROS-free core and CLI must import without rclpy (they run where ROS is absent)."""
    import subprocess
    import sys

    code = (
        "import sys, importlib, pkgutil\n"
        "import av_scene_vlm.core as core, av_scene_vlm.cli as cli\n"
        "for pkg in (core, cli):\n"
        "    for m in pkgutil.iter_modules(pkg.__path__):\n"
        "        importlib.import_module(pkg.__name__ + '.' + m.name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('rclpy', 'av_scene_vlm_msgs')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PKG_DIR)


def test_node_and_cli_entry_modules_import_no_torch() -> None:
    """Nodes and CLIs reject a missing model before torch/transformers load (about a second, not
    several), which holds only while their modules import neither at module level."""
    import subprocess
    import sys

    pytest.importorskip("rclpy")
    code = (
        "import sys\n"
        "import av_scene_vlm.ros.clip_node, av_scene_vlm.ros.caption_node, av_scene_vlm.ros.scene_vlm\n"
        "import av_scene_vlm.cli.main\n"
        "heavy = [m for m in ('torch', 'transformers', 'torchvision') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PKG_DIR)
    assert proc.returncode == 0, proc.stderr
