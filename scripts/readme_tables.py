"""Generate (or check) the README's parameter tables from the nodes' PARAMETERS dicts.

    python scripts/readme_tables.py                  # rewrite the tables in README.md
    python scripts/readme_tables.py --check          # exit 1 if README.md is out of date (the tests run it)
    python scripts/readme_tables.py --check --readme OTHER.md

Why: the nodes declare each parameter once, with default, description and read-only flag; the README
tables are generated from that so they cannot drift. Every node must have its table: a README
without a node's `<!-- params:NODE -->` ... `<!-- /params -->` block fails the check (and cannot be
regenerated), so a node's parameters can never go undocumented because its marker is missing.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
NODES = {
    "clip_node": "av_scene_vlm.ros.clip_node",
    "caption_node": "av_scene_vlm.ros.caption_node",
    "scene_vlm": "av_scene_vlm.ros.scene_vlm",  # its own parameter; it also reads both tables above
}


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return "`" + str(value).lower() + "`"
    if isinstance(value, list):
        return "`[" + ", ".join(f"'{v}'" for v in value) + "]`"
    if value == "":
        return "`''`"
    return f"`{value}`"


# A node whose parameters repeat another's (same name, default and description: the camera inputs,
# diagnostics_period, use_cv_bridge, autostart) lists those in one generated line instead of repeating
# the rows, so the shared list can never miss one and the README stays short.
SHARES = {"caption_node": "clip_node"}


def split_shared(node: str) -> tuple[dict, list[str]]:
    """A node's own parameters, and the names it shares with the node of SHARES (identical specs)."""
    params = importlib.import_module(NODES[node]).PARAMETERS
    other = importlib.import_module(NODES[SHARES[node]]).PARAMETERS if node in SHARES else {}
    shared = [name for name, spec in params.items() if other.get(name) == spec]
    return {n: s for n, s in params.items() if n not in shared}, shared


def table(node: str) -> str:
    params, shared = split_shared(node)
    rows = ["| parameter | default | set at runtime | description |", "|---|---|---|---|"]
    for name, spec in params.items():
        default, desc, read_only = spec
        rows.append(f"| `{name}` | {_fmt(default)} | {'no' if read_only else 'yes'} | {desc} |")
    if shared:
        names = ", ".join(f"`{n}`" for n in shared)
        rows += [
            "",
            f"Shared with {SHARES[node]} (same name, default and meaning; one value under `/**` "
            f"sets both): {names}.",
        ]
    return "\n".join(rows)


def _pattern(node: str) -> re.Pattern[str]:
    # The block's body may not hold another marker, so one node's block never swallows the next.
    body = r"(?:(?!<!-- /?params)[\s\S])*?"
    return re.compile(rf"(<!-- params:{re.escape(node)} -->\n){body}(<!-- /params -->)")


def missing_tables(text: str) -> list[str]:
    """Nodes whose marked table block is absent (or present more than once)."""
    return [node for node in NODES if len(_pattern(node).findall(text)) != 1]


def render(text: str) -> str:
    for node in NODES:
        text = _pattern(node).sub(lambda m, node=node: m.group(1) + table(node) + "\n" + m.group(2), text)
    return text


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when out of date")
    parser.add_argument("--readme", type=Path, default=README, help="the README to check or rewrite")
    args = parser.parse_args(argv)
    current = args.readme.read_text()
    missing = missing_tables(current)
    if missing:
        for node in missing:
            print(
                f"{args.readme.name} needs exactly one parameter table for {node}: a block "
                f"'<!-- params:{node} -->' ... '<!-- /params -->' (then run python scripts/readme_tables.py)"
            )
        return 1
    updated = render(current)
    if args.check:
        if updated != current:
            print(f"{args.readme.name} parameter tables are out of date: run python scripts/readme_tables.py")
            return 1
        return 0
    args.readme.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
