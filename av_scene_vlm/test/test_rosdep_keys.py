"""Every dependency key of both package.xml files resolves with rosdep on each ROS 2 distro we support.

`rosdep install --from-paths src` stops at the first key it cannot resolve, so a wrong key breaks a
user's first command. This runs rosdep itself (`rosdep update` + `rosdep resolve`) against the
rosdistro snapshot in ../shared/rosdistro (a sources list and a distribution index pointing at its
files, ROS_HOME in a temporary directory), for the platform each distro targets.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from catkin_pkg.package import parse_package
from install_route import rosdep_sources

REPO = Path(__file__).resolve().parents[2]
SNAPSHOT = REPO.parent / "shared" / "rosdistro"
PACKAGES = ("av_scene_vlm", "av_scene_vlm_msgs")  # built from this repository, not resolved by rosdep
PLATFORMS = {
    "humble": "ubuntu:jammy",
    "jazzy": "ubuntu:noble",
    "kilted": "ubuntu:noble",
    "lyrical": "ubuntu:resolute",
}

pytestmark = pytest.mark.skipif(
    not SNAPSHOT.is_dir(), reason=f"no rosdistro snapshot at {SNAPSHOT} (../shared beside the checkout)"
)


def dependency_keys() -> dict[str, list[str]]:
    """Key -> the packages that declare it (every dependency type, as `rosdep install` reads them)."""
    keys: dict[str, list[str]] = {}
    for pkg in PACKAGES:
        package = parse_package(str(REPO / pkg / "package.xml"))
        deps = (
            package.build_depends
            + package.buildtool_depends
            + package.build_export_depends
            + package.buildtool_export_depends
            + package.exec_depends
            + package.test_depends
            + package.doc_depends
        )
        for dep in deps:
            if dep.name not in PACKAGES:
                keys.setdefault(dep.name, []).append(pkg)
    return keys


@pytest.fixture(scope="module")
def rosdep_env():
    """Environment in which rosdep reads only the snapshot (its cache in a temporary ROS_HOME)."""
    rosdep = shutil.which("rosdep")
    assert rosdep, "rosdep is not installed (requirements/dev.txt; apt: python3-rosdep)"
    with tempfile.TemporaryDirectory(prefix="av_scene_vlm_rosdep_") as tmp:
        root = Path(tmp)
        env = dict(os.environ, **rosdep_sources(root, PLATFORMS))
        env.update(
            ROS_HOME=str(root / "home"),
            ROS_PYTHON_VERSION="3",
        )
        update = subprocess.run([rosdep, "update"], env=env, capture_output=True, text=True, timeout=300)
        assert update.returncode == 0, update.stdout + update.stderr
        for distro in PLATFORMS:
            assert f'Add distro "{distro}"' in update.stdout, update.stdout
        yield rosdep, env


def resolve(rosdep_env, keys: list[str], distro: str) -> tuple[dict[str, list[str]], str]:
    """`rosdep resolve` of `keys` on `distro`: {key: its installer and packages}, and rosdep's errors."""
    rosdep, env = rosdep_env
    proc = subprocess.run(
        [rosdep, "resolve", *keys, "--rosdistro", distro, "--os", PLATFORMS[distro]],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    resolved: dict[str, list[str]] = {}
    current = None
    for line in proc.stdout.splitlines():
        match = re.fullmatch(r"#ROSDEP\[(.+)\]", line.strip())
        if match:
            current = resolved.setdefault(match.group(1), [])
        elif current is not None and line.strip():
            current.append(line.strip())
    return resolved, proc.stderr


def test_the_packages_declare_what_the_code_needs() -> None:
    keys = dependency_keys()
    for key in (
        "python3-transformers-pip",
        "python3-rosbags-pip",
        "python3-torchvision",
        "python3-torchvision-pip",
        "cv_bridge",
        "launch_testing",
    ):
        assert key in keys, f"package.xml does not declare {key}"


@pytest.mark.parametrize("distro", list(PLATFORMS))
def test_every_key_resolves(rosdep_env, distro: str) -> None:
    keys = dependency_keys()
    resolved, errors = resolve(rosdep_env, sorted(keys), distro)
    unresolved = [
        f"{key} (declared by {', '.join(keys[key])}) does not resolve on {distro} ({PLATFORMS[distro]})"
        for key in sorted(keys)
        if len(resolved.get(key, [])) < 2  # an installer line ('#apt', '#pip') and its packages
    ]
    assert not unresolved, "\n".join(unresolved) + "\nrosdep said:\n" + errors


def test_an_unknown_key_is_reported(rosdep_env) -> None:
    """The check can fail: a key without a rosdep rule (transformers has only the -pip one) is caught."""
    resolved, errors = resolve(rosdep_env, ["python3-transformers", "python3-numpy"], "humble")
    assert not resolved.get("python3-transformers")
    assert "python3-transformers" in errors
    assert resolved["python3-numpy"] == ["#apt", "python3-numpy"]
