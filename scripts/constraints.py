#!/usr/bin/env python3
"""The exact-version files of the dev/CI venvs (requirements/constraints*.txt), for the Makefile.

Why a script: Kilted (the default) and Jazzy share every pin but the ROS 2 ones, so
`constraints-jazzy.txt` holds only what differs and `merge` lays it over `constraints.txt`; `lock`
writes those files from `pip freeze`, leaving out what pip cannot install by name (this package,
the launch kit's local wheels, composition_interfaces built by the kit with CMake).

    python scripts/constraints.py merge requirements/constraints.txt [requirements/constraints-jazzy.txt]
    pip freeze --exclude-editable | python scripts/constraints.py lock kilted|jazzy
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements"
BASE = "kilted"  # the distro whose versions constraints.txt holds
# Not installable by name from an index: built here, or local wheels of ../shared/ros-launch.
NOT_PINNED = ("av-scene-vlm", "composition-interfaces")


def name(line: str) -> str:
    """The normalized distribution name of a requirement line ('' for comments and blanks)."""
    line = line.split("#", 1)[0].strip()
    if not line:
        return ""
    return re.sub(r"[-_.]+", "-", re.split(r"[\s=<>!~;@\[]", line, maxsplit=1)[0]).lower()


def merge(base: list[str], override: list[str]) -> list[str]:
    """`base` with every line whose distribution `override` pins replaced by the override's lines."""
    replaced = {name(line) for line in override} - {""}
    kept = [line for line in base if name(line) not in replaced]
    return kept + [line for line in override if name(line)]


def pinnable(line: str) -> bool:
    """A `pip freeze` line that belongs in a constraints file."""
    key = name(line)
    return bool(key) and " @ " not in line and not key.startswith(NOT_PINNED)


def lock(freeze: list[str], distro: str) -> tuple[Path, list[str]]:
    """The constraints file for `distro` and its new lines, from the venv's `pip freeze`."""
    pins = [line for line in freeze if pinnable(line)]
    base_file = REQUIREMENTS / "constraints.txt"
    base = base_file.read_text().splitlines()
    if distro == BASE:
        header = [line for line in base[:2] if line.startswith("#")]
        return base_file, header + pins
    known = set(base)
    header = [
        f"# ROS 2 {distro.capitalize()}: the exact versions that differ from constraints.txt.",
        f"# make lays them over constraints.txt; regenerate: make lock ROS_DISTRO={distro}",
    ]
    return REQUIREMENTS / f"constraints-{distro}.txt", header + [p for p in pins if p not in known]


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "merge":
        files = [Path(a).read_text().splitlines() for a in argv[1:]]
        out = files[0]
        for override in files[1:]:
            out = merge(out, override)
        print("\n".join(out))
        return 0
    if len(argv) == 2 and argv[0] == "lock":
        path, lines = lock(sys.stdin.read().splitlines(), argv[1])
        path.write_text("\n".join(lines) + "\n")
        print(f"wrote {path} ({sum(1 for line in lines if name(line))} pins)")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
