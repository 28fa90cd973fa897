"""Parameter types as people type them (issue 11, point 1), for every parameter of clip_node,
caption_node and scene_vlm, taken from the nodes' PARAMETERS tables so a new parameter is covered:

- start-up, as a subprocess (`python -m <node> --ros-args ...`, as `ros2 run` runs it), with a wrong
  type from a params file and from `-p`: exit code 2, one line per parameter naming it, the type
  expected and an example, no traceback; the forms people type first are accepted;
- runtime, over the real parameter service of a running node process (DDS): a wrong type is
  rejected with that line, the old value stays, the node keeps running; an integer for a double and
  one string for a string list are accepted and stored as the declared type; deletion is refused.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

rclpy = pytest.importorskip("rclpy")

from av_scene_vlm.ros import caption_node, clip_node, scene_vlm  # noqa: E402
from av_scene_vlm.ros.parameters import KIND_TEXT, kind_of  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from ros_helpers import NodeProcess  # noqa: E402

TABLES = {
    "clip_node": clip_node.PARAMETERS,
    "caption_node": caption_node.PARAMETERS,
    "scene_vlm": scene_vlm.ALL_PARAMETERS,
}
MODULES = {name: f"av_scene_vlm.ros.{name}" for name in TABLES}
# A value of another type for each declared type (none of them is convertible).
WRONG = {"bool": "maybe", "integer": "abc", "double": "abc", "string": [1, 2], "string list": 5}
TEXT_KINDS = ("string", "string list")


def _run(module: str, *ros_args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", module, "--ros-args", *ros_args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _fatal_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if "[FATAL]" in line]


def _type_lines(lines: list[str], name: str) -> list[str]:
    return [line for line in lines if f"parameter '{name}' expects " in line]


def _params_file(tmp_path: Path, values: dict) -> str:
    path = tmp_path / "params.yaml"
    fresh = {k: list(v) if isinstance(v, list) else v for k, v in values.items()}  # no YAML aliases
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": fresh}}))
    return str(path)


@pytest.mark.parametrize("node", list(TABLES))
def test_startup_params_file_with_wrong_types(node: str, tmp_path: Path) -> None:
    """Every parameter mistyped in a params file: one line each, exit 2, no traceback."""
    table = TABLES[node]
    wrong = {name: WRONG[kind_of(spec[0])] for name, spec in table.items()}
    proc = _run(MODULES[node], "--params-file", _params_file(tmp_path, wrong))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out, out
    lines = _fatal_lines(proc)
    for name, spec in table.items():
        found = _type_lines(lines, name)
        assert len(found) == 1, (name, lines)
        assert KIND_TEXT[kind_of(spec[0])] in found[0] and "e.g. -p " in found[0], found[0]
    assert len(lines) == len(table), lines  # nothing else is reported


@pytest.mark.parametrize("node", list(TABLES))
def test_startup_dash_p_with_wrong_types(node: str) -> None:
    """Every parameter mistyped with `-p`: numbers and bools get one line each, exit 2; what is typed
    for a text or text-list parameter is text, so those are never a type error (see below)."""
    table = TABLES[node]
    args = []
    for name, spec in table.items():
        kind = kind_of(spec[0])
        value = "{a: 1}" if kind in TEXT_KINDS else WRONG[kind]  # a YAML map: rcl alone cannot parse it
        args += ["-p", f"{name}:={value}"]
    proc = _run(MODULES[node], *args)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out and "RCLError" not in out, out
    lines = _fatal_lines(proc)
    typed = [name for name, spec in table.items() if kind_of(spec[0]) not in TEXT_KINDS]
    for name in table:
        assert len(_type_lines(lines, name)) == (1 if name in typed else 0), (name, lines)
    assert len(lines) == len(typed), lines


def test_the_forms_people_type_are_accepted_at_startup(tmp_path: Path) -> None:
    """The issue's cases: every value is accepted, so start-up gets as far as the (missing) model."""
    missing = str(tmp_path / "no-model")
    proc = _run(
        MODULES["clip_node"],
        *("-p", "template:=a photo of a {}.", "-p", "min_publish_period:=1"),
        *("-p", "tasks:=weather: [clear, rain]", "-p", "image_topics:=/front/image_raw"),
        *("-p", f"model:={missing}"),
    )
    assert proc.returncode == 1 and [line for line in _fatal_lines(proc) if missing in line], proc.stderr
    assert len(_fatal_lines(proc)) == 1, proc.stderr

    proc = _run(MODULES["caption_node"], "-p", "caption_period:=2", "-p", f"caption_model:={missing}")
    assert proc.returncode == 1 and len(_fatal_lines(proc)) == 1 and missing in proc.stderr, proc.stderr

    scalars = {"image_topics": "/front/image_raw", "template": "a photo of a {}.", "labels": "car"}
    scalars |= {"output_namespaces": "/front/scene", "tasks": "weather: [clear, rain]", "model": missing}
    scalars |= {"min_publish_period": 1, "smoothing": 0, "caption_period": 2, "caption_model": missing}
    proc = _run(MODULES["scene_vlm"], "--params-file", _params_file(tmp_path, scalars))
    lines = _fatal_lines(proc)
    # labels: car is taken as [car]: a value error (one label cannot be classified), not a type error.
    assert proc.returncode == 2 and len(lines) == 1 and "needs at least 2 labels" in lines[0], proc.stderr
    del scalars["labels"]
    proc = _run(MODULES["scene_vlm"], "--params-file", _params_file(tmp_path, scalars))
    assert proc.returncode == 1 and len(_fatal_lines(proc)) == 1 and missing in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-p", "labels:=car", "-p", "tasks:=''"], "task 'default' needs at least 2 labels"),
        (["-p", "tasks:=weather: [clear, rain", "-p", "labels:=[car, bus]"], "YAML"),
        (
            ["-p", "max_batch:=1.5"],
            "parameter 'max_batch' expects an integer, got double 1.5; e.g. -p max_batch:=8",
        ),
        (["-p", "heatmap:=1"], "parameter 'heatmap' expects a bool (true or false), got integer 1"),
    ],
)
def test_startup_errors_are_one_line(args: list[str], expected: str) -> None:
    proc = _run(MODULES["clip_node"], *args)
    lines = _fatal_lines(proc)
    assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("tasks:=weather: [clear, rain]", 'tasks:="weather: [clear, rain]"'),  # a map: text
        ("clip_node:tasks:=a: [b, c]", 'clip_node:tasks:="a: [b, c]"'),  # node-targeted
        ("tasks:=''", "tasks:=''"),  # already a quoted YAML string
        ("model:=1.0", 'model:="1.0"'),  # text stays text, not a double
        ("heatmap_label:=yes", 'heatmap_label:="yes"'),  # ... nor a bool
        ("labels:=[yes, 1, car]", 'labels:=["yes", "1", "car"]'),  # list items as typed
        ("labels:=[]", 'labels:=[""]'),  # rcl cannot type an empty list; [""] means none
        ("template:=a photo of a {}.", 'template:="a photo of a {}."'),
        ("max_batch:=4", "max_batch:=4"),  # numbers and bools are left to rcl
        ("max_batch:={a: 1}", 'max_batch:="{a: 1}"'),  # ... unless rcl cannot parse them
        ("use_sim_time:=true", "use_sim_time:=true"),  # not ours: untouched
        ("other:=a: 1", 'other:="a: 1"'),  # not ours, but a map would stop rclpy.init
    ],
)
def test_dash_p_values_are_quoted_as_meant(arg: str, expected: str) -> None:
    from av_scene_vlm.ros.ros_args import quote_param_args

    argv = ["clip_node", "--ros-args", "-p", arg, "--", "-p", arg]  # after `--`: not a ROS argument
    quoted = quote_param_args(argv, clip_node.PARAMETERS)
    assert quoted == ["clip_node", "--ros-args", "-p", expected, "--", "-p", arg]


# ---- runtime, over the parameter services of running node processes ---------------------------------

RUNTIME_ARGS = [
    # The start-up forms of the issue again, now with models that load: values are read back below.
    *("-p", "template:=a photo of a {}.", "-p", "min_publish_period:=1", "-p", "labels:=[car, bus]"),
    *("-p", "tasks:=weather: [clear, rain]", "-p", "heatmap:=false"),
    *("-p", "caption_max_new_tokens:=2", "-p", "caption_max_pixels:=12544"),
]


PROCESSES = {  # executable -> nodes it serves
    "clip_node": ["clip_node"],
    "caption_node": ["caption_node"],
    "scene_vlm": ["clip_node", "caption_node"],
}


@pytest.fixture(scope="module")
def running(tmp_path_factory, tiny_clip, tiny_qwen):
    """`running(executable)`: that executable, started with tiny models and the issue's `-p` forms.
    One at a time (scene_vlm's nodes have the same names as the others'): a different executable
    stops the previous one, and the cases below come grouped by executable, so each starts once."""
    current: dict[str, NodeProcess] = {}

    def get(executable: str) -> NodeProcess:
        if executable not in current:
            for other in list(current):
                out = current.pop(other).stop()
                assert "Traceback" not in out, out
            args = [*RUNTIME_ARGS, "-p", f"model:={tiny_clip}", "-p", f"caption_model:={tiny_qwen}"]
            args += ["-p", f"image_topics:=/{executable}_param_test/image_raw"]
            log = tmp_path_factory.mktemp("logs") / f"{executable}.log"
            current[executable] = NodeProcess(MODULES[executable], PROCESSES[executable], args, log)
        return current[executable]

    yield get
    for proc in current.values():
        out = proc.stop()
        assert "Traceback" not in out, out


def check_wrong_type_rejected(proc: NodeProcess, node: str, name: str) -> None:
    """A wrong type: rejected with the one line (read-only: as read-only); the old value stays;
    deletion is refused too; the node keeps running."""
    spec = TABLES[node][name]
    before = proc.get(node, name).value
    result = proc.set(node, name, WRONG[kind_of(spec[0])])
    assert not result.successful
    if spec[2]:  # read-only stays read-only
        assert "read-only" in result.reason, result.reason
    else:
        expected = f"parameter '{name}' expects {KIND_TEXT[kind_of(spec[0])]}, got "
        assert result.reason.startswith(expected), result.reason
        assert f"; e.g. ros2 param set /{node} {name} " in result.reason and "\n" not in result.reason
        deleted = proc.delete(node, name)
        assert not deleted.successful and "cannot be deleted" in deleted.reason, deleted.reason
    after = proc.get(node, name)
    assert after.value == before and after.type_ == Parameter.Type.from_parameter_value(spec[0])
    assert proc.proc.poll() is None, proc.output()


# Integers that are valid values of the double parameters (and differ from their values before).
VALID_INTS = {"smoothing": 0, "min_publish_period": 2, "heatmap_alpha": 1, "caption_period": 7}
VALID_INTS |= {"caption_scene_change_threshold": 1}


def check_converted(proc: NodeProcess, node: str, name: str) -> None:
    """An integer for a double, one string for a string list: accepted, stored as the declared type."""
    kind = kind_of(TABLES[node][name][0])
    before = proc.get(node, name).value
    if kind == "double":
        value = VALID_INTS.get(name, int(before))
        expected = float(value)
    else:
        value = "a dashcam photo of a {}." if name == "template" else "car"
        expected = [value]
    result = proc.set(node, name, value)
    if name == "labels":  # [car] alone is one label: the value is refused, for that reason only
        assert not result.successful and "at least 2 labels" in result.reason, result.reason
        return
    assert result.successful, result.reason
    after = proc.get(node, name)
    assert after.value == expected and after.type_ == Parameter.Type.from_parameter_value(expected)
    assert proc.set(node, name, before).successful


def check_start_up_forms_stored(proc: NodeProcess, node: str, name: str) -> None:
    """The issue's `-p` forms given at start-up were stored as the declared types."""
    assert proc.get(node, "template").value == ["a photo of a {}."]
    period = proc.get(node, "min_publish_period")
    assert period.type_ == Parameter.Type.DOUBLE and period.value == 1.0
    assert proc.get(node, "tasks").value == "weather: [clear, rain]"
    assert proc.get(node, "labels").value == ["car", "bus"]


def check_caption_period_auto_logged(proc: NodeProcess, node: str, name: str) -> None:
    """Point 5: no caption_period given -> auto; on this CPU-only machine 30 s, and the log says why."""
    assert proc.get(node, "caption_period").value == -1.0
    out = proc.output()
    assert re.search(r"caption_period auto: every 30 s, because the captioner runs on cpu", out), out
    assert "every 30 s with" in out, out


def _cases() -> list:
    cases = []
    for executable, nodes in PROCESSES.items():  # grouped by executable: each starts once
        for node in nodes:
            for name, spec in TABLES[node].items():
                cases.append((executable, node, name, check_wrong_type_rejected))
                if not spec[2] and kind_of(spec[0]) in ("double", "string list"):
                    cases.append((executable, node, name, check_converted))
            if node == "clip_node":
                cases.append((executable, node, "*", check_start_up_forms_stored))
            if node == "caption_node":
                cases.append((executable, node, "*", check_caption_period_auto_logged))
    return cases


@pytest.mark.parametrize(
    ("executable", "node", "name", "check"),
    _cases(),
    ids=lambda v: v.__name__.removeprefix("check_") if callable(v) else str(v),
)
def test_runtime_over_the_parameter_service(running, executable, node, name, check) -> None:
    check(running(executable), node, name)


def test_launch_defaults_pick_the_caption_period_by_device() -> None:
    """Point 5: the params file the launch file loads leaves caption_period on auto, which is 5 s on
    CUDA and 30 s on a CPU (the CPU branch runs for real in the runtime cases above)."""
    import torch
    from av_scene_vlm.ros.caption_node import auto_caption_period

    config = Path(__file__).resolve().parents[1] / "config" / "scene_vlm.yaml"
    params = yaml.safe_load(config.read_text())["/**"]["ros__parameters"]
    assert params["caption_period"] == -1.0 == caption_node.PARAMETERS["caption_period"][0]
    assert auto_caption_period(torch.device("cuda:0"))[0] == 5.0
    period, why = auto_caption_period(torch.device("cpu"))
    assert period == 30.0 and "cpu" in why


# ---- `tasks` written as a YAML map in a params file ---------------------------------------------------


def _nested_tasks_file(tmp_path: Path, tasks: dict, missing_model: str) -> str:
    """A params file as people write it from the README's schema: `tasks:` as a nested YAML map,
    under a node-name section (and the model under `/**`)."""
    path = tmp_path / "nested_tasks.yaml"
    doc = {
        "/**": {"ros__parameters": {"model": missing_model}},
        "clip_node": {"ros__parameters": {"tasks": tasks}},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def test_tasks_as_a_yaml_map_in_a_params_file_are_read(tmp_path: Path) -> None:
    """rcl would flatten the map into undeclared `tasks.weather`, ... and the node would drop it; the
    map is read as the tasks instead: a valid one gets as far as the (missing) model, an invalid one
    is named in the one-line error, and the rewritten copy of the file is removed."""
    missing = str(tmp_path / "no-model")
    before = set(Path(tempfile.gettempdir()).glob("av_scene_vlm_params_*"))
    road_user = {"car": ["a car."], "pedestrian": ["a baby crossing the road."]}
    valid = {"weather": ["clear", "rain"], "road_user": road_user}
    proc = _run(MODULES["clip_node"], "--params-file", _nested_tasks_file(tmp_path, valid, missing))
    assert proc.returncode == 1 and missing in proc.stderr and len(_fatal_lines(proc)) == 1, proc.stderr

    one_label = {"weather": ["clear"]}  # a task needs 2 labels: the error shows the map was read
    proc = _run(MODULES["scene_vlm"], "--params-file", _nested_tasks_file(tmp_path, one_label, missing))
    lines = _fatal_lines(proc)
    assert proc.returncode == 2 and len(lines) == 1 and "task 'weather' needs at least 2 labels" in lines[0]
    assert set(Path(tempfile.gettempdir()).glob("av_scene_vlm_params_*")) == before


def test_params_file_rewrite_leaves_other_files_alone(tmp_path: Path) -> None:
    from av_scene_vlm.ros.ros_args import params_files_with_yaml_text

    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"tasks": "weather: [clear, rain]"}}}))
    nested = _nested_tasks_file(tmp_path, {"weather": ["clear", "rain"]}, "m")
    argv = ["x", "--ros-args", "--params-file", str(plain), "--params-file", nested]
    argv += ["--", "--params-file", nested]  # after `--`: the program's own arguments
    out, temps = params_files_with_yaml_text(argv)
    try:
        assert out[:5] == argv[:5] and out[6:] == argv[6:]  # the plain file and the program's arguments
        assert len(temps) == 1 and out[5] == str(temps[0])
        doc = yaml.safe_load(temps[0].read_text())
        assert yaml.safe_load(doc["clip_node"]["ros__parameters"]["tasks"]) == {"weather": ["clear", "rain"]}
        assert doc["/**"]["ros__parameters"]["model"] == "m"
    finally:
        for temp in temps:
            temp.unlink()
