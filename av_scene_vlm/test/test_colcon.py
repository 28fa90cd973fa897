"""The README's install block, run as written, and the workspace it builds.

One workspace per test session (module fixture): the README's install block (between its
`<!-- install-block -->` marker and the end of that code block) run verbatim by bash in a clean login
environment, HOME in a temporary directory, with the stand-ins of `install_route.py` for what this
machine lacks (a `/opt/ros/<distro>` for the PyPI-wheel ROS prefix, apt, `rosdep init`, the clone, and
`rosdep install --simulate`). Then, in the shell the README tells users to open (ROS setup, the venv,
install/setup.bash): `ros2 pkg prefix` finds the workspace's package, the CLI runs by the name the
README gives (`ros2 run av_scene_vlm av-scene-vlm`), `ros2 launch ... --show-args` lists exactly the
arguments of the README's tables, the README's first run (a bare `ros2 run av_scene_vlm clip_node` with
its camera remapped) publishes the installed vehicle tasks, and a real `ros2 launch` of the installed
package publishes results and stops cleanly on Ctrl-C (SIGINT to its process group). `rosdep install
--simulate` of the block is also run for humble/jammy, jazzy/noble and kilted/noble.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from install_route import (
    SNAPSHOT,
    UBUNTU,
    clean_env,
    for_distro,
    have_system_python,
    readme_block,
    ros_prefix,
    rosdep_sources,
    stand_ins,
)

REPO = Path(__file__).resolve().parents[2]
CAMERA = "/colcon_test/image_raw"
EXECUTABLES = ("clip_node", "caption_node", "scene_vlm", "av-scene-vlm")
DISTRO = os.environ.get("ROS_DISTRO", "kilted")  # the wheels of this venv stand in for its apt install


@dataclass
class Workspace:
    root: Path  # the temporary HOME and the stand-in /opt
    ws: Path  # ~/ws
    env: dict[str, str]
    setup: str  # what a new shell sources: the ROS setup, the venv, install/setup.bash
    log: str  # what the stand-ins recorded (apt, rosdep init, rosdep install --simulate)
    output: str

    def __truediv__(self, other: str) -> Path:
        return self.ws / other


def needs_route() -> None:
    if not (Path(sys.prefix) / "share" / "rosidl_default_generators").is_dir():
        pytest.skip("no ROS 2 wheels in this venv to stand in for /opt/ros/<distro>")
    if not SNAPSHOT.is_dir():
        pytest.skip(f"no rosdistro snapshot at {SNAPSHOT} (../shared beside the checkout)")
    if not have_system_python():
        pytest.skip("no /usr/bin/python3 (with venv) of this venv's Python version, or no cmake")


def run_block(root: Path, distro: str, block: str, models: dict[str, Path] | None = None) -> tuple:
    """The block for `distro` run by bash (set -e) with the stand-ins; (process, env, prefix, log)."""
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    prefix = ros_prefix(root, distro)
    env = clean_env(home, {**rosdep_sources(root), "ROS_HOME": str(root / "ros_home")})
    log = root / "stand_ins.log"
    text = for_distro(block, distro).replace("/opt/ros/", f"{root}/opt/ros/")
    script = "set -e\n" + stand_ins(distro, log, models or {}, home / ".cache" / "huggingface" / "hub") + text
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=1500)
    return proc, env, prefix, log.read_text() if log.exists() else ""


@pytest.fixture(scope="module")
def workspace():
    """The README's install block, run: a colcon workspace with both packages built in ~/ws."""
    needs_route()
    with tempfile.TemporaryDirectory(prefix="av_scene_vlm_route_") as tmp:
        root = Path(tmp)
        proc, env, prefix, log = run_block(root, DISTRO, readme_block())
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output[-6000:]
        ws = root / "home" / "ws"
        # A new shell as the README says to open it (its "In every new shell:" line, verbatim).
        line = re.search(r"In every new shell:\s*`([^`]+)`", (REPO / "README.md").read_text()).group(1)
        setup = for_distro(line, DISTRO).strip().replace("/opt/ros/", f"{root}/opt/ros/")
        assert setup.count("source ") == 3 and str(prefix) in setup, setup
        yield Workspace(root, ws, env, setup, log, output)


def sourced(ws: Workspace, command: str) -> list[str]:
    """bash running `command` in a new shell set up as the README says."""
    return ["bash", "-c", f"{ws.setup} && cd {shlex.quote(str(ws.ws))} && exec {command}"]


def run_sourced(ws: Workspace, command: str, timeout: float = 120.0) -> str:
    proc = subprocess.run(sourced(ws, command), env=ws.env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"`{command}` exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def simulated_installs(log: str) -> tuple[list[str], list[str]]:
    """(apt packages, pip packages) that `rosdep install --simulate` printed."""
    apt = re.findall(r"apt-get install -y (\S+)", log)
    pip = re.findall(r"pip3? install -U (\S+)", log)
    return apt, pip


def needs_ros2() -> None:
    """The `ros2` command: a ROS install's, or the kit's that make installs from ../shared/ros-launch."""
    pytest.importorskip(
        "ros2launch", reason="the ros2 command is not installed (make installs ../shared/ros-launch)"
    )


@pytest.mark.slow
def test_the_block_ran_as_written(workspace: Workspace) -> None:
    """What the stand-ins saw: apt asked for the tools, rosdep on the snapshot, no torch from apt, no
    pip run by rosdep (the venv had every pip key), and the venv on Debian's PEP 668 Python."""
    assert "apt install -y ros-dev-tools python3-venv" in workspace.log
    apt, pip = simulated_installs(workspace.log)
    assert apt and all(not p.startswith("python3-torch") for p in apt), apt
    assert f"ros-{DISTRO}-cv-bridge" in apt, apt
    assert not pip, f"rosdep would run pip for {pip}"
    cfg = (workspace / "venv" / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in cfg and "/usr/bin" in cfg, cfg
    assert (workspace / "venv" / "COLCON_IGNORE").is_file()
    shebang = (workspace / "install/av_scene_vlm/lib/av_scene_vlm/clip_node").read_text().splitlines()[0]
    assert shebang == f"#!{workspace / 'venv/bin/python'}", shebang  # the venv's Python runs the nodes


@pytest.mark.slow
@pytest.mark.parametrize("distro", list(UBUNTU))
def test_rosdep_install_takes_torch_from_pip(distro: str, tmp_path: Path) -> None:
    """The block's rosdep lines for each distro's Ubuntu: ROS and Ubuntu packages from apt, never
    Ubuntu's python3-torch; with AV_SCENE_VLM_TORCH=apt (the documented opt-in) it is there."""
    needs_route()
    block = readme_block()
    upto = block[: block.index("python -m colcon build")]
    proc, _, _, log = run_block(tmp_path / "pip", distro, upto)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    apt, pip = simulated_installs(log)
    assert f"ros-{distro}-cv-bridge" in apt and "python3-opencv" in apt, apt
    assert not [p for p in apt if p.startswith("python3-torch")] and not pip, (apt, pip)
    opt_in = upto.replace("rosdep install", "AV_SCENE_VLM_TORCH=apt rosdep install")
    proc, _, _, log = run_block(tmp_path / "apt", distro, opt_in)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert {"python3-torch", "python3-torchvision"} <= set(simulated_installs(log)[0]), log


@pytest.mark.slow
def test_colcon_build_installs_both_packages(workspace: Workspace) -> None:
    install = workspace / "install"
    for exe in EXECUTABLES:
        assert (install / "av_scene_vlm" / "lib" / "av_scene_vlm" / exe).is_file(), exe
    share = install / "av_scene_vlm" / "share" / "av_scene_vlm"
    for f in (
        "launch/scene_vlm.launch.py",
        "launch/bag_replay.launch.py",
        "config/scene_vlm.yaml",
        "config/scene_events.yaml",
        "rviz/scene_vlm.rviz",
    ):
        assert (share / f).is_file(), f
    assert (
        install / "av_scene_vlm_msgs" / "share" / "av_scene_vlm_msgs" / "msg" / "ClassificationArray.msg"
    ).is_file()
    assert list((install / "av_scene_vlm_msgs").rglob("_classification_array.py")), (
        "no generated Python module"
    )


@pytest.mark.slow
def test_sourced_workspace_provides_the_package(workspace: Workspace) -> None:
    needs_ros2()
    prefix = run_sourced(workspace, "ros2 pkg prefix av_scene_vlm").strip()
    assert Path(prefix) == workspace / "install" / "av_scene_vlm"
    listed = run_sourced(workspace, "ros2 pkg executables av_scene_vlm").split("\n")
    assert sorted(line.split()[1] for line in listed if line.strip()) == sorted(EXECUTABLES)
    # The CLI by the name the README gives it in a workspace, with the installed config as --config.
    readme = (REPO / "README.md").read_text()
    assert "`ros2 run av_scene_vlm av-scene-vlm ...`" in readme
    out = run_sourced(workspace, "ros2 run av_scene_vlm av-scene-vlm classify --help")
    assert "installed config/scene_vlm.yaml" in " ".join(out.split()), out
    from av_scene_vlm import __version__

    assert run_sourced(workspace, "ros2 run av_scene_vlm av-scene-vlm --version").split() == [
        "av-scene-vlm",
        __version__,
    ]


def show_args(text: str) -> dict[str, str | None]:
    """`ros2 launch ... --show-args` output -> {argument: default (None when required)}.

    Defaults built from FindPackageShare print as PathJoin('FindPackageShare(pkg='p') + 'a' + 'b''):
    they become 'share/p/a/b', as the README writes them.
    """
    args: dict[str, str | None] = {}
    for block in text.split("\n\n"):
        name = re.search(r"^\s*'([^']+)':", block, re.M)
        if not name:
            continue
        default = re.search(r"\(default: (.*)\)\s*$", block.strip())
        value = default.group(1) if default else None
        if value and value.startswith("PathJoin("):
            value = "share/" + "/".join(re.findall(r"'([^'()]+)'", value))
        elif value:
            value = value.strip("'")
        args[name.group(1)] = value
    return args


def readme_table(after: str, page: str = "README.md") -> dict[str, str | None]:
    """The `| argument | default | meaning |` table following the text `after` in README.md (or a page:
    bag_replay's table is in docs/NODES.md)."""
    text = (REPO / page).read_text()
    rows = text[text.index(after) :].split("| argument | default | meaning |", 1)[1].split("\n\n", 1)[0]
    table: dict[str, str | None] = {}
    for row in rows.splitlines()[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        value = re.match(r"`([^`]*)`", cells[1])
        table[cells[0].strip("`")] = (
            (value.group(1).replace('""', "") if value else None) if cells[1] else None
        )
    return table


@pytest.mark.slow
def test_show_args_are_the_readme_tables(workspace: Workspace) -> None:
    needs_ros2()
    scene = readme_table("**`scene_vlm.launch.py`**")
    replay = readme_table("**`bag_replay.launch.py`** includes `scene_vlm.launch.py`", "docs/NODES.md")
    assert scene and replay
    shown = show_args(run_sourced(workspace, "ros2 launch av_scene_vlm scene_vlm.launch.py --show-args"))
    assert shown == scene
    shown = show_args(run_sourced(workspace, "ros2 launch av_scene_vlm bag_replay.launch.py --show-args"))
    assert shown == {**replay, **scene}  # bag_replay passes every scene_vlm argument through


@pytest.mark.slow
def test_ros2_launch_publishes_and_stops_on_ctrl_c(workspace: Workspace, tiny_clip: Path) -> None:
    needs_ros2()
    from launch_helpers import (
        CameraProbe,
        group_alive,
        has_source_header,
        interrupt_group,
        start_group,
    )

    from av_scene_vlm_msgs.msg import ClassificationArray

    command = (
        f"ros2 launch av_scene_vlm scene_vlm.launch.py enable_caption:=false model:={tiny_clip} "
        f"image_topics:=\"['{CAMERA}']\" sigterm_timeout:=60"  # launch's SIGTERM escalation: not before 60 s
    )
    launch = start_group(sourced(workspace, command), env=workspace.env)
    probe = CameraProbe("colcon_probe")
    results = "/colcon_test/scene/classification"
    try:
        probe.listen(ClassificationArray, results)
        assert probe.feed(CAMERA, lambda: bool(probe.messages(results))), f"no result on {results}"
        assert has_source_header(probe.messages(results)[0], probe)
    finally:
        probe.close()
        code, output = interrupt_group(launch)
    assert code == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert re.search(r"\[clip_node-\d+\]: process has finished cleanly", output), output[-3000:]
    assert not group_alive(launch.pid), "processes of the launch are left running"


@pytest.mark.slow
def test_readme_first_run(workspace: Workspace, tiny_clip: Path, tiny_qwen: Path) -> None:
    """The README's first-run block in the sourced workspace, as written: `hf download` (the tiny models
    put in the cache under those ids), HF_HUB_OFFLINE=1, the bare `ros2 run ... clip_node` with the
    camera remapped, and `ros2 topic echo --once` of its results while the camera publishes: the
    results carry the frame's header and the installed config's tasks."""
    needs_ros2()
    from av_scene_vlm.core.models import DEFAULT_CAPTION_MODEL, DEFAULT_CLIP_MODEL
    from av_scene_vlm.core.tasks import read_task_file
    from launch_helpers import CameraProbe, group_alive, interrupt_group, start_group

    lines = [ln for ln in readme_block("<!-- first-run -->").splitlines() if ln.strip()]
    setup_lines = [ln for ln in lines if not ln.startswith("ros2 ")]
    run = next(ln for ln in lines if ln.startswith("ros2 run av_scene_vlm clip_node"))
    echo = next(ln for ln in lines if ln.startswith("ros2 topic echo --once"))
    camera = re.search(r"-r image_raw:=(\S+)", run).group(1)
    results = shlex.split(echo, comments=True)[-1]
    assert results == camera.rsplit("/", 1)[0] + "/scene/classification"
    models = {DEFAULT_CLIP_MODEL: tiny_clip, DEFAULT_CAPTION_MODEL: tiny_qwen}
    hub = workspace.root / "home" / ".cache" / "huggingface" / "hub"
    prelude = stand_ins(DISTRO, workspace.root / "first_run.log", models, hub) + "\n".join(setup_lines)
    shell = f"{workspace.setup} && {prelude}\n"
    # A fresh ros2 daemon: one left from an earlier run can keep listing a node that exited.
    subprocess.run(sourced(workspace, "ros2 daemon stop"), env=workspace.env, capture_output=True)
    node = start_group(["bash", "-c", shell + f"exec {run}"], env=workspace.env)
    probe = CameraProbe("first_run_probe")
    out, listed = "", ""
    reader = None
    try:
        # As a user does: the echo in another terminal once the node is up (it asks the ros2 daemon for
        # the topic's type, and exits when nobody publishes it yet).
        for _ in range(90):
            listed = subprocess.run(
                sourced(workspace, "ros2 topic list"), env=workspace.env, capture_output=True, text=True
            ).stdout
            if results in listed.split() or node.poll() is not None:
                break
            time.sleep(1.0)
        if results in listed.split():
            reader = start_group(["bash", "-c", shell + f"exec {echo}"], env=workspace.env)
            probe.feed(camera, lambda: reader.poll() is not None, timeout=180)
            out = (
                reader.communicate(timeout=10)[0] if reader.poll() is not None else interrupt_group(reader)[1]
            )
    finally:
        probe.close()
        code, output = interrupt_group(node)
        subprocess.run(sourced(workspace, "ros2 daemon stop"), env=workspace.env, capture_output=True)
    assert results in listed.split(), f"{results} never listed ({listed}); the node said:\n{output[-3000:]}"
    assert reader.returncode == 0 and out.startswith("header:"), (
        f"{out[-3000:]}\nlisted: {listed}\n{output[-3000:]}"
    )
    installed = read_task_file(workspace / "install/av_scene_vlm/share/av_scene_vlm/config/scene_vlm.yaml")
    assert re.findall(r"^  task: (.+)$", out, re.M) == [t.name for t in installed.tasks], out[-3000:]
    assert code == 0 and "Traceback" not in output, output[-3000:]
    assert not group_alive(node.pid)
