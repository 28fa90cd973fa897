"""One process-wide lock per device, held while CUDA graphs are recorded on it.

Why: a CUDA graph capture (thread-local capture mode) is invalidated by a device-wide
`torch.cuda.synchronize()` from another thread, and both the CLIP engine's captures and the
captioner's compile, warm-up and compiled-graph recording synchronize (`torch.cuda.graph` does on
entry). With both models in one process (`scene_vlm`), they must never record at the same time.
Graph capture takes the lock without waiting (a batch that finds it taken runs eagerly, nothing is
disabled); the captioner's compile waits for it (a capture lasts milliseconds).

Also here: `is_sticky_cuda_error`, the errors after which every later CUDA call fails, so a worker
stops instead of retrying them forever. Importing this module does not import torch (the nodes
import it, and a missing model must fail before torch loads).
"""

from __future__ import annotations

import sys
import threading
from typing import Any

_locks: dict[str, threading.Lock] = {}
_guard = threading.Lock()

# torch's messages for the CUDA errors that poison the context (cudaErrorIllegalAddress,
# cudaErrorLaunchFailure, ...): after one, every later call on the device fails the same way.
STICKY_MESSAGES = (
    "illegal memory access",
    "unspecified launch failure",
    "an illegal instruction was encountered",
    "misaligned address",
    "device-side assert triggered",
    "uncorrectable ecc error",
)


def _key(device: Any) -> str:
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return str(dev)


def device_lock(device: Any) -> threading.Lock:
    """The lock of `device` ('cuda' means the current CUDA device), the same object for every caller."""
    key = _key(device)
    with _guard:
        lock = _locks.get(key)
        if lock is None:
            lock = _locks[key] = threading.Lock()
        return lock


def is_sticky_cuda_error(exc: BaseException) -> bool:
    """True for an error that leaves the CUDA context unusable (retrying cannot succeed)."""
    text = str(exc).lower()
    return any(m in text for m in STICKY_MESSAGES)


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's OutOfMemoryError (CUDA or another accelerator), by type or by name."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.OutOfMemoryError):
        return True
    return "OutOfMemory" in type(exc).__name__
