"""The package runs on Python 3.10, Humble's (Ubuntu 22.04, still what Autoware runs).

No 3.10 interpreter can be installed here, so this is proved statically: vermin finds every syntax
feature, standard-library module, function and keyword argument newer than its target in the source,
and ruff (target-version py310, test_repo_quality.py) lints and formats for 3.10. The dev venv's
Python is 3.11; what runs there and not on 3.10 is what these checks catch.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TARGET = "3.10"
# The package (nodes, core, CLI, launch files, tests) and the scripts and benchmarks beside it.
SOURCES = ("av_scene_vlm", "scripts", "benchmarks")


def vermin(*paths: str | Path) -> subprocess.CompletedProcess:
    exe = shutil.which("vermin") or str(Path(sys.executable).parent / "vermin")
    assert Path(exe).exists(), "vermin is not installed (requirements/dev.txt)"
    return subprocess.run(
        [exe, f"-t={TARGET}-", "--violations", "--no-tips", "--eval-annotations", *map(str, paths)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_no_python_newer_than_310_is_needed() -> None:
    proc = vermin(*SOURCES)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_vermin_reports_what_310_lacks(tmp_path: Path) -> None:
    """The check can fail: 3.11-only standard library and syntax are reported."""
    newer = tmp_path / "newer.py"
    newer.write_text(
        "import tomllib\nfrom typing import Self\ntry:\n    pass\nexcept* ValueError:\n    pass\n"
    )
    proc = vermin(newer)
    assert proc.returncode != 0
    for feature in ("tomllib", "typing.Self", "except*"):
        assert feature in proc.stdout, proc.stdout


def test_declared_python_versions_agree() -> None:
    setup_py = (REPO / "av_scene_vlm" / "setup.py").read_text()
    assert re.search(r"python_requires=\">=3\.10\"", setup_py), "setup.py python_requires is not >=3.10"
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^target-version = "py310"$', pyproject, re.M), "ruff target-version is not py310"
