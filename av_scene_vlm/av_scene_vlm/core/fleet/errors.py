"""The fleet index's exception, and the check for its optional dependencies (LanceDB, Ray)."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

# Lance logs routine events ("dataset will be created") as warnings on stderr; set before its import.
for _var in ("LANCE_LOG", "LANCEDB_LOG"):
    os.environ.setdefault(_var, "error")

EXTRA_HINT = "install the optional extra: pip install 'av_scene_vlm[fleet]' (LanceDB and Ray)"


class FleetError(Exception):
    """The index cannot be built, opened or searched; the message says why and what to do."""


class StorageError(FleetError):
    """The index's storage failed under a write (disk full, read-only or unwritable directory,
    object store unreachable): not the command line's fault, so `index` exits 1 rather than 2."""


def require(module: str) -> ModuleType:
    """Import an optional dependency, or FleetError naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        raise FleetError(f"{top} is not installed ({exc}); {EXTRA_HINT}") from None
