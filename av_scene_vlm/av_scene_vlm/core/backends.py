"""The engine's image tower: eager torch, or the same tower exported to ONNX and run by ONNX Runtime.

Why two: on a CPU the eager forward is the floor torch can reach; ONNX Runtime runs the exported graph
~2.5× faster there (docs/PERFORMANCE.md). On CUDA torch stays the default. Both towers take the
engine's preprocessed `pixel_values` (torch, on the model's device) and return L2-normalized float32
image embeddings (N×D) and, when asked, patch embeddings (N×P×D) for the heatmap, as torch tensors on
the model's device, so everything after the tower (scores, heatmap) is shared code.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .backend_options import BackendError, check_backend, check_threads, normalize_providers
from .models import LoadedClip, ModelLoadError
from .onnx_export import INPUT, OUTPUTS, CachedGraph, cache_key, cached_graph, default_cache_dir, log
from .precision import AGREEMENT_DIR, Choice, check_precision, choose, read_agreement
from .tower import image_tower_outputs

FP32 = Choice("fp32", "requested")


class TorchTower:
    """The eager transformers forward. Precision bf16 runs a bfloat16 copy of the image tower (made once;
    the text tower keeps the fp32 weights): measured on the 2-core Xeon with AMX, ViT-B/32, CPU ms per
    frame, batch 1 / 8: fp32 135 / 76, autocast 132 / 33 (it re-casts every weight on every call),
    bf16 copy 70 / 24 — so the copy, at the cost of half the tower's fp32 memory again."""

    name = "torch"

    def __init__(self, clip: LoadedClip, choice: Choice = FP32) -> None:
        self.choice = choice
        self._vision, self._projection = clip.model.vision_model, clip.model.visual_projection
        self._dtype: torch.dtype | None = None
        if choice.precision == "bf16":
            self._dtype = torch.bfloat16
            self._vision = copy.deepcopy(self._vision).to(torch.bfloat16)
            self._projection = copy.deepcopy(self._projection).to(torch.bfloat16)

    def __call__(self, pixels: torch.Tensor, patches: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = pixels if self._dtype is None else pixels.to(self._dtype)
        return image_tower_outputs(self._vision, self._projection, x, patches)

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.name,
            "precision": self.choice.precision,
            "precision_reason": self.choice.reason,
        }


class OnnxTower:
    """The exported image tower in an ONNX Runtime session (graph from the on-disk cache)."""

    name = "onnxruntime"

    def __init__(
        self,
        clip: LoadedClip,
        providers: Sequence[str] | str | None = ("auto",),
        threads: int = 0,
        cache_dir: str | Path | None = None,
        choice: Choice = FP32,
    ) -> None:
        import onnxruntime as ort

        self._ort = ort
        self.device = clip.device
        if clip.dtype not in (torch.float32, torch.float16):
            raise BackendError(
                f"the onnxruntime backend runs float32 or float16, not {clip.dtype}; use backend torch"
            )
        self.choice = choice
        precision = choice.precision
        if precision == "int8" and (clip.device.type != "cpu" or clip.dtype != torch.float32):
            raise BackendError(
                f"precision int8 runs a float32 model on a CPU, not {clip.dtype} on {clip.device}"
            )
        self.threads = check_threads(threads) or torch.get_num_threads()
        self._providers = resolve_providers(providers, clip.device, clip.dtype, cache_dir)
        self.graph: CachedGraph = cached_graph(clip.model, clip.model_id, cache_dir, precision=precision)
        try:
            self.session = self._session(self.graph.path)
        except Exception as exc:  # onnxruntime's load errors have no common base class
            if not self.graph.cache_hit:
                raise BackendError(f"ONNX Runtime cannot load the exported image tower: {exc}") from None
            reason = f"ONNX Runtime cannot load it: {str(exc).strip().splitlines()[0] if str(exc) else exc}"
            self.graph = cached_graph(
                clip.model, clip.model_id, cache_dir, rebuild=reason, precision=precision
            )
            self.session = self._session(self.graph.path)
        self.providers = list(self.session.get_providers())

    def _session(self, path: Path) -> Any:
        ort = self._ort
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3  # errors only: no per-node placement chatter on the console
        # Workers spin between the graph's parallel sections (fast), but stop when run() returns: left
        # spinning they starve the torch preprocessing and scoring around each call. Measured on 2
        # cores, ViT-B/32, batch 1: engine 1.38x a bare run() without this, 1.00x with it.
        so.add_session_config_entry("session.force_spinning_stop", "1")
        names = [name for name, _ in self._providers]
        options = [opts for _, opts in self._providers]
        return ort.InferenceSession(str(path), so, providers=names, provider_options=options)

    def __call__(self, pixels: torch.Tensor, patches: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = pixels.detach()
        if x.device.type != "cpu":  # the GPU path goes through host memory (not measured yet)
            x = x.cpu()
        names = list(OUTPUTS) if patches else [OUTPUTS[0]]
        outs = self.session.run(names, {INPUT: x.contiguous().numpy()})
        emb = torch.from_numpy(outs[0]).to(self.device)
        patch = torch.from_numpy(outs[1]).to(self.device) if patches else None
        return emb, patch

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.name,
            "precision": self.choice.precision,
            "precision_reason": self.choice.reason,
            "providers": self.providers,
            "threads": self.threads,
            "graph": str(self.graph.path),
            "cache_hit": self.graph.cache_hit,
            "graph_seconds": round(self.graph.seconds, 3),
        }


def resolve_providers(
    providers: Sequence[str] | str | None,
    device: torch.device,
    dtype: torch.dtype,
    cache_dir: str | Path | None = None,
) -> list[tuple[str, dict[str, str]]]:
    """(provider, options) pairs for a session, CPU last as the fallback; BackendError when one
    is not in this onnxruntime build (CUDA and TensorRT need the onnxruntime-gpu package)."""
    import onnxruntime as ort

    names = list(normalize_providers(providers))
    if names == ["auto"]:
        names = ["CUDAExecutionProvider"] if device.type == "cuda" else ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    for name in names:
        if name not in available:
            raise BackendError(
                f"ONNX Runtime provider '{name}' is not available in onnxruntime {ort.__version__} "
                f"(available: {', '.join(available)}); CUDA and TensorRT need the onnxruntime-gpu package"
            )
    if "CPUExecutionProvider" not in names:
        names.append("CPUExecutionProvider")
    index = str(device.index or 0)
    out = []
    for name in names:
        opts: dict[str, str] = {}
        if name == "CUDAExecutionProvider":
            opts = {"device_id": index}
        elif name == "TensorrtExecutionProvider":  # wired, not measured yet (no GPU in CI)
            trt_cache = Path(cache_dir).expanduser() if cache_dir else None
            opts = {"device_id": index, "trt_fp16_enable": str(dtype == torch.float16)}
            if trt_cache is not None:
                opts.update(trt_engine_cache_enable="True", trt_engine_cache_path=str(trt_cache / "tensorrt"))
        out.append((name, opts))
    return out


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype) -> str:
    """'auto' -> onnxruntime on a CPU (float32) where onnxruntime and the exporter are installed,
    else torch (always on CUDA); an explicit choice is checked."""
    key = check_backend(backend)
    have_ort = all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnxscript"))
    if key == "auto":
        return "onnxruntime" if have_ort and device.type == "cpu" and dtype == torch.float32 else "torch"
    if key == "onnxruntime" and importlib.util.find_spec("onnxruntime") is None:
        raise BackendError(
            "backend 'onnxruntime' needs the onnxruntime package: pip install 'av_scene_vlm[onnx]' "
            "(or use backend torch)"
        )
    return key


def resolve_precision(
    clip: LoadedClip, precision: str, backend: str, cache_dir: str | Path | None = None
) -> tuple[Choice, str]:
    """The tower's precision (core/precision.py decides `auto`) and the backend that runs it: int8 is
    an ONNX Runtime graph, bf16 a torch bfloat16 tower; an explicit backend that cannot run it is an error."""
    key = check_precision(precision)
    backend_key = check_backend(backend)
    if key in ("bf16", "int8") and (clip.device.type != "cpu" or clip.dtype != torch.float32):
        raise BackendError(
            f"precision {key} applies to a float32 model on a CPU, not {clip.dtype} on {clip.device} "
            "(on a GPU the dtype option sets the precision)"
        )
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    choice = choose(
        key,
        device_type=clip.device.type,
        backend=backend_key,
        # No record folder, nothing to hash: the common case costs nothing.
        record=lambda p: (
            read_agreement(root, cache_key(clip.model, p), p) if (root / AGREEMENT_DIR).is_dir() else None
        ),
    )
    runs_on = {"int8": "onnxruntime", "bf16": "torch"}.get(choice.precision)
    if runs_on is None:
        return choice, backend_key
    if backend_key not in ("auto", runs_on):
        raise BackendError(f"precision {choice.precision} runs on backend {runs_on}, not {backend_key}")
    return choice, runs_on


def build_tower(
    clip: LoadedClip,
    backend: str = "auto",
    providers: Sequence[str] | str | None = ("auto",),
    threads: int = 0,
    cache_dir: str | Path | None = None,
    precision: str = "fp32",
) -> TorchTower | OnnxTower:
    """The image tower for `backend` ('auto', 'torch' or 'onnxruntime') in `precision` ('fp32',
    'bf16', 'int8' or 'auto').

    With 'auto', a graph that cannot be exported or loaded here (an unwritable cache, a model the
    exporter cannot trace) falls back to torch fp32 with a warning: auto never fails where torch works.
    """
    normalize_providers(providers)  # a bad name is an error whichever backend runs
    check_threads(threads)
    choice, backend_key = resolve_precision(clip, precision, backend, cache_dir)
    if resolve_backend(backend_key, clip.device, clip.dtype) == "onnxruntime":
        try:
            return OnnxTower(clip, providers, threads, cache_dir, choice)
        except ModelLoadError as exc:
            if check_backend(backend) != "auto" or check_precision(precision) not in ("auto", "fp32"):
                raise
            log.warning(
                "backend auto: onnxruntime unavailable for '%s' (%s); using torch fp32", clip.model_id, exc
            )
            return TorchTower(clip, Choice("fp32", f"fallback: onnxruntime unavailable ({exc})"))
    return TorchTower(clip, choice)
