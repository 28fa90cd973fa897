"""Launch files, RViz config and params file agree with the nodes, checked without `launch` installed.

`launch` / `launch_ros` exist only in a ROS install, so this reads the launch files' syntax trees: every
`Node(...)` of this package must name an installed console script, every parameter it sets must be one
the node declares (its module's PARAMETERS, plus the built-in use_sim_time), every params/RViz/launch
file it points into share/av_scene_vlm must exist and be installed, and every LaunchConfiguration must
be declared. The checks only follow what launch files of this package write literally (string constants,
dicts, names assigned in the same function); anything they cannot follow is reported, not skipped.
`test_checker_catches` proves the checker fails on typical typos, so a silent checker cannot pass.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib
import py_compile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from test_package_metadata import _setup_kwargs

PKG_DIR = Path(__file__).resolve().parents[1]
PACKAGE = "av_scene_vlm"
LAUNCH_FILES = sorted((PKG_DIR / "launch").glob("*.launch.py"))
RVIZ_FILE = PKG_DIR / "rviz" / "scene_vlm.rviz"
PARAMS_FILE = PKG_DIR / "config" / "scene_vlm.yaml"
BUILTIN_PARAMETERS = frozenset({"use_sim_time"})  # declared by rclpy.Node itself
SHARE_CALLS = ("FindPackageShare", "get_package_share_directory")


# ---- package facts --------------------------------------------------------------------------------
@functools.cache
def console_scripts() -> dict[str, str]:
    """Executable name -> module, from setup.py's console_scripts (a node script enters through
    `ros.signals`, which runs the node module named in its NODE_MODULES)."""
    from av_scene_vlm.ros.signals import NODE_MODULES

    scripts = {}
    for spec in _setup_kwargs()["entry_points"]["console_scripts"]:
        name, target = (s.strip() for s in spec.split("="))
        module, function = target.split(":")
        scripts[name] = NODE_MODULES[function] if module == f"{PACKAGE}.ros.signals" else module
    return scripts


@functools.cache
def installed_share_files() -> frozenset[str]:
    """Paths relative to share/av_scene_vlm that setup.py installs, e.g. 'config/scene_vlm.yaml'."""
    prefix = f"share/{PACKAGE}"
    out = set()
    for dest, files in _setup_kwargs()["data_files"]:
        if dest == prefix or dest.startswith(prefix + "/"):
            sub = dest[len(prefix) :].strip("/")
            out.update(f"{sub}/{Path(f).name}".strip("/") for f in files)
    return frozenset(out)


@functools.cache
def node_parameters(module: str) -> frozenset[str]:
    """Parameters a node module declares, plus the built-in use_sim_time.

    Its PARAMETERS dict (what the node loops over to declare), literal `declare_parameter("name", ...)`
    calls (e.g. scene_vlm's enable_caption), and, for an all-in-one module that runs other modules'
    node classes, theirs too.
    """
    mod = importlib.import_module(module)
    names = set(BUILTIN_PARAMETERS)
    params = getattr(mod, "PARAMETERS", None)
    if isinstance(params, dict):
        names |= set(params)
    names |= _literal_declares(ast.parse(Path(mod.__file__ or "").read_text()))
    from rclpy.node import Node  # node modules import rclpy anyway

    for obj in vars(mod).values():  # node classes imported from other node modules (all-in-one)
        home = obj.__module__ if isinstance(obj, type) and issubclass(obj, Node) else ""
        if home != module and home.startswith(f"{PACKAGE}.ros."):
            with contextlib.suppress(AttributeError):  # a base class (node_utils.WorkerNode) declares none
                names |= node_parameters(home)
    if names == BUILTIN_PARAMETERS:
        raise AttributeError(f"{module} declares no parameters (no PARAMETERS dict)")
    return frozenset(names)


def node_modules() -> list[str]:
    """Every node module that exists: console-script targets in av_scene_vlm.ros plus ros/*.py files
    that declare parameters (a node written but not yet registered still counts for the YAML)."""
    mods = {m for m in console_scripts().values() if m.startswith(f"{PACKAGE}.ros.")}
    for path in (PKG_DIR / PACKAGE / "ros").glob("*.py"):
        tree = ast.parse(path.read_text())
        if any(
            isinstance(n, ast.Assign | ast.AnnAssign)
            and any(isinstance(t, ast.Name) and t.id == "PARAMETERS" for t in _targets(n))
            for n in tree.body
        ) or _literal_declares(tree):
            mods.add(f"{PACKAGE}.ros.{path.stem}")
    return sorted(mods)


def _literal_declares(tree: ast.AST) -> set[str]:
    """Names of `declare_parameter("literal", ...)` calls."""
    return {
        c.args[0].value
        for c in ast.walk(tree)
        if isinstance(c, ast.Call)
        and _call_name(c) == "declare_parameter"
        and c.args
        and isinstance(c.args[0], ast.Constant)
        and isinstance(c.args[0].value, str)
    }


def _targets(node: ast.Assign | ast.AnnAssign) -> list[ast.expr]:
    return list(node.targets) if isinstance(node, ast.Assign) else [node.target]


# ---- launch file reader ---------------------------------------------------------------------------
def _call_name(node: ast.AST) -> str | None:
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _kw(call: ast.Call, name: str, position: int | None = None) -> ast.expr | None:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    if position is not None and len(call.args) > position:
        return call.args[position]
    return None


@dataclass
class LaunchFile:
    """Syntax-tree view of one launch file, resolving names assigned in the same function."""

    path: Path
    source: str
    tree: ast.Module = field(init=False)
    consts: dict[str, str] = field(init=False)
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tree = ast.parse(self.source, filename=str(self.path))
        self.consts = {
            n.targets[0].id: n.value.value
            for n in self.tree.body
            if isinstance(n, ast.Assign)
            and isinstance(n.targets[0], ast.Name)
            and isinstance(n.value, ast.Constant)
            and isinstance(n.value.value, str)
        }
        # innermost enclosing function of every node (ast.walk is breadth-first: inner defs win)
        self._scope: dict[int, ast.AST] = {}
        for fn in ast.walk(self.tree):
            if isinstance(fn, ast.FunctionDef):
                for n in ast.walk(fn):
                    self._scope[id(n)] = fn
        self.declared = self._declared()
        self.used = self._used()

    @classmethod
    def load(cls, name: str) -> LaunchFile:
        path = PKG_DIR / "launch" / name
        return cls(path, path.read_text())

    def problem(self, node: ast.AST | None, text: str) -> None:
        line = getattr(node, "lineno", "?")
        self.problems.append(f"{self.path.name}:{line}: {text}")

    def calls(self, name: str) -> list[ast.Call]:
        return [n for n in ast.walk(self.tree) if _call_name(n) == name]

    def scope(self, node: ast.AST) -> ast.AST:
        return self._scope.get(id(node), self.tree)

    def text(self, expr: ast.AST | None) -> str | None:
        """A string literal, or a module-level string constant such as PACKAGE."""
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return expr.value
        if isinstance(expr, ast.Name):
            return self.consts.get(expr.id)
        return None

    def assigned(self, name: str, scope: ast.AST) -> list[ast.expr]:
        """Values assigned to a plain name in `scope`, else at module level."""
        for where in (scope, self.tree):
            values = [
                n.value
                for n in ast.walk(where)
                if isinstance(n, ast.Assign | ast.AnnAssign)
                and n.value is not None
                and any(isinstance(t, ast.Name) and t.id == name for t in _targets(n))
            ]
            if values:
                return values
        return []

    # -- dicts of parameters ------------------------------------------------------------------------
    def is_dict(self, expr: ast.expr, scope: ast.AST) -> bool:
        if isinstance(expr, ast.Dict) or _call_name(expr) == "dict":
            return True
        if isinstance(expr, ast.Name):
            return any(self.is_dict(v, scope) for v in self.assigned(expr.id, scope))
        return False

    def dict_keys(self, expr: ast.expr, scope: ast.AST, seen: frozenset[str] = frozenset()) -> set[str]:
        """Every key a dict expression can hold: literals, ** unpacking, d[k] = v, d.update(...)."""
        keys: set[str] = set()
        if isinstance(expr, ast.Dict):
            for k, v in zip(expr.keys, expr.values, strict=True):
                if k is None:
                    keys |= self.dict_keys(v, scope, seen)
                elif (key := self.text(k)) is not None:
                    keys.add(key)
                else:
                    self.problem(k, "parameter name is not a string literal")
        elif _call_name(expr) == "dict" and isinstance(expr, ast.Call):
            for arg in expr.args:
                keys |= self.dict_keys(arg, scope, seen)
            for kw in expr.keywords:
                keys |= {kw.arg} if kw.arg else self.dict_keys(kw.value, scope, seen)
        elif isinstance(expr, ast.Name) and expr.id not in seen:
            seen = seen | {expr.id}
            for value in self.assigned(expr.id, scope):
                keys |= self.dict_keys(value, scope, seen)
            for n in ast.walk(scope):
                if isinstance(n, ast.Assign | ast.AnnAssign):
                    for t in _targets(n):
                        if (
                            isinstance(t, ast.Subscript)
                            and isinstance(t.value, ast.Name)
                            and t.value.id == expr.id
                        ):
                            if (key := self.text(t.slice)) is None:
                                self.problem(t, "parameter name is not a string literal")
                            else:
                                keys.add(key)
                elif (
                    isinstance(n, ast.Call)
                    and isinstance(n.func, ast.Attribute)
                    and isinstance(n.func.value, ast.Name)
                    and n.func.value.id == expr.id
                    and n.func.attr in ("update", "setdefault")
                ):
                    if n.func.attr == "setdefault":
                        keys |= {k for k in [self.text(n.args[0])] if k} if n.args else set()
                    else:
                        for arg in n.args:
                            keys |= self.dict_keys(arg, scope, seen)
                        keys |= {kw.arg for kw in n.keywords if kw.arg}
        elif not isinstance(expr, ast.Name):
            self.problem(expr, f"cannot read parameter names from {ast.unparse(expr)!r}")
        return keys

    def list_items(self, expr: ast.expr | None, scope: ast.AST) -> list[ast.expr]:
        """Items of a list literal or of a name bound to one (plus its .append/.extend calls)."""
        if isinstance(expr, ast.List | ast.Tuple):
            return list(expr.elts)
        if isinstance(expr, ast.Name):
            items = [i for v in self.assigned(expr.id, scope) for i in self.list_items(v, scope)]
            for n in ast.walk(scope):
                if (
                    isinstance(n, ast.Call)
                    and isinstance(n.func, ast.Attribute)
                    and isinstance(n.func.value, ast.Name)
                    and n.func.value.id == expr.id
                ):
                    if n.func.attr == "append":
                        items.extend(n.args)
                    elif n.func.attr == "extend" and n.args:
                        items.extend(self.list_items(n.args[0], scope))
            return items
        return []

    # -- launch arguments -----------------------------------------------------------------------------
    def _declared(self) -> dict[str, ast.Call]:
        out: dict[str, ast.Call] = {}
        for call in self.calls("DeclareLaunchArgument"):
            name = self.text(_kw(call, "name", 0))
            if name is None:
                self.problem(call, "DeclareLaunchArgument name is not a string literal")
            elif name in out:
                self.problem(call, f"launch argument {name!r} is declared twice")
            else:
                out[name] = call
        return out

    def _used(self) -> dict[str, ast.Call]:
        out: dict[str, ast.Call] = {}
        for call in self.calls("LaunchConfiguration"):
            name = self.text(_kw(call, "variable_name", 0))
            if name is None:
                self.problem(call, "LaunchConfiguration name is not a string literal")
            else:
                out.setdefault(name, call)
        return out

    # -- files in share/<package> -------------------------------------------------------------------
    def share_package(self, expr: ast.expr | None, scope: ast.AST) -> str | None:
        """The package of FindPackageShare(pkg) / get_package_share_directory(pkg), or a name for one."""
        if isinstance(expr, ast.Call) and _call_name(expr) in SHARE_CALLS:
            return self.text(_kw(expr, "package", 0))
        if isinstance(expr, ast.Name):
            for value in self.assigned(expr.id, scope):
                if (pkg := self.share_package(value, scope)) is not None:
                    return pkg
        return None

    def share_path(self, expr: ast.expr | None, scope: ast.AST, depth: int = 0) -> tuple[str, str] | None:
        """(package, 'folder/file') for a path into a package's share folder, following names,
        `.perform(context)`, LaunchConfiguration -> its declared default, str(...)."""
        if expr is None or depth > 8:
            return None
        if isinstance(expr, ast.Name):
            for value in self.assigned(expr.id, scope):
                if (found := self.share_path(value, scope, depth + 1)) is not None:
                    return found
            return None
        if not isinstance(expr, ast.Call):
            return None
        name = _call_name(expr)
        if name == "perform" and isinstance(expr.func, ast.Attribute):
            return self.share_path(expr.func.value, scope, depth + 1)
        if name == "str" and expr.args:
            return self.share_path(expr.args[0], scope, depth + 1)
        if name == "LaunchConfiguration":
            arg = self.declared.get(self.text(_kw(expr, "variable_name", 0)) or "")
            default = _kw(arg, "default_value") if arg is not None else None
            return self.share_path(default, self.scope(arg) if arg else scope, depth + 1)
        if name == "PathJoinSubstitution":
            parts = self.list_items(_kw(expr, "substitutions", 0), scope)
        elif name == "join":  # os.path.join(get_package_share_directory(pkg), ...)
            parts = list(expr.args)
        else:
            return None
        if not parts or (pkg := self.share_package(parts[0], scope)) is None:
            return None
        rest = [self.text(p) for p in parts[1:]]
        if any(r is None for r in rest):
            self.problem(expr, f"path parts are not string literals: {ast.unparse(expr)}")
            return None
        return pkg, "/".join(r.strip("/") for r in rest if r)  # type: ignore[union-attr]

    def check_share_file(
        self, node: ast.AST, found: tuple[str, str] | None, what: str, suffix: str | None = None
    ) -> None:
        """The traced file exists in this package, is installed, and (if given) has `suffix`."""
        if found is None:
            self.problem(node, f"{what}: cannot trace {ast.unparse(node)!r} to a file of share/{PACKAGE}")
            return
        pkg, rel = found
        if pkg != PACKAGE:
            return  # another package's file; not ours to check
        if suffix is not None and not rel.endswith(suffix):
            self.problem(node, f"{what} {rel!r} is not a {suffix} file")
        if not (PKG_DIR / rel).exists():
            self.problem(node, f"{what} {rel!r} does not exist in the package")
        elif rel not in installed_share_files():
            self.problem(node, f"{what} {rel!r} is not installed by setup.py data_files")


def check_launch_file(path: Path, source: str | None = None) -> list[str]:
    """Every problem found in one launch file (an empty list means it agrees with the package)."""
    lf = LaunchFile(path, path.read_text() if source is None else source)
    if not any(
        isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in lf.tree.body
    ):
        lf.problem(None, "no generate_launch_description()")
    declared = lf.declared
    for name, call in declared.items():
        if not lf.text(_kw(call, "description")):
            lf.problem(call, f"launch argument {name!r} has no description (shown by --show-args)")
    for name, call in lf.used.items():
        if name not in declared:
            lf.problem(call, f"LaunchConfiguration({name!r}) is not declared by DeclareLaunchArgument")

    for call in lf.calls("Node") + lf.calls("LifecycleNode"):
        scope = lf.scope(call)
        package, executable = lf.text(_kw(call, "package")), lf.text(_kw(call, "executable"))
        if package is None or executable is None:
            lf.problem(call, "Node package/executable must be string literals")
            continue
        params = lf.list_items(_kw(call, "parameters"), scope)
        keys: set[str] = set()
        for item in params:
            if lf.is_dict(item, scope):
                keys |= lf.dict_keys(item, scope)
            else:
                lf.check_share_file(item, lf.share_path(item, scope), f"{executable} params file", ".yaml")
        if "use_sim_time" not in keys:
            lf.problem(call, f"{executable} does not get use_sim_time (bag replay needs it on every node)")
        if package == "rviz2":
            args = [lf.text(a) for a in lf.list_items(_kw(call, "arguments"), scope)]
            items = lf.list_items(_kw(call, "arguments"), scope)
            if "-d" not in args or args.index("-d") + 1 >= len(items):
                lf.problem(call, "rviz2 is started without '-d <config>'")
            else:
                item = items[args.index("-d") + 1]
                lf.check_share_file(item, lf.share_path(item, scope), "rviz config", ".rviz")
        if package != PACKAGE:
            continue
        module = console_scripts().get(executable)
        if module is None:
            lf.problem(call, f"executable {executable!r} is not a console_scripts entry point of setup.py")
            continue
        try:
            known = node_parameters(module)
        except Exception as exc:  # the node module itself is broken or missing
            lf.problem(call, f"cannot read parameters of {executable} ({module}): {exc}")
            continue
        for key in sorted(keys - known):
            lf.problem(call, f"{executable} does not declare parameter {key!r}")

    # Every other path into our share folder (included launch files, RViz config defaults, ...).
    for call in lf.calls("PathJoinSubstitution") + lf.calls("join"):
        found = lf.share_path(call, lf.scope(call))
        if found is not None and found[0] == PACKAGE:
            lf.check_share_file(call, found, "file")

    includes_sim_time = False
    for call in lf.calls("IncludeLaunchDescription"):
        source_call = _kw(call, "launch_description_source", 0)
        target = source_call.args[0] if isinstance(source_call, ast.Call) and source_call.args else None
        found = lf.share_path(target, lf.scope(call)) if target is not None else None
        lf.check_share_file(call, found, "included launch file", ".launch.py")
        args = _kw(call, "launch_arguments")
        if (
            isinstance(args, ast.Call)
            and _call_name(args) == "items"
            and isinstance(args.func, ast.Attribute)
        ):
            args = args.func.value
        pairs = {}
        if isinstance(args, ast.Dict):
            pairs = {lf.text(k): lf.text(v) for k, v in zip(args.keys, args.values, strict=True)}
        elif isinstance(args, ast.List | ast.Tuple):
            pairs = {lf.text(t.elts[0]): lf.text(t.elts[1]) for t in args.elts if isinstance(t, ast.Tuple)}
        includes_sim_time |= pairs.get("use_sim_time") == "true"
        if found is not None and found[0] == PACKAGE and (PKG_DIR / found[1]).is_file():
            child = LaunchFile(PKG_DIR / found[1], (PKG_DIR / found[1]).read_text())
            for key in pairs:
                if key not in child.declared:
                    lf.problem(call, f"{found[1]} declares no launch argument {key!r}")

    for call in lf.calls("ExecuteProcess"):
        cmd = [lf.text(c) for c in lf.list_items(_kw(call, "cmd"), lf.scope(call))]
        if cmd[:3] == ["ros2", "bag", "play"]:
            if "--clock" not in cmd:
                lf.problem(call, "`ros2 bag play` without --clock: use_sim_time nodes would never tick")
            if not includes_sim_time:
                lf.problem(call, "`ros2 bag play` but the nodes are not included with use_sim_time 'true'")
    return lf.problems


# ---- tests ---------------------------------------------------------------------------------------
def test_launch_files_exist() -> None:
    names = {p.name for p in LAUNCH_FILES}
    assert {"scene_vlm.launch.py", "bag_replay.launch.py"} <= names, names


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_compiles(path: Path, tmp_path: Path) -> None:
    py_compile.compile(str(path), cfile=str(tmp_path / "out.pyc"), doraise=True)


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_agrees_with_package(path: Path) -> None:
    problems = check_launch_file(path)
    assert not problems, "\n".join(problems)


def test_scene_vlm_launch_starts_the_nodes() -> None:
    """The main launch file starts clip_node and caption_node (lifecycle nodes) with the arguments the
    README documents."""
    lf = LaunchFile.load("scene_vlm.launch.py")
    managed = {lf.text(_kw(c, "executable")) for c in lf.calls("LifecycleNode")}
    assert managed == {"clip_node", "caption_node"}
    assert {lf.text(_kw(c, "executable")) for c in lf.calls("Node")} == {"rviz2"}
    expected = {
        "image_topics",
        "namespace",
        "params_file",
        "use_sim_time",
        "enable_caption",
        "rviz",
        "autostart",
    }
    assert expected | {"model", "caption_model"} <= set(lf.declared)
    defaults = {name: lf.text(_kw(call, "default_value")) for name, call in lf.declared.items()}
    assert defaults["use_sim_time"] == "false"
    assert defaults["enable_caption"] == "true"
    assert defaults["rviz"] == "false"
    assert defaults["autostart"] == "true"
    assert defaults["model"] == defaults["caption_model"] == ""  # empty = keep the params file


def test_bag_replay_plays_with_clock() -> None:
    lf = LaunchFile.load("bag_replay.launch.py")
    assert {"bag", "rate", "loop"} <= set(lf.declared)
    cmds = [
        [lf.text(c) for c in lf.list_items(_kw(call, "cmd"), lf.scope(call))]
        for call in lf.calls("ExecuteProcess")
    ]
    assert any(c[:3] == ["ros2", "bag", "play"] and "--clock" in c for c in cmds), cmds
    assert lf.calls("IncludeLaunchDescription"), "bag_replay must include scene_vlm.launch.py"


MUTANTS = [
    ("scene_vlm.launch.py", 'executable="clip_node"', 'executable="clip_nod"', "'clip_nod'"),
    ("scene_vlm.launch.py", 'clip_params["model"]', 'clip_params["modle"]', "'modle'"),
    ("scene_vlm.launch.py", '"use_sim_time": use_sim_time}', '"use_sim_tim": use_sim_time}', "use_sim_tim"),
    ("scene_vlm.launch.py", '"config", "scene_vlm.yaml"', '"config", "scene_vlm.yml"', "scene_vlm.yml"),
    ("scene_vlm.launch.py", '"rviz", "scene_vlm.rviz"', '"rviz", "vlm.rviz"', "vlm.rviz"),
    ("scene_vlm.launch.py", 'LaunchConfiguration("model")', 'LaunchConfiguration("models")', "'models'"),
    ("bag_replay.launch.py", '"--clock", ', "", "--clock"),
    ("bag_replay.launch.py", '{"use_sim_time": "true"}', '{"use_sim_time": "false"}', "use_sim_time"),
    ("bag_replay.launch.py", '{"use_sim_time": "true"}', '{"use_sim_tme": "true"}', "'use_sim_tme'"),
]


@pytest.mark.parametrize(("name", "old", "new", "needle"), MUTANTS, ids=lambda v: str(v)[:24])
def test_checker_catches(name: str, old: str, new: str, needle: str) -> None:
    """A typo planted in a launch file must produce a problem naming it (guards the checker itself)."""
    path = PKG_DIR / "launch" / name
    source = path.read_text()
    assert old in source, f"{name} no longer contains {old!r}: update MUTANTS to match the launch file"
    problems = check_launch_file(path, source.replace(old, new, 1))
    assert any(needle in p for p in problems), f"planted {new!r} not reported; problems: {problems}"


def test_params_file_keys_are_declared_by_a_node() -> None:
    """Every key in the vehicle defaults is declared by some node: a typo would be silently ignored."""
    known = set(BUILTIN_PARAMETERS)
    for module in node_modules():
        known |= node_parameters(module)
    doc = yaml.safe_load(PARAMS_FILE.read_text())
    assert isinstance(doc, dict) and doc, f"{PARAMS_FILE} is empty"
    for node_name, section in doc.items():
        params = section.get("ros__parameters") if isinstance(section, dict) else None
        assert isinstance(params, dict), f"{node_name}: no ros__parameters mapping"
        unknown = sorted(set(params) - known)
        assert not unknown, f"{node_name}: no node ({', '.join(node_modules())}) declares {unknown}"


def test_rviz_config_shows_camera_and_heatmap() -> None:
    """The RViz config parses and shows the default camera and the heatmap clip_node publishes for it."""
    from av_scene_vlm.core.naming import output_topic

    rviz = yaml.safe_load(RVIZ_FILE.read_text())
    manager = rviz["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"]
    images = [d for d in manager["Displays"] if d.get("Class") == "rviz_default_plugins/Image"]
    topics = {d["Topic"]["Value"] for d in images if d.get("Enabled")}
    camera = yaml.safe_load(PARAMS_FILE.read_text())["/**"]["ros__parameters"]["image_topics"][0]
    assert camera == "/camera/image_raw"
    assert {camera, output_topic(camera, "heatmap")} <= topics, topics
    assert output_topic(camera, "heatmap") == "/camera/scene/heatmap"
    for d in images:  # best effort matches drivers, bag play and clip_node's reliable publisher
        assert d["Topic"]["Reliability Policy"] == "Best Effort", d["Name"]
    assert rviz["Window Geometry"]["Width"] >= 800 and rviz["Window Geometry"]["Height"] >= 600
