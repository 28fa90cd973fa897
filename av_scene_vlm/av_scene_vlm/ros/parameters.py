"""Parameter types as people type them: declare, coerce and explain the nodes' parameters in one place.

Why: rclpy types a parameter by its default and rejects any other type, with a traceback at start-up
and at runtime with a reason that names neither the parameter nor a value that would work; and rcl's
`-p name:=value` parser cannot hold a YAML map, so `-p tasks:="weather: [clear, rain]"` fails inside
`rclpy.init`. Here, everywhere a value comes from (`-p`, params files, launch, `ros2 param set`):
- an integer where a double is declared becomes that double, and one string where a string list is
  declared becomes a list of one; `-p` values of text parameters stay the text that was typed;
- anything else is one line naming the parameter, the type expected and an example: start-up stops
  with exit code 2 (`run_nodes`), a runtime change is rejected with that line and the old value stays.

Parameters are declared with `dynamic_typing` so that rclpy lets every value through to `coerce`,
which checks it against the type of the declared default; stored values always have that type
(start-up and, where rclpy has pre-set callbacks, runtime; `WorkerNode._p` coerces on read too).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

# name -> (default, description, read_only). The declared type is the default's.
ParamSpec = tuple[object, str, bool]
# name -> a value of the declared type shown in type errors where the default makes a poor example.
Examples = Mapping[str, object]


class ParameterTypeError(ValueError):
    """A parameter value of a type that cannot stand for the declared one."""

    def __init__(self, name: str, spec: ParamSpec, value: object, example: object = None) -> None:
        self.name, self.spec, self.value = name, spec, value
        self.example = example_of(spec) if example is None else example
        super().__init__(self.line())

    def line(self, how: str = "startup", node: str = "/node") -> str:
        """The one-line message; `how`: 'startup' (-p / params file) or 'runtime' (ros2 param set)."""
        expected = KIND_TEXT[kind_of(self.spec[0])]
        example = self.example
        got = "no value (parameters cannot be deleted)" if self.value is None else describe(self.value)
        if how == "runtime":
            hint = f"ros2 param set {node} {self.name} {_shell(_runtime_text(example))}"
        else:
            cli = example if isinstance(example, str) else _yaml_text(example)  # `-p` text stays text
            hint = f"-p {self.name}:={_shell(cli)}, or in a params file {self.name}: {_yaml_text(example)}"
        return f"parameter '{self.name}' expects {expected}, got {got}; e.g. {hint}"


class ParameterTypeErrors(ValueError):
    """Every parameter of a node whose start-up value has the wrong type (one line each)."""

    def __init__(self, errors: Sequence[ParameterTypeError]) -> None:
        unique = {e.line(): e for e in errors}  # a shared parameter checked by two nodes: one line
        self.errors = list(unique.values())
        super().__init__("\n".join(e.line() for e in self.errors))


KIND_TEXT = {
    "bool": "a bool (true or false)",
    "integer": "an integer",
    "double": "a double (a number; an integer is taken too)",
    "string": "a string",
    "string list": "a string list (one string is taken as a list of one)",
}


def kind_of(default: object) -> str:
    """The declared type of a parameter, from its default."""
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "integer"
    if isinstance(default, float):
        return "double"
    if isinstance(default, str):
        return "string"
    if isinstance(default, (list, tuple)) and all(isinstance(v, str) for v in default):
        return "string list"
    raise TypeError(f"unsupported parameter default {default!r}")


def example_of(spec: ParamSpec) -> object:
    """A value of the right type to show in messages when no example is given: a non-empty default."""
    default = spec[0]
    kind = kind_of(default)
    if kind == "string list" and not any(str(v).strip() for v in default):
        return ["a", "b"]
    if kind == "string" and not default:
        return "text"
    return list(default) if kind == "string list" else default


def describe(value: object) -> str:
    """'string 'abc'', 'integer 5', 'integer list [1, 2]': how a rejected value is named."""
    if isinstance(value, bool):
        return f"bool {str(value).lower()}"
    if isinstance(value, (int, float, str)):
        name = {int: "integer", float: "double", str: "string"}[type(value)]
        return f"{name} {_short(repr(value))}"
    if isinstance(value, (bytes, bytearray)):
        return f"bytes {_short(repr(bytes(value)))}"
    items = list(value) if isinstance(value, Sequence) or hasattr(value, "tolist") else [value]
    if not items:
        return "an empty list"
    item_kinds = {type(v).__name__ for v in items}
    inner = {"bool": "bool", "int": "integer", "float": "double", "str": "string", "bytes": "byte"}
    label = inner.get(next(iter(item_kinds)), "mixed") if len(item_kinds) == 1 else "mixed"
    return f"{label} list {_short(repr(items))}"


def _short(text: str, limit: int = 80) -> str:
    """A value shown in a one-line message: long YAML texts cut, so the line stays readable."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def coerce(name: str, value: object, spec: ParamSpec, example: object = None) -> object:
    """`value` as the declared type of parameter `name`, or ParameterTypeError (showing `example`)."""
    kind = kind_of(spec[0])
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "integer" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "double" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind == "string" and isinstance(value, str):
        return value
    if kind == "string list":
        if isinstance(value, str):
            return [value]
        if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
            return list(value)  # an empty list arrives as a byte array; all() holds for it too
    raise ParameterTypeError(name, spec, value, example)


def _same(a: object, b: object) -> bool:
    return type(a) is type(b) and a == b


def declare_parameters(node: Node, specs: Mapping[str, ParamSpec], examples: Examples | None = None) -> None:
    """Declare every parameter (description, read-only flag) and type-check its start-up value.

    Raises ParameterTypeErrors listing every parameter whose value has the wrong type. A value that
    `coerce` converts is stored converted, so `ros2 param get` shows the declared type. Runtime
    changes are converted by a pre-set callback (rclpy >= Iron) and type-checked by an on-set one.
    """
    examples = examples or {}
    errors = []
    for name, spec in specs.items():
        default, desc, read_only = spec
        constraint = f"type: {kind_of(default)}"
        node.declare_parameter(
            name,
            default,
            ParameterDescriptor(description=desc, additional_constraints=constraint, dynamic_typing=True),
        )
        value = node.get_parameter(name).value
        try:
            typed = coerce(name, value, spec, examples.get(name))
        except ParameterTypeError as exc:
            errors.append(exc)
            continue
        if not _same(typed, value):
            node.set_parameters([Parameter(name, value=typed)])
        if read_only:  # set after the value: rclpy refuses every change of a read-only parameter
            node.set_descriptor(
                name,
                ParameterDescriptor(
                    description=desc, additional_constraints=constraint, read_only=True, dynamic_typing=True
                ),
            )
    if errors:
        raise ParameterTypeErrors(errors)
    if hasattr(node, "add_pre_set_parameters_callback"):  # rclpy >= Iron; on Humble _p() converts
        node.add_pre_set_parameters_callback(lambda params: _converted(params, specs))
    node.add_on_set_parameters_callback(lambda params: _type_check(params, specs, node, examples))


_TYPE_IDS = {
    "bool": ParameterType.PARAMETER_BOOL,
    "integer": ParameterType.PARAMETER_INTEGER,
    "double": ParameterType.PARAMETER_DOUBLE,
    "string": ParameterType.PARAMETER_STRING,
    "string list": ParameterType.PARAMETER_STRING_ARRAY,
}


def restore_declared_types(node: Node, params: list[Parameter], specs: Mapping[str, ParamSpec]) -> None:
    """Reset the descriptors' type to the declared one; call first in an on-set callback.

    Why: with dynamic typing rclpy writes the type of a *proposed* value into the stored descriptor
    before the callbacks run, and leaves it there when they reject the value, so `ros2 param
    describe` would show 'string' for an integer parameter after a rejected `set ... abc`.
    """
    for param in params:
        spec = specs.get(param.name)
        if spec is not None and node.has_parameter(param.name):
            node.describe_parameter(param.name).type = _TYPE_IDS[kind_of(spec[0])]


def _converted(params: list[Parameter], specs: Mapping[str, ParamSpec]) -> list[Parameter]:
    """Pre-set callback: convertible values to the declared type; others pass on to be rejected."""
    out = []
    for param in params:
        spec = specs.get(param.name)
        if spec is not None and param.type_ != Parameter.Type.NOT_SET:
            try:
                typed = coerce(param.name, param.value, spec)
            except ParameterTypeError:
                typed = param.value
            if not _same(typed, param.value):
                param = Parameter(param.name, value=typed)
        out.append(param)
    return out


def _type_check(
    params: list[Parameter], specs: Mapping[str, ParamSpec], node: Node, examples: Examples
) -> SetParametersResult:
    """On-set callback: reject a value of the wrong type (or a deletion) with the one-line reason."""
    restore_declared_types(node, params, specs)
    for param in params:
        if param.name in specs:
            try:
                coerce(param.name, param.value, specs[param.name], examples.get(param.name))
            except ParameterTypeError as exc:
                return SetParametersResult(
                    successful=False, reason=exc.line("runtime", node.get_fully_qualified_name())
                )
    return SetParametersResult(successful=True)


def typed_value(node: Node, name: str, specs: Mapping[str, ParamSpec]) -> Any:
    """The parameter's value as its declared type (rclpy without pre-set callbacks stores it as set)."""
    value = node.get_parameter(name).value
    spec = specs.get(name)
    return value if spec is None else coerce(name, value, spec)


# ---- `-p name:=value` before rclpy.init ------------------------------------------------------------


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
YAML_TEXT_PARAMETERS = ("tasks",)


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


# ---- how examples are written ----------------------------------------------------------------------


def _yaml_text(value: object) -> str:
    """A value as YAML flow text: 0.5, true, [a, b], text (quoted only where YAML needs it)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip()


def _runtime_text(value: object) -> str:
    """What to type after `ros2 param set NODE NAME`: ros2 reads it as YAML, so text that YAML would
    read as something else (a map, a number) is quoted inside."""
    if isinstance(value, str):
        try:
            plain = isinstance(yaml.safe_load(value), str)
        except yaml.YAMLError:
            plain = True  # ros2 falls back to the text
        return value if plain else "'" + value.replace("'", "''") + "'"
    return _yaml_text(value)


def _shell(text: str) -> str:
    """Quote for a POSIX shell when needed (spaces, brackets, quotes)."""
    if text and all(c.isalnum() or c in "-_./:=+,@%" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`") + '"'
