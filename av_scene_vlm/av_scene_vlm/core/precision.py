"""The image tower's `precision` option (fp32, bf16, int8, auto), checked and resolved without torch.

Why a module of its own: the nodes and CLIs validate the option before their heavy imports (like
`backend_options`), and `auto` is decided here from two pieces of evidence, both printed with the choice:
- the CPU: int8 needs VNNI (or AMX-INT8) and bf16 needs AVX512_BF16 (or AMX-BF16) to be faster than fp32;
  a CPU without them keeps fp32 (`cpu_flags()`, overridable with $AV_SCENE_VLM_CPU_FLAGS so a test or
  a user can simulate another CPU);
- agreement: a precision changes results, so `auto` only picks one that `av-scene-vlm check-precision`
  has passed for this very model (its record, keyed by the tower's weights, in the graph cache).
Without both, `auto` is fp32: never silently different results, never a slower path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .backend_options import PRECISIONS, check_precision

__all__ = ["PRECISIONS", "check_precision"]  # re-exported: checked with the other options
FLAGS_ENV = "AV_SCENE_VLM_CPU_FLAGS"
# /proc/cpuinfo flags that make a precision faster than fp32 (any one of them).
NEEDS = {
    "int8": ("avx512_vnni", "avx_vnni", "amx_int8"),
    "bf16": ("avx512_bf16", "amx_bf16"),
}
AGREEMENT_DIR = "agreement"


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """This CPU's instruction-set flags: $AV_SCENE_VLM_CPU_FLAGS (comma/space separated; set but empty =
    none) when set, else the first 'flags' line of /proc/cpuinfo (none where it is not readable)."""
    if FLAGS_ENV in os.environ:
        return frozenset(os.environ[FLAGS_ENV].replace(",", " ").lower().split())
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def cpu_supports(precision: str, flags: Iterable[str] | None = None) -> bool:
    """True when the CPU has an instruction that makes `precision` faster than fp32 (fp32: always)."""
    needs = NEEDS.get(check_precision(precision))
    if needs is None:
        return True
    have = cpu_flags() if flags is None else frozenset(flags)
    return any(n in have for n in needs)


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model name (benchmarks and the agreement record name it)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


# ---- agreement records (written by check-precision, read by auto) ------------------------------------
def agreement_path(cache_root: str | Path, model_key: str, precision: str) -> Path:
    """Where check-precision records that `precision` agreed with fp32 for the tower with `model_key`."""
    return Path(cache_root) / AGREEMENT_DIR / f"{model_key[:32]}-{precision}.json"


def write_agreement(cache_root: str | Path, model_key: str, precision: str, record: dict) -> Path:
    """Record a passed (or, to replace an old pass, a failed) check, atomically."""
    path = agreement_path(cache_root, model_key, precision)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**record, "key": model_key, "precision": precision}, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def read_agreement(cache_root: str | Path, model_key: str, precision: str) -> dict | None:
    """The recorded check for this tower and precision, when there is one and it is for this key."""
    try:
        record = json.loads(agreement_path(cache_root, model_key, precision).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("key") == model_key else None


@dataclass(frozen=True)
class Choice:
    """The precision the tower runs in and why (the start-up line and /diagnostics print both)."""

    precision: str
    reason: str


def choose(
    requested: str,
    *,
    device_type: str,
    backend: str,
    record: Callable[[str], dict | None],
    flags: Iterable[str] | None = None,
) -> Choice:
    """Resolve `requested` for a tower on `device_type` with `backend` ('auto', 'torch' or
    'onnxruntime'); `record(p)`: precision p's check-precision record for this model (None: none),
    looked up only for a precision the backend and the CPU allow (it hashes the weights).

    auto on a CPU: int8 if it passed and the CPU has VNNI/AMX-INT8 (ONNX Runtime's int8 kernels),
    else bf16 if it passed and the CPU has AVX512_BF16/AMX-BF16, else fp32 (int8 needs a backend that
    may be onnxruntime, bf16 one that may be torch). On a GPU: fp32 (the model's dtype decides there).
    """
    key = check_precision(requested)
    if key != "auto":
        return Choice(key, "requested")
    if device_type != "cpu":
        return Choice("fp32", f"auto on {device_type}: the dtype option sets the GPU's precision")
    have = cpu_flags() if flags is None else frozenset(flags)
    skipped = []
    for candidate, allowed in (("int8", ("auto", "onnxruntime")), ("bf16", ("auto", "torch"))):
        if backend not in allowed:
            skipped.append(f"{candidate}: backend {backend}")
        elif not cpu_supports(candidate, have):
            skipped.append(f"{candidate}: CPU lacks {'/'.join(NEEDS[candidate])}")
        elif not (found := record(candidate)) or not found.get("passed"):
            skipped.append(f"{candidate}: no passing check-precision for this model")
        else:
            how = f"check-precision passed {found.get('date', '?')}, cosine min {found.get('cos_min', '?')}"
            return Choice(candidate, f"auto: {how}; CPU has {'/'.join(sorted(have & set(NEEDS[candidate])))}")
    return Choice("fp32", "auto: " + "; ".join(skipped))
