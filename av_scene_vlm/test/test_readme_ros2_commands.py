"""The README's `ros2` command lines work as written, against a running node.

Every `ros2 run|param|topic|interface|pkg|lifecycle` command in README.md and the node pages it links
(docs/NODES.md, docs/LIFECYCLE.md) (code blocks and inline code;
a bare verb such as `ros2 param set` in prose is a mention, not a command) is run verbatim with bash, in
the environment `make` sets up (the venv activated: an ament prefix with the ros2 verbs). So a README
edit that breaks a command fails here. The README's one `ros2 run` line (the first run: clip_node with
its relative `image_raw` remapped to the camera) is the node the other commands talk to; a page's
`ros2 run` that starts nodes (scene_vlm with the installed params file) is started afterwards and must
bring them up and stop on Ctrl-C. The managed-node walk-through (the block after
`<!-- lifecycle-demo -->` in docs/LIFECYCLE.md) runs against a node of its own, with frames fed in
every state. `ros2 launch` lines are run by test_colcon.py; `ros2 bag` needs rosbag2, which is not
installable here.

The README's models are hub ids; nothing can be downloaded here, so a temporary Hugging Face cache
holds tiny random models under those names (HF_HUB_OFFLINE=1), which the nodes load like the real
ones. Frames are published on the default camera topic while `ros2 topic echo` waits for results.
"""

from __future__ import annotations

import pytest

pytest.importorskip(
    "ros2cli", reason="the ros2 command is not installed (make installs ../shared/ros-launch)"
)

import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from av_scene_vlm.core.models import DEFAULT_CAPTION_MODEL, DEFAULT_CLIP_MODEL
from launch_helpers import CameraProbe, ament_env, group_alive, interrupt_group, start_group, tool

REPO = Path(__file__).resolve().parents[2]
VERBS = ("run", "param", "topic", "interface", "pkg", "lifecycle")  # the verbs run here
DEMO = "<!-- lifecycle-demo -->"  # the managed-node walk-through: a block of its own
REQUIRED = ("run", "param", "topic", "interface")  # the README must show each
CAMERA = "/camera/image_raw"  # the camera of the README's first run (and of config/scene_vlm.yaml)
PAGES = (REPO / "README.md", REPO / "docs" / "NODES.md", REPO / "docs" / "LIFECYCLE.md")
SNAPSHOT = "0" * 40  # revision name of the cached tiny models


def readme_examples(demo: bool = False, pages: tuple[Path, ...] = PAGES) -> list[tuple[str, list[str]]]:
    """Runnable `ros2 ...` lines of the README and its node pages (and lines using `$(ros2 ...)`), in
    order, each with the output shown for it: the lines after a `$ command` in a console block (`[...]`
    stands for anything), else none. `demo`: those of the lifecycle walk-through only, else all others."""
    text = "\n".join(page.read_text() for page in pages)
    if DEMO in text:
        before, after = text.split(DEMO, 1)
        block, rest = re.match(r"\s*(```console\n.*?^```)(.*)", after, re.S | re.M).groups()
        text = block if demo else before + rest
    elif demo:
        raise AssertionError(f"no {DEMO} block in {[p.name for p in pages]}")
    snippets: list[tuple[str, list[str]]] = []
    for lang, block in re.findall(r"^```(bash|console|sh)\n(.*?)^```", text, re.S | re.M):
        for line in block.splitlines():
            if lang == "console" and not line.startswith("$ "):
                if snippets:
                    snippets[-1][1].append(line)  # output shown for the command above
                continue
            snippets.append((line.removeprefix("$ "), []))
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    snippets += [(inline, []) for inline in re.findall(r"`([^`\n]+)`", prose)]
    examples = []
    for snippet, shown in snippets:
        if not snippet.startswith(("ros2 ", "export ")):
            continue
        words = shlex.split(snippet, comments=True)
        if any(w == "..." or w.startswith("<") for w in words):  # a placeholder: a pattern, not a command
            continue
        ros2 = len(words) >= 4 and words[0] == "ros2" and words[1] in VERBS
        if ros2 or (words[:1] == ["export"] and "$(ros2 " in snippet):
            examples.append((snippet.strip(), shown))
    return examples


def readme_commands(pages: tuple[Path, ...] = PAGES) -> list[str]:
    """The runnable `ros2 ...` lines of the README and its node pages, in order."""
    return [command for command, _ in readme_examples(pages=pages)]


def shows(output: str, shown: list[str]) -> bool:
    """Every line the README shows appears in `output` (`[...]` in a shown line matches anything)."""
    for line in shown:
        pattern = ".*".join(re.escape(part) for part in line.strip().split("[...]"))
        if not re.search(pattern, output):
            return False
    return True


def verb(command: str) -> str:
    words = shlex.split(command, comments=True)
    return words[1] if words[0] == "ros2" else words[0]


def cache_model(hub: Path, repo_id: str, model_dir: Path) -> None:
    """`model_dir` laid out as the Hugging Face cache holds `repo_id` (snapshot + refs/main)."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(model_dir, repo / "snapshots" / SNAPSHOT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SNAPSHOT)


@pytest.fixture(scope="module")
def env(tiny_clip: Path, tiny_qwen: Path):
    """The README's environment: the venv on PATH and AMENT_PREFIX_PATH, a cache with the hub models."""
    with tempfile.TemporaryDirectory(prefix="av_scene_vlm_readme_") as tmp:
        hub = Path(tmp) / "hub"
        cache_model(hub, DEFAULT_CLIP_MODEL, tiny_clip)
        cache_model(hub, DEFAULT_CAPTION_MODEL, tiny_qwen)
        env = ament_env(HF_HOME=tmp, HF_HUB_CACHE=str(hub), HF_HUB_OFFLINE="1")
        try:
            yield env
        finally:  # the daemon the graph commands started
            subprocess.run([tool("ros2"), "daemon", "stop"], env=env, capture_output=True, timeout=60)


def bash(command: str, env: dict, timeout: float = 120.0) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=timeout)


def ok(proc: subprocess.CompletedProcess, command: str) -> str:
    assert proc.returncode == 0, f"`{command}` exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_the_readme_shows_each_verb() -> None:
    shown = {verb(c) for c in readme_commands()}
    assert set(REQUIRED) <= shown, f"README.md has no `ros2 {set(REQUIRED) - shown}` command"


def test_readme_ros2_commands_work_verbatim(env: dict) -> None:
    examples = readme_examples()
    shown = {command: lines for command, lines in examples if lines}  # console examples with output
    commands = [command for command, _ in examples]
    readme = readme_commands(pages=PAGES[:1])
    runs = [c for c in readme if verb(c) == "run" and c not in shown]
    assert len(runs) == 1, f"expected one `ros2 run` line in the README to start a node, found {runs}"
    assert f"-r image_raw:={CAMERA}" in runs[0], runs[0]  # the first run: a remapped camera
    more = [c for c in commands if verb(c) == "run" and c not in shown and c not in runs]
    for command in (c for c in commands if verb(c) == "run" and c in shown):  # e.g. a start-up error
        proc = bash(command, env)
        assert shows(proc.stdout + proc.stderr, shown[command]), (command, proc.stdout, proc.stderr)
    for command in commands:
        if verb(command) in ("export", "pkg"):  # nothing running needed
            if command.startswith("export "):  # the variable must name a file that exists
                name = command.split()[1].split("=")[0]
                ok(bash(f'{command}\ntest -f "${name}"', env), f"{command}; test -f ${name}")
            else:
                ok(bash(command, env), command)

    node = start_group(["bash", "-c", runs[0]], env=env)
    probe = CameraProbe("readme_probe")
    try:
        names = probe.wait_for_nodes({"/clip_node"}, timeout=180)
        assert "/clip_node" in names, f"`{runs[0]}` did not bring up clip_node: {names}"
        # The graph commands ask the ros2 daemon; start it and wait until it has discovered the node too.
        ros2 = tool("ros2")
        ok(
            subprocess.run([ros2, "daemon", "start"], env=env, capture_output=True, text=True),
            "ros2 daemon start",
        )
        listed = ""
        for _ in range(60):
            listed = subprocess.run([ros2, "node", "list"], env=env, capture_output=True, text=True).stdout
            if "/clip_node" in listed.split():
                break
        assert "/clip_node" in listed.split(), listed

        for command in (c for c in commands if verb(c) == "lifecycle"):  # queries (`set`: the walk-through)
            assert "/clip_node" in ok(bash(command, env), command) or "activate" in ok(
                bash(command, env), command
            )

        for command in (c for c in commands if verb(c) == "interface"):
            out = ok(bash(command, env), command)
            msg = shlex.split(command, comments=True)[3].split("/")[-1]
            for line in (REPO / "av_scene_vlm_msgs" / "msg" / f"{msg}.msg").read_text().splitlines():
                field = line.split("#")[0].split()
                if len(field) >= 2:  # "type name": every field of the .msg is shown
                    assert re.search(rf"\b{re.escape(field[1])}\b", out), f"{field[1]} missing in\n{out}"

        sets_labels = False
        for command in (c for c in commands if verb(c) == "param"):
            proc = bash(command, env)
            out = ok(proc, command) + proc.stderr  # a rejection is printed on stderr
            # `ros2 param set` exits 0 even when the node rejects the value: read what it printed,
            # which is what the README shows for the command, or success.
            expected = shown.get(command, ["Set parameter successful"])
            assert shows(out, expected), f"`{command}`:\n{out}\nexpected: {expected}"
            sets_labels |= shlex.split(command)[2:4] == ["set", "/clip_node"] and "labels" in command

        for command in (c for c in commands if verb(c) == "topic"):
            echo = start_group(["bash", "-c", command], env=env)
            probe.feed(CAMERA, lambda echo=echo: echo.poll() is not None, timeout=120)
            out = echo.communicate(timeout=10)[0] if echo.poll() is not None else interrupt_group(echo)[1]
            assert echo.returncode == 0, f"`{command}` exited {echo.returncode}:\n{out}"
            assert out.startswith("header:"), out  # a message as YAML, with its header
            if sets_labels and command.endswith("/classification"):
                assert "task: default" in out, out  # README: the labels line "adds task default"
    finally:
        probe.close()
        code, output = interrupt_group(node)
    assert code == 0, f"`{runs[0]}` exited {code} on SIGINT:\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]
    assert not group_alive(node.pid), f"`{runs[0]}` left processes behind"
    for command in more:  # e.g. scene_vlm with the installed params file: both nodes come up
        started = start_group(["bash", "-c", command], env=env)
        probe = CameraProbe("readme_probe_more")
        try:
            names = probe.wait_for_nodes({"/clip_node", "/caption_node"}, timeout=180)
        finally:
            probe.close()
            code, output = interrupt_group(started)
        assert {"/clip_node", "/caption_node"} <= names, f"`{command}` did not bring up both nodes: {names}"
        assert code == 0 and "Traceback" not in output, (command, output[-3000:])


def test_commands_are_found_in_code_and_prose() -> None:
    """The extraction itself: block lines with comments and inline commands count; mentions and
    patterns (`ros2 param set`, `ros2 run av_scene_vlm ...`) do not."""
    found = readme_commands()
    assert any(c.startswith("ros2 param set /clip_node labels") for c in found), found
    assert not any(c in ("ros2 param set", "ros2 bag play") or "..." in c for c in found), found
    assert all(verb(c) in (*VERBS, "export") for c in found), found
    shown = dict(readme_examples())
    failing = [c for c in found if c.startswith("ros2 param set /clip_node heatmap_alpha")]
    assert failing and shown[failing[0]][0].startswith("Setting parameter failed:"), shown  # console output


def test_shown_output_matching() -> None:
    assert shows("[FATAL] [17.2] [x]: parameter 'a' expects", ["[FATAL] [...] [x]: parameter 'a' expects"])
    assert not shows("Set parameter successful", ["Setting parameter failed: parameter 'a'"])


# ---- the managed-node walk-through ------------------------------------------------------------------


class Frames:
    """A camera publisher of the probe that tags every frame with the node's state when it was sent
    (frame_id): a result may only ever carry the tag of a state in which the node was active."""

    def __init__(self, probe: CameraProbe) -> None:
        import numpy as np
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from ros_helpers import header, image_msg
        from sensor_msgs.msg import Image

        self._msg = lambda i, tag: image_msg(np.full((24, 32, 3), i % 256, np.uint8), "rgb8", header(i, tag))
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pub = probe.node.create_publisher(Image, CAMERA, qos)
        self.sent = 0

    def send(self, tag: str, n: int = 2) -> None:
        for _ in range(n):
            self.pub.publish(self._msg(self.sent, tag))
            self.sent += 1

    def until(self, tag: str, done, timeout: float = 120.0) -> bool:
        """Send `tag` frames every 0.2 s until `done()`."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not done():
            self.send(tag, 1)
            time.sleep(0.2)
        return done()


def test_the_walk_through_shows_every_transition() -> None:
    demo = [command for command, _ in readme_examples(demo=True)]
    sets = [shlex.split(c)[4] for c in demo if shlex.split(c)[1:3] == ["lifecycle", "set"]]
    assert {"configure", "activate", "deactivate", "cleanup", "shutdown"} <= set(sets), sets
    assert any(shlex.split(c)[1:3] == ["lifecycle", "get"] for c in demo)
    assert verb(demo[0]) == "run" and "autostart:=false" in demo[0]
    others = [c for c, _ in readme_examples() if verb(c) == "lifecycle"]  # queries, run by the test above
    assert not any(shlex.split(c)[2] == "set" for c in others), others


def test_readme_lifecycle_walk_through_verbatim(env: dict) -> None:
    """The README's managed-node commands, verbatim, against the node its `ros2 run` line starts: a
    configure that fails for a missing model leaves the node alive, a parameter fixes it, and results
    come only while the node is active — frames are fed in every state (before configure, inactive,
    active, after deactivate), and after deactivate the node is activated once more (not a README
    line): its first results are the sentinel, after which no frame sent while inactive may show up."""
    from av_scene_vlm_msgs.msg import ClassificationArray, LabelInfo

    examples = readme_examples(demo=True)
    node = start_group(["bash", "-c", examples[0][0]], env=env)
    probe = CameraProbe("lifecycle_probe")
    ros2 = tool("ros2")
    try:
        results = f"{CAMERA.rsplit('/', 1)[0]}/scene/classification"
        probe.listen(ClassificationArray, results)
        probe.listen(LabelInfo, f"{CAMERA.rsplit('/', 1)[0]}/scene/labels")
        frames = Frames(probe)
        ok(subprocess.run([ros2, "daemon", "start"], env=env, capture_output=True, text=True), "daemon")
        listed = ""
        for _ in range(120):  # `ros2 lifecycle` finds the node once the daemon has discovered it
            listed = bash("ros2 lifecycle nodes", env).stdout
            if "/clip_node" in listed.split() or node.poll() is not None:
                break
        assert "/clip_node" in listed.split(), (listed, node.poll())

        def tags() -> list[str]:
            return [m.header.frame_id for m in probe.messages(results)]

        state = "unconfigured"
        for command, shown in examples[1:]:
            frames.send(state)  # whatever the state, frames keep coming
            proc = bash(command, env)
            assert shows(proc.stdout + proc.stderr, shown), (command, proc.stdout, proc.stderr)
            words = shlex.split(command, comments=True)
            if words[1:3] != ["lifecycle", "set"] or "successful" not in proc.stdout:
                continue
            state = {"configure": "inactive", "activate": "active", "deactivate": "inactive2"}.get(
                words[4], words[4]
            )
            if state == "active":  # results now, from frames sent while active only
                assert frames.until("active", lambda: bool(tags())), tags()
            elif state == "inactive2":  # frames after deactivate, then the sentinel of activating again
                frames.send("after-deactivate", 3)
                ok(bash("ros2 lifecycle set /clip_node activate", env), "activate again")
                assert frames.until("reactivated", lambda: "reactivated" in tags()), tags()
                ok(bash("ros2 lifecycle set /clip_node deactivate", env), "deactivate again")
        assert set(tags()) <= {"active", "reactivated"}, tags()  # nothing from any other state
        assert probe.messages(f"{CAMERA.rsplit('/', 1)[0]}/scene/labels"), "no latched labels on activate"
        code, output = node.wait(timeout=60), node.communicate()[0]  # shutdown: the process ends by itself
    finally:
        probe.close()
        if node.poll() is None:
            interrupt_group(node)
    assert code == 0, output[-3000:]
    assert "configure failed: cannot load model 'acme/not-downloaded-yet'" in output, output[-3000:]
    assert "hf download" in output and "Traceback" not in output, output[-3000:]
