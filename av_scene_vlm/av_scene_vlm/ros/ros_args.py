"""The nodes' `--ros-args` as people type them, rewritten before `rclpy.init` reads them.

Why: rcl reads every `-p name:=value` as YAML and fails inside `rclpy.init` on a map, so `-p
tasks:="weather: [clear, rain]"` never reaches the node, and it turns `-p model:=1.0` into a number;
and it flattens a `tasks:` map in a params file into parameters no node declares. Here `-p` values
are quoted by the declared types and such params files are rewritten into temporary copies.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from av_scene_vlm.ros.parameters import ParamSpec, kind_of


def quote_param_args(args: Sequence[str], specs: Mapping[str, ParamSpec]) -> list[str]:
    """Rewrite `-p name:=value` arguments so rcl's parser keeps them as people mean them.

    rcl reads each value as YAML and fails in `rclpy.init` on a map, so `-p tasks:="weather: [clear,
    rain]"` never reaches the node; and it turns `-p model:=1.0` or `-p heatmap_label:=yes` into a
    number or a bool. Text and text-list parameters therefore get the value typed, quoted as a YAML
    string (a flow list of strings for a list); other parameters are quoted only when rcl could not
    parse them, so the node names the parameter and the type it expects.
    """
    out = list(args)
    for i in _ros_arg_values(out, ("-p", "--param")):
        out[i] = _quoted(out[i], specs)
    return out


def _ros_arg_values(args: Sequence[str], flags: Sequence[str]) -> list[int]:
    """Indices of the values that follow one of `flags` inside `--ros-args ... [--]`."""
    found, in_ros_args = [], False
    for i, arg in enumerate(args):
        if arg == "--ros-args":
            in_ros_args = True
        elif arg == "--":
            in_ros_args = False
        elif in_ros_args and arg in flags and i + 1 < len(args):
            found.append(i + 1)
    return found


def _quoted(assignment: str, specs: Mapping[str, ParamSpec]) -> str:
    target, sep, text = assignment.partition(":=")
    spec = specs.get(target.rsplit(":", 1)[-1])  # `node_name:param` targets one node
    if not sep:
        return assignment
    as_text = f"{target}:={json.dumps(text)}"
    try:
        typed = yaml.safe_load(text)
    except yaml.YAMLError:
        return as_text  # rcl could not parse it either; the node names the type it expects
    if spec is None:  # another node's parameter (a shared command line): only keep rcl alive
        return as_text if isinstance(typed, dict) else assignment
    kind = kind_of(spec[0])
    quoted = text.strip()[:1] in ("'", '"') and isinstance(typed, str)
    if kind == "string list" and isinstance(typed, list):
        items = yaml.load(text, Loader=yaml.BaseLoader)  # every item as the text typed
        if all(isinstance(v, str) for v in items):
            return f"{target}:={json.dumps(items or [''])}"  # rcl cannot type an empty list
        return assignment
    if kind in ("string", "string list"):
        return assignment if quoted else as_text
    return as_text if isinstance(typed, dict) else assignment


# Text parameters whose text is YAML: a map written under them in a params file is that YAML.
YAML_TEXT_PARAMETERS = ("tasks", "events")


def params_files_with_yaml_text(
    args: Sequence[str], names: Sequence[str] = YAML_TEXT_PARAMETERS
) -> tuple[list[str], list[Path]]:
    """Rewrite `--params-file F` arguments whose file holds a YAML map under a parameter of `names`
    (e.g. `tasks:` written as a nested map, as the README shows the schema) into a temporary copy
    holding that map as YAML text; returns the new arguments and the copies to delete after
    `rclpy.init` (rcl reads params files there).

    Why: rcl flattens a nested map into parameters `tasks.weather`, ... that no node declares, so
    the label sets would be dropped without a word; as text, `tasks` gets exactly what was written.
    """
    out, temps = list(args), []
    for i in _ros_arg_values(out, ("--params-file",)):
        rewritten = _yaml_text_maps(Path(out[i]), names)
        if rewritten is not None:
            fd, name = tempfile.mkstemp(prefix="av_scene_vlm_params_", suffix=".yaml")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                yaml.safe_dump(rewritten, f, sort_keys=False, allow_unicode=True)
            out[i] = name
            temps.append(Path(name))
    return out, temps


def _yaml_text_maps(path: Path, names: Sequence[str]) -> dict | None:
    """The params file with maps under `names` turned into YAML text; None when there are none (or
    the file cannot be read: rcl then reports it)."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    changed = False

    def visit(section: object) -> None:
        nonlocal changed
        if not isinstance(section, dict):
            return
        params = section.get("ros__parameters")
        if isinstance(params, dict):
            for name in names:
                if isinstance(params.get(name), dict):
                    params[name] = yaml.safe_dump(params[name], sort_keys=False, allow_unicode=True)
                    changed = True
        for key, value in section.items():
            if key != "ros__parameters":
                visit(value)  # node names nest under namespaces

    visit(doc)
    return doc if changed else None
