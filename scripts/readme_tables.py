"""Generate (or check) the README's parameter tables from the nodes' PARAMETERS dicts.

    python scripts/readme_tables.py          # rewrite the tables in README.md
    python scripts/readme_tables.py --check  # exit 1 if README.md is out of date (used by the tests)

Why: the nodes declare each parameter once, with default, description and read-only flag; the README
tables are generated from that so they cannot drift.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
NODES = {"clip_node": "av_scene_vlm.ros.clip_node", "caption_node": "av_scene_vlm.ros.caption_node"}


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return "`" + str(value).lower() + "`"
    if isinstance(value, list):
        return "`[" + ", ".join(f"'{v}'" for v in value) + "]`"
    if value == "":
        return "`''`"
    return f"`{value}`"


def table(node: str) -> str:
    params = importlib.import_module(NODES[node]).PARAMETERS
    rows = ["| parameter | default | set at runtime | description |", "|---|---|---|---|"]
    for name, (default, desc, read_only) in params.items():
        rows.append(f"| `{name}` | {_fmt(default)} | {'no' if read_only else 'yes'} | {desc} |")
    return "\n".join(rows)


def render(text: str) -> str:
    for node in NODES:
        pattern = re.compile(rf"(<!-- params:{node} -->\n).*?(\n<!-- /params -->)", re.S)
        text = pattern.sub(lambda m, node=node: m.group(1) + table(node) + m.group(2), text)
    return text


def main(argv: list[str]) -> int:
    current = README.read_text()
    updated = render(current)
    if "--check" in argv:
        if updated != current:
            print("README.md parameter tables are out of date: run python scripts/readme_tables.py")
            return 1
        return 0
    README.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
