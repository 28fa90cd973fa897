"""The image-tower runtime options (`backend`, `onnx_providers`, `onnx_threads`, `cuda_graphs`;
`precision` in core/precision.py),
checked without torch.

Why a module of its own: the nodes and CLIs validate these before their heavy imports, so a typo
fails start-up in a second, like a missing model does; it imports neither torch nor onnxruntime.
Whether a provider is actually available is checked when the engine builds its session.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from .models import ModelLoadError

BACKENDS = ("auto", "torch", "onnxruntime")
PRECISIONS = ("auto", "fp32", "bf16", "int8")  # the image tower's; `auto` is decided in core/precision.py
_PRECISION_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "qint8": "int8"}
CUDA_GRAPH_MODES = ("auto", "on", "off")
_SWITCH = {"true": "on", "yes": "on", "1": "on", "false": "off", "no": "off", "0": "off"}
# Short names users type -> ONNX Runtime's provider names (full names are accepted as they are).
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}
KNOWN_PROVIDERS = tuple(dict.fromkeys(PROVIDER_ALIASES.values()))


class BackendError(ModelLoadError):
    """A backend or provider cannot be used here; the message says why and what can be."""


def check_backend(backend: str) -> str:
    """'auto', 'torch' or 'onnxruntime' (case-insensitive; 'onnx' and 'ort' also mean onnxruntime)."""
    key = (backend or "auto").strip().lower()
    key = {"onnx": "onnxruntime", "ort": "onnxruntime"}.get(key, key)
    if key not in BACKENDS:
        raise BackendError(f"unknown backend '{backend}'; use one of {', '.join(BACKENDS)}")
    return key


def check_precision(precision: str) -> str:
    """'auto', 'fp32', 'bf16' or 'int8' (case-insensitive; float32 / bfloat16 also accepted)."""
    key = str(precision or "auto").strip().lower()
    key = _PRECISION_ALIASES.get(key, key)
    if key not in PRECISIONS:
        raise BackendError(f"unknown precision '{precision}'; use one of {', '.join(PRECISIONS)}")
    return key


def normalize_providers(providers: Sequence[str] | str | None) -> tuple[str, ...]:
    """Provider names in ONNX Runtime's spelling, in order; ('auto',) when none are given.

    'auto' picks by device when the session is built (CPU on a CPU device, CUDA on a GPU).
    """
    names = [providers] if isinstance(providers, str) else list(providers or [])
    names = [n.strip() for n in names if n and n.strip()]
    if not names or [n.lower() for n in names] == ["auto"]:
        return ("auto",)
    out: list[str] = []
    for name in names:
        full = PROVIDER_ALIASES.get(name.lower(), name)
        if name.lower() == "auto":
            raise BackendError("onnx_providers: 'auto' cannot be combined with other providers")
        if not full.endswith("ExecutionProvider"):
            valid = ", ".join([*PROVIDER_ALIASES, *KNOWN_PROVIDERS])
            raise BackendError(f"unknown ONNX Runtime provider '{name}'; use auto or one of {valid}")
        if full not in out:
            out.append(full)
    return tuple(out)


def check_threads(threads: int) -> int:
    """Intra-op threads for ONNX Runtime: 0 = as many as torch uses, else a positive count."""
    if isinstance(threads, bool) or int(threads) != threads or threads < 0:
        raise BackendError(f"onnx_threads must be an integer >= 0 (0 = torch's count), got {threads!r}")
    return int(threads)


def check_switch(name: str, mode: str) -> str:
    """An auto/on/off option: 'auto', 'on' or 'off' (also true/false/yes/no/1/0); ValueError naming
    the option and the choices otherwise."""
    key = str(mode).strip().lower()
    key = _SWITCH.get(key, key)
    if key not in CUDA_GRAPH_MODES:
        raise ValueError(f"{name} must be auto, on or off, got {mode!r}")
    return key


def check_cuda_graphs(mode: str) -> str:
    """The `cuda_graphs` option: 'auto', 'on' or 'off'."""
    return check_switch("cuda_graphs", mode)


def check_options(
    backend: str,
    providers: Sequence[str] | str | None,
    threads: int,
    cuda_graphs: str = "auto",
    precision: str = "auto",
) -> None:
    """All the engine's runtime options at once (node start-up, CLI), before any model is loaded."""
    check_backend(backend)
    check_precision(precision)
    if check_precision(precision) == "int8" and check_backend(backend) == "torch":
        raise BackendError("precision int8 runs on backend onnxruntime (or auto), not torch")
    if check_precision(precision) == "bf16" and check_backend(backend) == "onnxruntime":
        raise BackendError("precision bf16 runs on backend torch (or auto), not onnxruntime")
    normalize_providers(providers)
    check_threads(threads)
    check_cuda_graphs(cuda_graphs)


def onnxruntime_installed() -> bool:
    """True when onnxruntime can be imported (found on the path; the import itself is deferred)."""
    return importlib.util.find_spec("onnxruntime") is not None
