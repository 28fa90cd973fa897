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
