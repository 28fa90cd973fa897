"""scripts/build_msgs.sh is idempotent: running it again on a venv it already built into succeeds.

`make` re-runs it when a .msg file changes. The wheels' .cmake fix-up it starts with finds nothing to fix
the second time (grep exits 1), which under `set -euo pipefail` used to end the script with status 1
and no message. Here it runs again on the test venv itself, into the build directory make used (an
incremental CMake build of the same sources: the venv ends up as it was).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)
BUILD = VENV / "build" / "av_scene_vlm_msgs"  # where the Makefile builds the messages

pytestmark = pytest.mark.skipif(
    not (VENV / ".stamps" / "msgs").is_file(), reason="not a venv set up by make (no .stamps/msgs)"
)


def test_second_run_on_the_same_venv_succeeds() -> None:
    unfixed = [
        p
        for p in (VENV / "share").rglob("*.cmake")
        if "/opt/python/cp311-cp311" in p.read_text(errors="replace")
    ]
    assert not unfixed, f"make left .cmake files unfixed: {unfixed[:3]}"  # so grep will find nothing
    env = dict(
        os.environ, VIRTUAL_ENV=str(VENV), PATH=f"{VENV / 'bin'}:{os.environ['PATH']}", BUILD_DIR=str(BUILD)
    )
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "build_msgs.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "av_scene_vlm_msgs built: " in proc.stdout
    assert "ClassificationArray" in proc.stdout
