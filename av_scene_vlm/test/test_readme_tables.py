"""Every parameter documented (issue 11, point 2): the README's generated tables cover every node,
`scripts/readme_tables.py --check` fails when a node's table or its marker is missing or stale, and
the README's example params file uses parameters the nodes declare, with the declared types."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "readme_tables.py"
README = REPO / "README.md"


def _check(readme: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "--readme", str(readme)], capture_output=True, text=True
    )


def test_check_passes_on_the_readme() -> None:
    proc = _check(README)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("node", ["clip_node", "caption_node", "scene_vlm"])
def test_check_fails_without_a_nodes_table(tmp_path: Path, node: str) -> None:
    """The issue's case: a README without the caption_node table (marker and all) must fail."""
    text = README.read_text()
    block = re.compile(rf"<!-- params:{node} -->\n.*?<!-- /params -->\n", re.S)
    without, count = block.subn("", text)
    assert count == 1
    copy = tmp_path / "README.md"
    copy.write_text(without)
    proc = _check(copy)
    assert proc.returncode == 1 and f"parameter table for {node}" in proc.stdout, proc.stdout


def test_check_fails_on_a_stale_table(tmp_path: Path) -> None:
    copy = tmp_path / "README.md"
    copy.write_text(README.read_text().replace("| `caption_nice` | `10` |", "| `caption_nice` | `5` |"))
    proc = _check(copy)
    assert proc.returncode == 1 and "out of date" in proc.stdout, proc.stdout


def test_every_parameter_has_a_row() -> None:
    from av_scene_vlm.ros import caption_node, clip_node, scene_vlm

    text = README.read_text()
    for node, table in (
        ("clip_node", clip_node.PARAMETERS),
        ("caption_node", caption_node.PARAMETERS),
        ("scene_vlm", scene_vlm.PARAMETERS),
    ):
        block = text.split(f"<!-- params:{node} -->", 1)[1].split("<!-- /params -->", 1)[0]
        lines = block.strip().splitlines()
        rows = [line for line in lines[2:] if line.startswith("| `")]
        shared = [line for line in lines if line.startswith("Shared with clip_node")]
        named = re.findall(r"`([^`]+)`", shared[0].split(":", 1)[1]) if shared else []
        listed = [re.match(r"\| `([^`]+)`", row).group(1) for row in rows]
        assert listed == [name for name in table if name not in named], node  # in declaration order
        assert sorted(listed + named) == sorted(table), node
        for name in named:  # listed as shared only where it is the very same parameter
            assert table[name] == clip_node.PARAMETERS[name], name
    shared = text.split("<!-- params:caption_node -->", 1)[1].split("<!-- /params -->", 1)[0]
    for name in ("image_topics", "max_frame_pixels", "diagnostics_period", "use_cv_bridge", "autostart"):
        assert f"`{name}`" in shared.split("Shared with clip_node", 1)[1], name  # the issue-30 omissions


def test_example_params_file_uses_declared_parameters_with_their_types() -> None:
    """The example beside the `caption_` explanation: `/**` keys are declared by some node, node
    sections' keys by that node, and every value has (or converts to) the declared type."""
    from av_scene_vlm.ros import caption_node, clip_node, scene_vlm
    from av_scene_vlm.ros.parameters import coerce

    text = (REPO / "docs" / "NODES.md").read_text().split("<!-- example-params -->", 1)[1]  # moved (issue 30)
    example = yaml.safe_load(re.search(r"```yaml\n(.*?)```", text, re.S).group(1))
    tables = {"clip_node": clip_node.PARAMETERS, "caption_node": caption_node.PARAMETERS}
    assert set(example) == {"/**", "clip_node"}
    for section, body in example.items():
        allowed = scene_vlm.ALL_PARAMETERS if section == "/**" else tables[section]
        for name, value in body["ros__parameters"].items():
            assert name in allowed, (section, name)
            coerce(name, value, allowed[name])
    assert any(name.startswith("caption_") for name in example["/**"]["ros__parameters"])
