"""The progress bar of the offline tools (`bag`, `index`): tqdm on stderr, so stdout stays parseable."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(total: int, name: str, enabled: bool) -> Any:
    """A frames bar named `name` (`total` 0: unknown), or a silent one when not `enabled`."""
    from tqdm import tqdm

    return tqdm(
        total=total or None,
        unit="frame",
        desc=name,
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
        leave=True,
    )
