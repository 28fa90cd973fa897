"""The random models' architectures, kept as data in `model_configs/*.json`."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

_FOLDER = "model_configs"


def config_names() -> list[str]:
    """Every config shipped in model_configs/ (file names without `.json`)."""
    folder = resources.files(__package__).joinpath(_FOLDER)
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


@cache
def _read(name: str) -> str:
    path = resources.files(__package__).joinpath(_FOLDER, f"{name}.json")
    if not path.is_file():
        raise KeyError(f"no random-model config {name!r}; shipped: {config_names()}")
    return path.read_text(encoding="utf-8")


def load_config(name: str) -> dict[str, Any]:
    """A fresh copy of `model_configs/<name>.json` (callers may change it)."""
    return json.loads(_read(name))
