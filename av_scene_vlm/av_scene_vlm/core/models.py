"""Model loading shared by the engine, the captioner, the nodes and the CLIs.

Why one place: every front end must fail the same way when a model is missing (one clear message
naming the model and how to get it, never a hub traceback), honour HF_HUB_OFFLINE, never enable
remote code by default, and pick device/dtype by the same rules.

Importing this module does not import torch or transformers, so `ensure_available` can reject a
missing model in about a second, before the nodes pay several seconds for those imports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"
DEFAULT_CAPTION_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"
DEFAULT_PROMPT = (
    "Describe this driving scene in one sentence: road type, traffic participants, "
    "weather, lighting and any hazard."
)
# 448×448 px -> at most 16×16 merged patches = 256 visual tokens per image: enough detail for a
# one-sentence scene caption while keeping the 3B model's prefill well under the 1 s budget.
# (The checkpoint's own default, 12845056 px, allows up to 16384 visual tokens per image.)
DEFAULT_MAX_PIXELS = 448 * 448

_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


# huggingface_hub < 0.34 has only the old CLI name; >= 1.0 only `hf`.
OLD_CLI_NOTE = "with huggingface_hub older than 0.34: `huggingface-cli download`"


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message names it and says how to get it."""


def offline() -> bool:
    """True when the Hugging Face hub must not be contacted (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    return any(
        os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def how_to_get(model: str, example: str = DEFAULT_CLIP_MODEL) -> str:
    """The remedy printed with every load failure; `example` is a hub id of the right kind of model.

    Names `hf download`, the CLI huggingface_hub installs since 0.34 (and only it since 1.0);
    `huggingface-cli download` is given as the old name for older installs.
    """
    if _looks_like_path(model):
        return (
            f"'{model}' is not a directory holding a saved model (config.json + weights). Pass a "
            f"directory written by save_pretrained (e.g. `hf download {example} --local-dir DIR` on a "
            f"machine with network access; {OLD_CLI_NOTE}) or a Hugging Face hub id."
        )
    return (
        f"Download it on a machine with network access: `hf download {model} --local-dir DIR` "
        f"({OLD_CLI_NOTE}), then pass DIR as the model; or `hf download {model}` there and copy the "
        "Hugging Face cache (~/.cache/huggingface) here, keeping HF_HUB_OFFLINE=1."
    )


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or Path(model).expanduser().exists()


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; an explicit CUDA request without CUDA is an error."""
    import torch

    device = (device or "auto").strip().lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device '{device}' requested but CUDA is not available on this machine")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' -> float16 on CUDA (bfloat16 for captioning is chosen by the captioner), float32 on CPU."""
    import torch

    key = (dtype or "auto").strip().lower()
    if key == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if key not in _DTYPES:
        raise ModelLoadError(f"unknown dtype '{dtype}'; use auto, float32, float16 or bfloat16")
    if device.type == "cpu" and _DTYPES[key] == "float16":
        raise ModelLoadError("float16 is not supported on CPU; use float32 (or bfloat16)")
    return getattr(torch, _DTYPES[key])


def hub_reachable(timeout: float = 3.0) -> bool:
    """Quick TCP check of the hub endpoint, so a missing model fails in seconds, not after minutes
    of HTTP retries. With a proxy configured we cannot tell cheaply and let the download try.

    The probe runs on a daemon thread and is abandoned after `timeout`: the socket timeout does not
    cover name resolution, which can hang far longer on a vehicle with no DNS server in reach.
    """
    import socket
    import threading
    from urllib.parse import urlparse

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    address = (url.hostname or "huggingface.co", url.port or 443)
    answer: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(address, timeout=timeout):
                answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=probe, name="hub_reachable", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answer and answer[0])


def ensure_available(model: str, example: str = DEFAULT_CLIP_MODEL) -> str:
    """Where `model` will load from ("directory", "cache" or "hub"), checked without torch.

    Raises ModelLoadError, naming the model and how to get it, when it is neither a saved-model
    directory nor in the local Hugging Face cache and may not or cannot be downloaded. Nodes call it
    before their heavy imports so that a missing model fails start-up in about a second.
    """
    if _looks_like_path(model):
        if not Path(model).expanduser().is_dir():
            remedy = how_to_get(model, example)
            raise ModelLoadError(f"cannot load model '{model}': no such directory. {remedy}")
        return "directory"
    if _in_cache(model):
        return "cache"
    _check_download_allowed(model, example)
    return "hub"


def _in_cache(model: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(model, "config.json"), str)
    except ValueError:  # not a valid hub id (HFValidationError)
        return False


def _check_download_allowed(model: str, example: str) -> None:
    if offline():
        raise ModelLoadError(
            f"cannot load model '{model}': offline (HF_HUB_OFFLINE=1) and not in the local cache. "
            + how_to_get(model, example)
        )
    if not hub_reachable():
        raise ModelLoadError(
            f"cannot load model '{model}': not in the local cache and the Hugging Face hub is unreachable "
            f"from this machine. {how_to_get(model, example)}"
        )


def from_pretrained(cls: Any, model: str, *, example: str = DEFAULT_CLIP_MODEL, **kwargs: Any) -> Any:
    """`cls.from_pretrained` with the project's rules and errors (offline, no remote code).

    Order: a local directory; else the local Hugging Face cache (no network even when online);
    else, unless HF_HUB_OFFLINE is set and if the hub answers, a download. `example`: a hub id of
    the right kind of model, for the remedy in error messages.
    """
    source = ensure_available(model, example)
    kwargs.setdefault("trust_remote_code", False)
    if source == "directory":
        return _call(cls, str(Path(model).expanduser()), model, example, kwargs)
    if source == "cache":
        try:
            return cls.from_pretrained(model, **{**kwargs, "local_files_only": True})
        except (OSError, ValueError, KeyError):
            _check_download_allowed(model, example)  # the cache holds only part of it
    return _call(cls, model, model, example, kwargs)


def _call(cls: Any, source: str, model: str, example: str, kwargs: dict) -> Any:
    try:
        return cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError) as exc:  # hub, file and config errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot load model '{model}': {first}. {how_to_get(model, example)}") from None


@dataclass
class LoadedClip:
    """A CLIP-family model with its processor, on its device and dtype, in eval mode."""

    model: Any
    processor: Any
    model_id: str
    device: torch.device
    dtype: torch.dtype


def load_clip(model: str = DEFAULT_CLIP_MODEL, device: str = "auto", dtype: str = "auto") -> LoadedClip:
    """Load a CLIP-family checkpoint (hub id or local directory) through transformers."""
    from transformers import AutoModel, AutoProcessor

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    processor = from_pretrained(AutoProcessor, model)
    net = from_pretrained(AutoModel, model, dtype=dt, attn_implementation="sdpa")
    for part in ("vision_model", "visual_projection", "text_model", "text_projection", "logit_scale"):
        if not hasattr(net, part):
            raise ModelLoadError(
                f"model '{model}' ({type(net).__name__}) is not a CLIP-family model: it has no '{part}'"
            )
    net.to(dev).eval()
    return LoadedClip(model=net, processor=processor, model_id=model, device=dev, dtype=dt)
