"""What model a fleet job runs, as plain data: every worker (a Ray actor on another machine too)
builds the same engine from it, and the index records which model its embeddings come from.

`options` are passed to the engine's constructor unchanged, so a new engine option (a backend, say)
reaches the workers without touching the pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..tasks import DEFAULT_TEMPLATES, Task

if TYPE_CHECKING:
    from ..engine import ZeroShotEngine


def model_key(model: str) -> str:
    """The model id an index records: a local directory as its absolute path (so the index is
    searched with the same model from any working directory), a hub id unchanged."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else model


@dataclass(frozen=True)
class EngineSpec:
    """How to build the zero-shot engine (and optionally a captioner) of a fleet job."""

    model: str
    device: str = "auto"
    dtype: str = "auto"
    tasks: tuple[Task, ...] = ()
    templates: tuple[str, ...] = tuple(DEFAULT_TEMPLATES)
    options: tuple[tuple[str, Any], ...] = ()
    caption_model: str | None = None

    @classmethod
    def create(
        cls,
        model: str,
        *,
        tasks: Sequence[Task] = (),
        templates: Sequence[str] | None = None,
        device: str = "auto",
        dtype: str = "auto",
        caption_model: str | None = None,
        **options: Any,
    ) -> EngineSpec:
        """A spec with the model recorded as `model_key(model)`; extra keywords go to the engine."""
        return cls(
            model=model_key(model),
            device=device,
            dtype=dtype,
            tasks=tuple(tasks),
            templates=tuple(templates or DEFAULT_TEMPLATES),
            options=tuple(sorted(options.items())),
            caption_model=model_key(caption_model) if caption_model else None,
        )

    def build(self) -> ZeroShotEngine:
        """Load the engine (ModelLoadError when the model cannot be found)."""
        from ..engine import ZeroShotEngine

        return ZeroShotEngine(
            self.model,
            device=self.device,
            dtype=self.dtype,
            tasks=list(self.tasks),
            templates=self.templates,
            **dict(self.options),
        )

    def build_captioner(self) -> Any | None:
        """The Qwen2.5-VL captioner when a caption model is set, else None."""
        if not self.caption_model:
            return None
        from ..captioner import Captioner

        return Captioner(self.caption_model, device=self.device)
