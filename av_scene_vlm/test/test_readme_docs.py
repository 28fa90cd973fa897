"""The README as a new ROS user reads it (issue 30): short, the quick start on the first screen, every
command in it accepted by the program it calls, and every page it links there. Plus an honesty check
of the move: every line of the README before the rewrite (a fixed git blob) is still said, word for
word, in the README or a page under docs/, except the lines listed in CORRECTED with why they changed.

The `ros2 param|topic|interface|lifecycle` lines are run verbatim by test_readme_ros2_commands.py, the
install block and the first run by test_colcon.py; here the other commands meet their parsers:
`av-scene-vlm` lines go through its argparse parser, `ros2 launch` arguments must be declared by the
launch file, `ros2 run` lines name an installed executable and arguments rcl accepts.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"
MAX_LINES = 300
FIRST_SCREEN = 60  # lines: what a reader sees before scrolling far
PAGES = (
    "INSTALL.md",
    "NODES.md",
    "LIFECYCLE.md",
    "ROBUSTNESS.md",
    "CLI.md",
    "BACKENDS.md",
    "PERFORMANCE.md",
    "ARCHITECTURE.md",
    "TESTING.md",
    "DEVELOPMENT.md",
)
# The README before the rewrite (commit 38a302c), as a git blob: the content that must not be lost.
OLD_README = "64526d1166aee4153b823d280eeaa9fbdc93d945"
# Old lines that were wrong and are said differently now (fragment of the old line -> why).
CORRECTED = {
    "source /opt/ros/$ROS_DISTRO/setup.bash": "ROS_DISTRO is set by that script: the distro is named",
    "mkdir -p ~/ws/src && cd ~/ws/src && git clone <this repo> av_scene_vlm": "the block clones a real URL",
    "cd ~/ws && rosdep install --from-paths src": "rosdep update, --rosdistro, the venv first",
    "colcon build --symlink-install && source install/setup.bash": "python -m colcon build in the venv",
    "scene_vlm.launch.py image_topics:=\"['/camera/image_raw']\"": "the README's first run",
    "Jazzy or Kilted (Ubuntu 24.04, Python 3.12), with ROS 2 from its": "INSTALL.md, the route section",
    "apt packages:": "(the sentence above)",
    "so rosdep installs them with pip.": "pip-installed into the venv first",
    "Ubuntu 24.04 (Jazzy, Kilted): pip refuses system-wide installs (PEP 668)": "no pip run by rosdep now",
    "allow them as rosdep's documentation describes (`PIP_BREAK_SYSTEM_PACKAGES=1`, or": "(the line above)",
    "`break-system-packages = true` in pip's configuration; not run here).": "(the line above)",
    "torch: `python3-torch` / `python3-torchvision` are Ubuntu's builds": "pip pair by default, apt opt-in",
    "needs (setup.py's minimum; transformers 5 needs torchvision for the Qwen2.5-VL processor).": "(above)",
    "or with a vendor's CUDA/Jetson build, skip them and install a matching pair yourself:": "(above)",
    '--skip-keys "python3-torch python3-torchvision"`.': "(above)",
    "does not add by itself. `test/test_colcon.py` runs exactly": "test_colcon runs the README's block",
    "this route on Kilted and Jazzy.": "(the line above)",
    "directory; every tool exits 2 with a one-line message for unreadable images, bad arguments or a model": (
        "one exit-code table: unreadable images and missing models are 1"
    ),
    "that cannot be found, naming the model and how to get it):": "(the line above)",
    "error and leave nothing behind, exit code 2; a disk": "a missing or unreadable input bag is 1",
    "$ ros2 run av_scene_vlm clip_node --ros-args -p autostart:=false": "the camera is remapped (-r)",
    "Models on the vehicle: fetch them once where there is network, one repository per command,": "heading",
    "--config config/scene_vlm.yaml": "a path in no install: the installed file is the default (issue 30)",
    "The camera inputs (`image_topics` ... `output_namespaces`), `diagnostics_period` and `use_cv_bridge`": (
        "the shared list is generated now (it missed max_frame_pixels and autostart)"
    ),
    "are the same parameters as clip_node's; the rest are the captioner's own.": "(the line above)",
    "`make demo` and the benchmarks set both (`core/dds_profile.py`)": "the installed Fast DDS's only",
    "`large_frames:=true`, for every process they start": "(the line above; INSTALL.md says it now)",
    "in both variables (Fast DDS 2.x and 3.x;": "the installed version's variable (issue 27's dds_profile)",
    "(see [Image-tower backends]": "the section is a page now: BACKENDS.md, linked by name",
    "a capture that fails or differs logs one warning and the engine runs": "issue 26: a failure is retried",
    "eagerly from then on. Parameter `cuda_graphs`": "(the line above; a mismatch disables)",
    "batch sizes are padded up, never recompiled); `/diagnostics`": "issue 26: padded within the limit",
    "sections apply) and type-checks both before either model loads, plus:": "NODES: plus enable_caption",
    "scene_vlm.launch.py --show-args": "the table is the README's (NODES says so)",
    "**`scene_vlm.launch.py`** starts `clip_node` and `caption_node`": "shorter in the README",
    "`params_file` first; arguments left empty keep the file's values": "(the line above)",
    "single source of truth and the command line only overrides what it names.": "(the line above)",
    "other argument above through. It adds:": "the table moved to NODES, which names the launch file",
}


def normalized(text: str) -> str:
    """Whitespace collapsed, link targets dropped (pages link each other differently than the README)."""
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return re.sub(r"\s+", " ", text.replace("docs/", ""))


def test_readme_is_short() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines; move details to docs/"


def test_quick_start_is_on_the_first_screen() -> None:
    first = "\n".join(README.read_text().splitlines()[:FIRST_SCREEN])
    for needed in (
        "sudo apt install",
        "source /opt/ros/jazzy/setup.bash",
        "rosdep update",
        "rosdep install --from-paths src --ignore-src -y --rosdistro jazzy",
        "colcon build",
        "source install/setup.bash",
        "hf download openai/clip-vit-base-patch32",
        "ros2 run av_scene_vlm clip_node --ros-args -r image_raw:=",
        "ros2 topic echo",
        "enable_caption:=false",
        "large_frames:=true",
    ):
        assert needed in first, f"{needed!r} is not in the README's first {FIRST_SCREEN} lines"
    for distro in ("humble", "jazzy", "kilted"):
        assert distro in first, distro


def test_every_page_is_linked_and_every_link_resolves() -> None:
    readme = README.read_text()
    for page in PAGES:
        assert f"](docs/{page}" in readme, f"README.md does not link docs/{page}"
    for doc in (README, *sorted(DOCS.glob("*.md"))):
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" in target:
                continue
            assert (doc.parent / target).exists(), f"{doc.name} links {target}, which does not exist"


def test_nothing_the_old_readme_said_is_lost() -> None:
    proc = subprocess.run(["git", "cat-file", "-p", OLD_README], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"git object {OLD_README} (the README before issue 30) is not in this clone")
    old = proc.stdout
    old = re.sub(r"<!-- params:(\w+) -->.*?<!-- /params -->", "", old, flags=re.S)  # generated tables
    now = normalized("\n".join(p.read_text() for p in (README, *sorted(DOCS.glob("*.md")))))
    lost = []
    for line in old.splitlines():
        text = normalized(line).strip()
        if len(text) < 4 or text.startswith(("```", "#")) or set(text) <= set("|-: "):  # headings: renamed
            continue
        if text not in now and not any(normalized(key).strip() in text for key in CORRECTED):
            lost.append(line)
    assert not lost, "lines of the old README said nowhere now:\n" + "\n".join(lost)


def test_the_honesty_check_can_fail(tmp_path: Path) -> None:
    """A changed line is found: the normalisation does not make everything match."""
    now = normalized(README.read_text())
    assert normalized("make test   # creates .venv").strip() not in normalized("make tests # creates .venv")
    assert normalized("ROS 2 perception nodes that give an autonomous vehicle").strip() in now


# ---- every command meets its parser -----------------------------------------------------------------


def commands(*docs: Path) -> list[str]:
    """Command lines in code blocks (a console block's `$ ` lines) of the given pages."""
    found = []
    for doc in docs:
        for lang, block in re.findall(r"^```(bash|console|sh)\n(.*?)^```", doc.read_text(), re.S | re.M):
            for line in block.splitlines():
                if lang == "console":
                    if not line.startswith("$ "):
                        continue
                    line = line[2:]
                found.append(line.strip())
    return found


def cli_args(line: str) -> list[str] | None:
    """The arguments of an `av-scene-vlm` line (or `ros2 run av_scene_vlm av-scene-vlm`), optional
    `[...]` groups left out; None for other lines."""
    line = re.sub(r"\s\[[^\]]*\]", "", line.split(" \\")[0] if line.endswith("\\") else line)
    words = shlex.split(line, comments=True)
    if words[:4] == ["ros2", "run", "av_scene_vlm", "av-scene-vlm"]:
        return words[4:]
    return words[1:] if words[:1] == ["av-scene-vlm"] else None


def test_av_scene_vlm_lines_parse() -> None:
    from av_scene_vlm.cli.main import build_parser

    parser = build_parser()
    lines = [
        line for line in commands(README, DOCS / "CLI.md", DOCS / "BACKENDS.md") if cli_args(line) is not None
    ]
    assert len(lines) >= 8, lines  # the CLI page shows every command
    for line in lines:
        try:
            args = parser.parse_args(cli_args(line))
        except SystemExit:
            pytest.fail(f"av-scene-vlm rejects the documented line: {line}")
        assert args.command, line


def test_ros2_launch_lines_use_declared_arguments() -> None:
    from test_launch_static import LaunchFile

    lines = [c for c in commands(README, DOCS / "NODES.md") if c.startswith("ros2 launch ")]
    assert lines
    for line in lines:
        words = shlex.split(line, comments=True)
        assert words[2] == "av_scene_vlm", line
        declared = set(LaunchFile.load(words[3]).declared)
        if words[3] == "bag_replay.launch.py":
            declared |= set(LaunchFile.load("scene_vlm.launch.py").declared)
        for word in words[4:]:
            if word == "--show-args":
                continue
            name, sep, _ = word.partition(":=")
            assert sep and name in declared, f"{line}: '{word}' is not an argument of {words[3]}"


def test_ros2_run_lines_name_executables_rcl_accepts() -> None:
    rclpy = pytest.importorskip("rclpy")
    from importlib.metadata import distribution

    scripts = {e.name for e in distribution("av_scene_vlm").entry_points if e.group == "console_scripts"}

    lines = [
        c for c in commands(README, DOCS / "NODES.md", DOCS / "LIFECYCLE.md") if c.startswith("ros2 run ")
    ]
    lines += [
        c for c in re.findall(r"`(ros2 run [^`]+)`", README.read_text() + (DOCS / "NODES.md").read_text())
    ]
    assert any("-r image_raw:=" in line for line in lines), lines
    for line in lines:
        words = shlex.split(line.replace("$(ros2 pkg prefix av_scene_vlm)", "/prefix"), comments=True)
        if any(w.startswith("<") or w == "..." for w in words):
            continue  # a pattern (`--enclave <enclave>`), not a command
        assert words[2] == "av_scene_vlm" and words[3] in scripts, line
        ros_args = words[4:]
        if ros_args and "--params-file" not in ros_args:
            context = rclpy.Context()
            try:
                rclpy.init(args=["node", *ros_args], context=context)  # rcl parses --ros-args here
            except Exception as exc:
                pytest.fail(f"rcl rejects the arguments of `{line}`: {exc}")
            finally:
                rclpy.try_shutdown(context=context)
