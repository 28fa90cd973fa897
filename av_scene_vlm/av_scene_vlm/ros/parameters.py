"""Parameter types as people type them: declare, coerce and explain the nodes' parameters in one place.

Why: rclpy types a parameter by its default and rejects any other type, with a traceback at start-up
and at runtime with a reason that names neither the parameter nor a value that would work; and rcl's
`-p name:=value` parser cannot hold a YAML map, so `-p tasks:="weather: [clear, rain]"` fails inside
`rclpy.init` (`ros_args` quotes such values first). Here, everywhere a value comes from (`-p`, params
files, launch, `ros2 param set`):
- an integer where a double is declared becomes that double, and one string where a string list is
  declared becomes a list of one; `-p` values of text parameters stay the text that was typed;
- anything else is one line naming the parameter, the type expected and an example: start-up stops
  with exit code 2 (`run_nodes`; a lifecycle node that is not auto-started fails `configure` with
  it), a runtime change is rejected with that line and the old value stays.

Parameters are declared with `dynamic_typing` so that rclpy lets every value through to `coerce`,
which checks it against the type of the declared default; stored values always have that type
(start-up and, where rclpy has pre-set callbacks, runtime; `typed_values` coerces on read too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def declare_parameters(
    node: Node,
    specs: Mapping[str, ParamSpec],
    examples: Examples | None = None,
    *,
    strict: bool = True,
    read_only: bool = True,
) -> list[ParameterTypeError]:
    """Declare every parameter (description, read-only flag) and type-check its start-up value.

    `strict`: raise ParameterTypeErrors listing every parameter whose value has the wrong type; else
    return them (a lifecycle node reports them when it is configured, and can be fixed meanwhile).
    A value that `coerce` converts is stored converted, so `ros2 param get` shows the declared type.
    `read_only`: apply the specs' read-only flags now (a lifecycle node locks them once configured:
    `set_read_only`). Runtime changes are converted by a pre-set callback (rclpy >= Iron) and
    type-checked by an on-set one.
    """
    examples = examples or {}
    errors = []
    for name, spec in specs.items():
        default, desc, _ = spec
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
    if errors and strict:
        raise ParameterTypeErrors(errors)
    if read_only:  # after the values: rclpy refuses every change of a read-only parameter
        set_read_only(node, specs, True)
    if hasattr(node, "add_pre_set_parameters_callback"):  # rclpy >= Iron; on Humble _p() converts
        node.add_pre_set_parameters_callback(lambda params: _converted(params, specs))
    node.add_on_set_parameters_callback(lambda params: _type_check(params, specs, node, examples))
    return errors


def set_read_only(node: Node, specs: Mapping[str, ParamSpec], locked: bool) -> None:
    """Lock (or unlock) the parameters whose spec says read-only. A lifecycle node reads them when it
    is configured: they can be changed while it is unconfigured, and are read-only from configure to
    cleanup. (rclpy's set_descriptor refuses to touch a read-only parameter, so the stored descriptor
    is changed in place, as `restore_declared_types` does.)"""
    for name, (_, _, read_only) in specs.items():
        if read_only and node.has_parameter(name):
            node.describe_parameter(name).read_only = locked


def typed_values(
    node: Node, specs: Mapping[str, ParamSpec], examples: Examples | None = None
) -> dict[str, Any]:
    """Every parameter of `specs` as its declared type; ParameterTypeErrors lists each that has none."""
    values, errors = {}, []
    for name, spec in specs.items():
        try:
            values[name] = coerce(name, node.get_parameter(name).value, spec, (examples or {}).get(name))
        except ParameterTypeError as exc:
            errors.append(exc)
    if errors:
        raise ParameterTypeErrors(errors)
    return values


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
