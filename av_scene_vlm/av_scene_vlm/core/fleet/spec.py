"""What model a fleet job runs, as plain data: every worker (a Ray actor on another machine too)
builds the same engine from it, and the index records which model its embeddings come from.

The engine and captioner options are `core.engine_options` objects, the one place that builds models
from options: a new engine option reaches the workers without touching the pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine_options import CaptionerOptions, EngineOptions
from ..tasks import DEFAULT_TEMPLATES, Task

if TYPE_CHECKING:
    from ..captioner import Captioner
    from ..engine import ZeroShotEngine


def model_key(model: str) -> str:
    """The model id an index records: a local directory as its absolute path (so the index is
    searched with the same model from any working directory), a hub id unchanged."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else model


@dataclass(frozen=True)
class EngineSpec:
    """How to build the zero-shot engine (and optionally a captioner) of a fleet job, with its tasks."""

    engine: EngineOptions
    tasks: tuple[Task, ...] = ()
    templates: tuple[str, ...] = tuple(DEFAULT_TEMPLATES)
    caption: CaptionerOptions | None = None

    @classmethod
    def create(
        cls,
        model: str,
        *,
        tasks: Sequence[Task] = (),
        templates: Sequence[str] | None = None,
        caption_model: str | None = None,
        **options: Any,
    ) -> EngineSpec:
        """A spec with the model recorded as `model_key(model)`; other keywords are engine options
        (`EngineOptions` fields: device, dtype, backend, ...; others go to the engine as they are).
        The captioner runs on the engine's device."""
        known = {f.name for f in fields(EngineOptions)}
        engine = EngineOptions.from_values(
            {k: v for k, v in options.items() if k in known} | {"model": model_key(model)},
            **{k: v for k, v in options.items() if k not in known},
        )
        caption = None
        if caption_model:
            caption = CaptionerOptions(model=model_key(caption_model), device=engine.device)
        return cls(engine, tuple(tasks), tuple(templates or DEFAULT_TEMPLATES), caption)

    @property
    def model(self) -> str:
        """The model id the index records."""
        return self.engine.model

    def build(self) -> ZeroShotEngine:
        """Load the engine (ModelLoadError when the model cannot be found)."""
        return self.engine.build(self.tasks, self.templates)

    def build_captioner(self) -> Captioner | None:
        """The Qwen2.5-VL captioner when a caption model is set, else None."""
        return self.caption.build() if self.caption is not None else None
