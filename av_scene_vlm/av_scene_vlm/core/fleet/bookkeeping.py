"""Bookkeeping shared by the two ways of running a fleet job (in this process and on Ray): the run's
summary, a bag of the run, and how a skipped or failed bag is reported.

Why a module of its own: `index` (the local loop, which starts the Ray path) and `ray_index` both
report bags the same way; kept in either, the two modules would import each other.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class IndexSummary:
    """What `index_bags` did."""

    db: str
    model_id: str
    bags: int  # found
    indexed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already indexed (same content)
    failed: dict[str, str] = field(default_factory=dict)  # bag -> reason
    frames: int = 0  # rows added by this run
    bad_frames: int = 0
    rows: int = 0  # rows in the index after the run
    seconds: float = 0.0
    fps: float = 0.0
    ann_index: bool = False  # the index has an ANN index after the run
    ann_built: bool = False  # this run built it


@dataclass
class BagTask:
    """One bag of the run, named by its content."""

    path: Path
    bag_hash: str = ""


def skip_if_done(task: BagTask, done: dict[str, str], summary: IndexSummary, bar: Any, expected: int) -> bool:
    """True (and the bag is reported skipped) when its content is already in the index or was seen
    earlier in this run (a copy of another bag)."""
    if task.bag_hash in done:
        summary.skipped.append(str(task.path))
        if bar.total:
            bar.total = max(0, bar.total - expected)
            bar.refresh()
        return True
    done[task.bag_hash] = str(task.path)
    return False


def fail(task: BagTask, why: str, summary: IndexSummary, bar: Any) -> None:
    """Report a bag that could not be indexed (on stderr above the bar, and in the summary)."""
    summary.failed[str(task.path)] = why
    if not bar.disable:  # with a bar, say it now; the summary lists it at the end anyway
        bar.write(
            f"skipped {why}" if str(task.path) in why else f"skipped '{task.path}': {why}", file=sys.stderr
        )
