"""The one place that turns options into models: CLIP engines (`EngineOptions`) and captioners
(`CaptionerOptions`), for the nodes, the CLIs, `bag` and `index` alike.

Why: the nodes read these options from parameters, the CLIs from flags and the fleet job ships them
to Ray workers; each used to check and forward them on its own. Here each option is a field: `check`
validates all of them before anything heavy (no torch import: a typo or a missing model fails in a
second), and `build` passes every field to the model's constructor by name, so a new engine option
(`cuda_graphs`, `compile`) is one field here plus the flag or parameter that sets it. `extra` carries
constructor keywords that have no field (tests, benchmarks: `onnx_cache_dir=...`).

Both are frozen and picklable (a Ray actor builds its engine from them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from .backend_options import check_options, check_switch
from .caption_cache import DEFAULT_PROMPT_TOKEN_BUDGET, check_attn_for_compile
from .models import DEFAULT_CAPTION_MODEL, DEFAULT_CLIP_MODEL, DEFAULT_MAX_PIXELS, DEFAULT_PROMPT

if TYPE_CHECKING:
    from .captioner import Captioner
    from .engine import ZeroShotEngine
    from .tasks import Task

_NOT_KEYWORDS = ("model", "extra")  # fields that are not constructor keywords of the same name


def _pick(cls: type, values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The fields of `cls` found in `values` under `prefix + name`; lists become tuples (frozen)."""
    out = {}
    for f in fields(cls):
        key = prefix + f.name
        if f.name != "extra" and key in values:
            value = values[key]
            out[f.name] = tuple(value) if isinstance(value, list) else value
    return out


@dataclass(frozen=True)
class EngineOptions:
    """How to build a `ZeroShotEngine`: the CLIP model and every engine option but the label sets."""

    model: str = DEFAULT_CLIP_MODEL
    device: str = "auto"
    dtype: str = "auto"
    backend: str = "auto"
    onnx_providers: tuple[str, ...] = ("auto",)
    onnx_threads: int = 0
    cuda_graphs: str = "auto"
    cuda_graphs_memory_mb: float = 0.0
    precision: str = "auto"
    extra: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_values(cls, values: Mapping[str, Any], prefix: str = "", **extra: Any) -> EngineOptions:
        """From parameter values or parsed flags (`vars(args)`): every field present under its name
        (`prefix` + name); `extra`: other constructor keywords."""
        picked = _pick(cls, values, prefix)
        if "onnx_providers" in picked:  # ROS string arrays hold "" for none
            picked["onnx_providers"] = tuple(p for p in picked["onnx_providers"] if str(p).strip()) or (
                "auto",
            )
        return cls(**picked, extra=tuple(sorted(extra.items())))

    def validate(self) -> None:
        """Every option valid (BackendError), without torch and without looking for the model."""
        check_options(self.backend, self.onnx_providers, self.onnx_threads, self.cuda_graphs, self.precision)
        if self.cuda_graphs_memory_mb < 0:
            raise ValueError(
                f"cuda_graphs_memory_mb must be >= 0 (0 = auto), got {self.cuda_graphs_memory_mb:g}"
            )

    def check(self, validated: bool = False) -> None:
        """Every option valid (unless already `validated`) and the model there (BackendError /
        ModelLoadError), without torch."""
        from .models import ensure_available

        if not validated:
            self.validate()
        ensure_available(self.model)

    def engine_kwargs(self) -> dict[str, Any]:
        """The constructor keywords: every field but the model, by name, and `extra`."""
        kwargs = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_KEYWORDS}
        return {**kwargs, **dict(self.extra)}

    def build(self, tasks: Sequence[Task] = (), templates: Sequence[str] | None = None) -> ZeroShotEngine:
        """Load the engine with these label sets (ModelLoadError when the model cannot be loaded)."""
        from .engine import ZeroShotEngine
        from .tasks import DEFAULT_TEMPLATES

        return ZeroShotEngine(
            self.model, tasks=tasks, templates=templates or DEFAULT_TEMPLATES, **self.engine_kwargs()
        )


@dataclass(frozen=True)
class CaptionerOptions:
    """How to build a `Captioner`: the Qwen2.5-VL model and its generation options.

    `min_pixels` / `max_pixels` 0 mean the checkpoint's own bounds (as the node's parameters say)."""

    model: str = DEFAULT_CAPTION_MODEL
    prompt: str = DEFAULT_PROMPT
    max_new_tokens: int = 64
    min_pixels: int = 0
    max_pixels: int = DEFAULT_MAX_PIXELS
    device: str = "auto"
    dtype: str = "auto"
    attn_implementation: str = "auto"
    compile: str = "auto"
    prompt_token_budget: int = DEFAULT_PROMPT_TOKEN_BUDGET
    extra: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_values(cls, values: Mapping[str, Any], prefix: str = "", **extra: Any) -> CaptionerOptions:
        """From parameter values (`prefix` "caption_": caption_model, caption_device, ...) or flags."""
        picked = {k: v for k, v in _pick(cls, values, prefix).items() if v is not None}
        return cls(**picked, extra=tuple(sorted(extra.items())))

    def validate(self) -> None:
        """The pixel bounds and the compile switch valid (ValueError), without torch and without looking
        for the model."""
        if self.min_pixels < 0 or self.max_pixels < 0:
            raise ValueError("caption_min_pixels and caption_max_pixels must be >= 0 (0 = the checkpoint's)")
        check_switch("caption_compile", self.compile)
        check_attn_for_compile(self.attn_implementation, self.compile)
        if self.prompt_token_budget < 1:
            raise ValueError(f"caption_prompt_token_budget must be >= 1, got {self.prompt_token_budget}")

    def check(self, validated: bool = False) -> None:
        """The bounds valid (unless already `validated`) and the model there (ValueError /
        ModelLoadError), without torch."""
        from .models import ensure_available

        if not validated:
            self.validate()
        ensure_available(self.model, DEFAULT_CAPTION_MODEL)

    def build(self) -> Captioner:
        """Load the captioner (ModelLoadError when the model cannot be loaded, ValueError for bounds)."""
        from .captioner import Captioner

        kwargs = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_KEYWORDS}
        kwargs["min_pixels"] = self.min_pixels or None
        kwargs["max_pixels"] = self.max_pixels or None
        return Captioner(self.model, **kwargs, **dict(self.extra))
