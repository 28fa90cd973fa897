"""Loading the Qwen2.5-VL captioner and resolving its device-dependent options (dtype, attention,
compiled decoding), apart from the captioner so that module stays about captioning.

Why attention and compile are resolved together: flash_attention_2 and compiled decoding do not mix
(core/caption_cache.check_attn_for_compile), so `auto` attention is sdpa when decoding is compiled,
`auto` compile is off when flash_attention_2 is asked for, and both explicit is refused.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from av_scene_vlm.core.backend_options import check_switch
from av_scene_vlm.core.caption_cache import check_attn_for_compile
from av_scene_vlm.core.models import (
    DEFAULT_CAPTION_MODEL,
    OLD_CLI_NOTE,
    ModelLoadError,
    from_pretrained,
    resolve_dtype,
)
from av_scene_vlm.core.precision import cpu_supports


def resolve_caption_dtype(
    dtype: str, device: torch.device, checkpoint_dtype: str | None = None
) -> torch.dtype:
    """'auto' -> bfloat16 on CUDA (float16 where bf16 is unsupported). On a CPU: the checkpoint's own
    bfloat16 (Qwen2.5-VL is published in bf16: fp32 only upcasts it) where the CPU has AVX512_BF16 or
    AMX-BF16 (measured 2.6x the fp32 tokens/s on the 3B architecture, the same text: docs/PRECISION.md),
    else float32 (a CPU without them emulates bf16, slower than fp32; $AV_SCENE_VLM_CPU_FLAGS simulates
    another CPU)."""
    if (dtype or "auto").strip().lower() != "auto":
        return resolve_dtype(dtype, device)
    if device.type != "cuda":
        native = (checkpoint_dtype or "").removeprefix("torch.") == "bfloat16"
        return torch.bfloat16 if native and cpu_supports("bf16") else torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def config_dtype(config: Any) -> str | None:
    """The dtype a checkpoint's config declares ('bfloat16' for Qwen/Qwen2.5-VL-3B-Instruct)."""
    value = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return None if value is None else str(value).removeprefix("torch.")


def resolve_attn_implementation(
    attn_implementation: str, device: torch.device, dtype: torch.dtype, compiled: bool = False
) -> str:
    """'auto' -> flash_attention_2 if flash_attn is installed and usable (CUDA, fp16/bf16) and decoding
    is not compiled (core/caption_cache.check_attn_for_compile says why), else sdpa."""
    attn = (attn_implementation or "auto").strip().lower()
    if attn != "auto":
        return attn
    if (
        not compiled
        and device.type == "cuda"
        and dtype in (torch.float16, torch.bfloat16)
        and importlib.util.find_spec("flash_attn") is not None
    ):
        return "flash_attention_2"
    return "sdpa"


def resolve_compile(mode: str, device: torch.device, attn_implementation: str = "auto") -> bool:
    """'auto' -> compile (static cache + compiled decode step) on CUDA unless flash_attention_2 was
    asked for; 'on'/'off' as given ('on' with flash_attention_2: ValueError)."""
    key = check_switch("compile", mode or "auto")
    check_attn_for_compile(attn_implementation, key)
    fa2 = (attn_implementation or "").strip().lower() == "flash_attention_2"
    return key == "on" or (key == "auto" and device.type == "cuda" and not fa2)


@contextmanager
def _load_errors(model: str) -> Iterator[None]:
    """Every failure to load `model` as one ModelLoadError naming it, with the remedy."""
    try:
        yield
    except ModelLoadError as exc:
        message = str(exc)
        if "hf download" not in message:
            message += (
                f" A Qwen2.5-VL checkpoint is fetched with `hf download {DEFAULT_CAPTION_MODEL}"
                f" --local-dir DIR` on a machine with network access ({OLD_CLI_NOTE}); then pass DIR"
                " as the model."
            )
        raise ModelLoadError(message) from None
    except ImportError as exc:
        raise ModelLoadError(
            f"cannot load model '{model}': {exc}. Qwen2.5-VL's processor needs torchvision "
            "(a requirement of av_scene_vlm: install the torchvision built for your torch); "
            "flash_attention_2 needs the flash_attn package."
        ) from None


def load_captioner(
    model: str, device: torch.device, dtype: str, attn_implementation: str, compiled: bool
) -> tuple[Any, Any]:
    """Load model + processor, turning every failure into a ModelLoadError naming `model`. The config is
    read once, first: its dtype decides `auto` on a CPU (`resolve_caption_dtype`), and the dtype the
    attention (`resolve_attn_implementation`). A bad `dtype` value is refused before anything loads."""
    if (dtype or "auto").strip().lower() != "auto":
        resolve_dtype(dtype, device)
    with _load_errors(model):
        from transformers import AutoConfig, AutoProcessor, Qwen2_5_VLForConditionalGeneration

        config = from_pretrained(AutoConfig, model, example=DEFAULT_CAPTION_MODEL)
        if getattr(config, "model_type", None) != "qwen2_5_vl":
            raise ModelLoadError(
                f"model '{model}' is a '{getattr(config, 'model_type', '?')}' checkpoint, "
                f"not Qwen2.5-VL (e.g. {DEFAULT_CAPTION_MODEL})"
            )
    dt = resolve_caption_dtype(dtype, device, config_dtype(config))
    attn = resolve_attn_implementation(attn_implementation, device, dt, compiled)
    with _load_errors(model):
        processor = from_pretrained(AutoProcessor, model, example=DEFAULT_CAPTION_MODEL)
        net = from_pretrained(
            Qwen2_5_VLForConditionalGeneration,
            model,
            example=DEFAULT_CAPTION_MODEL,
            config=config,
            dtype=dt,
            attn_implementation=attn,
        )
    return net.to(device).eval(), processor
