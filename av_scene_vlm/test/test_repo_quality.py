"""Repository hygiene that CI enforces: ruff-clean code and README tables generated from the nodes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed")
def test_ruff_check_and_format() -> None:
    check = subprocess.run(["ruff", "check", "."], cwd=REPO, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = subprocess.run(["ruff", "format", "--check", "."], cwd=REPO, capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_readme_parameter_tables_are_generated_from_the_nodes() -> None:
    pytest.importorskip("rclpy")
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "readme_tables.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    readme = (REPO / "README.md").read_text()
    for command in ("make demo", "make test", "colcon build"):
        assert command in readme


def test_ci_runs_the_readme_test_command() -> None:
    commands = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert "make test" in commands  # Kilted, the default
    assert "make test ROS_DISTRO=jazzy" in commands


# ---- structure: no import cycles in the core, no oversized module --------------------------------------

PACKAGE_DIR = REPO / "av_scene_vlm" / "av_scene_vlm"
MAX_MODULE_LINES = 400  # "no module over ~400 lines": one concern per module, readable in one sitting


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package modules it imports, at module level or inside functions (a lazy import
    still makes the two modules depend on each other)."""
    import ast

    modules = {_module_name(p): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{parent}.{base}" if base else parent
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_in_the_core() -> None:
    core = import_graph(PACKAGE_DIR / "core")
    assert core["av_scene_vlm.core.engine"], "the import graph found no imports: the walker is broken"
    assert cycles(core) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_over_400_lines() -> None:
    sizes = {
        str(p.relative_to(REPO)): len(p.read_text().splitlines())
        for p in [*PACKAGE_DIR.rglob("*.py"), *(REPO / "av_scene_vlm" / "launch").glob("*.py")]
    }
    assert {p: n for p, n in sizes.items() if n > MAX_MODULE_LINES} == {}
