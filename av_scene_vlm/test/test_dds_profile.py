"""The large-frame Fast DDS profile is set for Fast DDS 2.x and 3.x alike (issue 18, point 8): the
helper the demo and benchmarks call, and the variables the launch files set."""

from __future__ import annotations

from pathlib import Path

from av_scene_vlm.core.dds_profile import PROFILE_VARIABLES, large_frames_profile, use_large_frames_profile

REPO = Path(__file__).resolve().parents[2]
FASTDDS, FASTRTPS = "FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE"


def test_both_variables_name_the_bundled_profile() -> None:
    env: dict[str, str] = {}
    profile = use_large_frames_profile(env)
    assert env == {FASTDDS: profile, FASTRTPS: profile} and Path(profile) == large_frames_profile()
    assert "<segment_size>" in Path(profile).read_text()


def test_a_profile_the_user_chose_applies_on_both_versions() -> None:
    for given in (FASTDDS, FASTRTPS):
        env = {given: "/etc/vehicle/dds.xml"}
        assert use_large_frames_profile(env) == "/etc/vehicle/dds.xml"
        assert env == {FASTDDS: "/etc/vehicle/dds.xml", FASTRTPS: "/etc/vehicle/dds.xml"}
    env = {FASTDDS: "", FASTRTPS: "/a.xml"}  # empty counts as unset
    use_large_frames_profile(env)
    assert env == {FASTDDS: "/a.xml", FASTRTPS: "/a.xml"}
    env = {FASTDDS: "/3.xml", FASTRTPS: "/2.xml"}  # both chosen: left alone
    use_large_frames_profile(env)
    assert env == {FASTDDS: "/3.xml", FASTRTPS: "/2.xml"}


def test_everything_that_sets_the_profile_sets_both() -> None:
    assert PROFILE_VARIABLES == (FASTDDS, FASTRTPS)
    users = [
        REPO / "av_scene_vlm" / "launch" / name for name in ("scene_vlm.launch.py", "bag_replay.launch.py")
    ]
    for path in users:
        text = path.read_text()
        assert FASTDDS in text and FASTRTPS in text, path
    for path in [
        REPO / "av_scene_vlm" / "av_scene_vlm" / "demo.py",
        *sorted((REPO / "benchmarks").glob("*.py")),
    ]:
        text = path.read_text()
        if "PROFILES_FILE" in text or "large_frames" in text:
            assert "use_large_frames_profile()" in text and FASTDDS not in text, path
