"""Finding the bags of a fleet on disk and naming each by its content.

Why a content hash: the same drive copied to another disk or renamed is the same drive; indexing it
again would duplicate every frame. A bag is identified by the SHA-256 of its storage files (in name
order; metadata.yaml is left out, since `ros2 bag reindex` rewrites it without changing the data).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from .errors import FleetError

STORAGE_SUFFIXES = (".mcap", ".db3")
_CHUNK = 1 << 20


def is_bag_dir(path: Path) -> bool:
    """A rosbag2 directory: it holds metadata.yaml."""
    return path.is_dir() and (path / "metadata.yaml").is_file()


def find_bags(paths: Iterable[str | Path]) -> list[Path]:
    """Every bag under `paths`, sorted and without duplicates.

    A path is a bag directory, a single .mcap/.db3 file, or a directory searched recursively: a
    directory with metadata.yaml is one bag (not searched further); loose .mcap/.db3 files are bags
    of their own (a .db3 without metadata.yaml is then reported as unreadable, not silently ignored).
    """
    found: dict[Path, None] = {}
    for entry in paths:
        p = Path(entry)
        if not p.exists():
            raise FleetError(f"'{p}' does not exist")
        if is_bag_dir(p) or p.is_file():
            found[p.resolve()] = None
            continue
        for root, dirs, files in os.walk(p):
            here = Path(root)
            if (here / "metadata.yaml").is_file():
                found[here.resolve()] = None
                dirs.clear()
                continue
            dirs.sort()
            for name in sorted(files):
                if name.endswith(STORAGE_SUFFIXES):
                    found[(here / name).resolve()] = None
    return sorted(found)


def storage_files(bag: Path) -> list[Path]:
    """The files whose bytes identify a bag (all files but metadata.yaml, in name order)."""
    if bag.is_file():
        return [bag]
    return sorted(p for p in bag.rglob("*") if p.is_file() and p.name != "metadata.yaml")


def content_hash(bag: str | Path) -> str:
    """SHA-256 (hex) over the bag's storage files, each as (size, bytes); names do not count."""
    path = Path(bag)
    h = hashlib.sha256()
    try:
        for f in storage_files(path):
            h.update(f"{f.stat().st_size}:".encode())
            with f.open("rb") as fh:
                while chunk := fh.read(_CHUNK):
                    h.update(chunk)
    except OSError as exc:
        raise FleetError(f"cannot read bag '{path}': {exc}") from None
    return h.hexdigest()
