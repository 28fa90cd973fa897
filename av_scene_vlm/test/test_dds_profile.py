"""The large-frame Fast DDS profile (issue 18, point 8; issue 27): the variable the installed Fast DDS
reads (3.x FASTDDS_..., 2.x FASTRTPS_...; both where the version is unknown), set by the helper the
demo and benchmarks call and by the launch files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from av_scene_vlm.core.dds_profile import (
    PROFILE_VARIABLES,
    fastdds_major,
    large_frames_profile,
    profile_variables,
    use_large_frames_profile,
)

REPO = Path(__file__).resolve().parents[2]
FASTDDS, FASTRTPS = "FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE"


def test_only_the_installed_versions_variable_names_the_bundled_profile() -> None:
    for major, expected in ((3, [FASTDDS]), (2, [FASTRTPS]), (None, [FASTDDS, FASTRTPS])):
        env: dict[str, str] = {}
        profile = use_large_frames_profile(env, major=major)
        assert env == dict.fromkeys(expected, profile) and Path(profile) == large_frames_profile()
    assert "<segment_size>" in Path(profile).read_text()
    env = {}
    use_large_frames_profile(env)  # detected: this environment's Fast DDS
    assert list(env) == list(profile_variables(fastdds_major()))


def test_a_profile_the_user_chose_applies_on_the_installed_version() -> None:
    for given in (FASTDDS, FASTRTPS):
        env = {given: "/etc/vehicle/dds.xml"}
        assert use_large_frames_profile(env, major=None) == "/etc/vehicle/dds.xml"
        assert env == {FASTDDS: "/etc/vehicle/dds.xml", FASTRTPS: "/etc/vehicle/dds.xml"}
        env = {given: "/etc/vehicle/dds.xml"}
        use_large_frames_profile(env, major=3)  # copied to the variable 3.x reads, the user's kept
        assert env == {given: "/etc/vehicle/dds.xml", FASTDDS: "/etc/vehicle/dds.xml"}
    env = {FASTDDS: "", FASTRTPS: "/a.xml"}  # empty counts as unset
    use_large_frames_profile(env, major=None)
    assert env == {FASTDDS: "/a.xml", FASTRTPS: "/a.xml"}
    env = {FASTDDS: "/3.xml", FASTRTPS: "/2.xml"}  # both chosen: left alone
    use_large_frames_profile(env)
    assert env == {FASTDDS: "/3.xml", FASTRTPS: "/2.xml"}


def test_the_major_version_is_that_of_the_library_rclpy_loads(tmp_path: Path) -> None:
    """The wheels' metadata agrees with the Fast DDS library in this prefix (libfastdds: 3.x,
    libfastrtps: 2.x); a ROS install is read from its share directory, else ROS_DISTRO."""
    libs = {p.name.split(".so")[0] for p in (Path(sys.prefix) / "lib").glob("libfast*.so*")}
    if "libfastdds" in libs:
        assert fastdds_major() == 3
    elif "libfastrtps" in libs:
        assert fastdds_major() == 2
    else:
        pytest.skip(f"no Fast DDS library in {sys.prefix}/lib")
    from av_scene_vlm.core import dds_profile

    for name, version, major in (("fastdds", "3.2.3", 3), ("fastrtps", "2.6.10", 2)):
        share = tmp_path / name / "share" / name
        share.mkdir(parents=True)
        (share / "package.xml").write_text(f"<package><version>{version}</version></package>")
        assert dds_profile._major_of(version, 0) == major
    with pytest.MonkeyPatch.context() as mp:  # as if no ROS wheels were installed
        mp.setattr(dds_profile.metadata, "version", _not_found)
        assert dds_profile.fastdds_major({}, [tmp_path / "fastdds"]) == 3
        assert dds_profile.fastdds_major({}, [tmp_path / "fastrtps"]) == 2
        assert dds_profile.fastdds_major({"ROS_DISTRO": "kilted"}, []) == 3
        assert dds_profile.fastdds_major({"ROS_DISTRO": "humble"}, []) == 2
        assert dds_profile.fastdds_major({}, []) is None


def _not_found(name: str) -> str:
    from importlib import metadata

    raise metadata.PackageNotFoundError(name)


def test_no_deprecation_warning_where_the_version_is_known() -> None:
    """The issue's symptom: on Fast DDS 3.x a participant given FASTRTPS_DEFAULT_PROFILES_FILE logs that
    it is deprecated; with what `use_large_frames_profile` sets it does not (and the profile loads)."""
    if fastdds_major() != 3:
        pytest.skip("Fast DDS 2.x reads FASTRTPS_DEFAULT_PROFILES_FILE without a warning")
    script = "import rclpy; rclpy.init(); rclpy.create_node('profile_probe').destroy_node(); rclpy.shutdown()"
    base = {k: v for k, v in os.environ.items() if k not in PROFILE_VARIABLES}

    def run(env: dict[str, str]) -> str:
        proc = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout + proc.stderr

    assert "deprecated" in run({**base, FASTRTPS: str(large_frames_profile())})  # the check can fail
    env = dict(base)
    use_large_frames_profile(env)
    assert env.get(FASTDDS) == str(large_frames_profile()) and FASTRTPS not in env
    assert "deprecated" not in run(env)


def test_everything_that_sets_the_profile_uses_the_helper() -> None:
    assert PROFILE_VARIABLES == (FASTDDS, FASTRTPS)
    users = [
        REPO / "av_scene_vlm" / "launch" / name for name in ("scene_vlm.launch.py", "bag_replay.launch.py")
    ]
    for path in users:
        text = path.read_text()
        assert "profile_variables(fastdds_major())" in text and FASTRTPS not in text, path
    for path in [
        REPO / "av_scene_vlm" / "av_scene_vlm" / "demo.py",
        *sorted((REPO / "benchmarks").glob("*.py")),
    ]:
        text = path.read_text()
        if "PROFILES_FILE" in text or "large_frames" in text:
            assert "use_large_frames_profile()" in text and FASTDDS not in text, path
