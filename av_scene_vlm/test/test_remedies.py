"""Remedies name commands that exist (issue 11, point 3): `hf download`, the CLI the pinned
huggingface_hub installs; `huggingface-cli` appears only as the old name for older installs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from av_scene_vlm.core.models import DEFAULT_CAPTION_MODEL, how_to_get

REPO = Path(__file__).resolve().parents[2]
MISSING_MODEL_ARGS = ("-p", "model:=acme/no-such-clip", "-p", "labels:=[car, truck]")


def _hf() -> str:
    hf = shutil.which("hf", path=str(Path(sys.executable).parent)) or shutil.which("hf")
    assert hf, "huggingface_hub installs no `hf` command here"
    return hf


def test_the_named_command_exists_and_downloads() -> None:
    proc = subprocess.run([_hf(), "download", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--local-dir" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("model", ["acme/no-such-model", "/no/such/dir"])
def test_remedy_names_hf_download_first(model: str) -> None:
    remedy = how_to_get(model, DEFAULT_CAPTION_MODEL)
    assert "`hf download " in remedy
    # The old name only after the new one, and only as the name older installs use.
    if "huggingface-cli" in remedy:
        assert remedy.index("`hf download ") < remedy.index("huggingface-cli")
        assert "older than 0.34: `huggingface-cli download`" in remedy


def test_node_prints_the_hf_remedy() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "av_scene_vlm.ros.clip_node", "--ros-args", *MISSING_MODEL_ARGS],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "`hf download acme/no-such-clip --local-dir DIR`" in out, out


def test_readme_names_hf_download_and_the_old_name_only_as_such() -> None:
    text = (REPO / "README.md").read_text()
    assert "hf download openai/clip-vit-base-patch32" in text
    for line in [ln for ln in text.splitlines() if "huggingface-cli" in ln]:
        assert "older" in line, line
