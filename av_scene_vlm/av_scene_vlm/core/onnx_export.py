"""Export CLIP's image tower to ONNX from the loaded transformers model, once, into an on-disk cache.

The graph takes `pixel_values` (N×3×h×w, the engine's preprocessed batch, batch size dynamic) and
returns `image_embeds` (N×D) and `patch_embeds` (N×P×D, for the heatmap), both L2-normalized float32:
exactly what the torch backend computes (`tower.image_tower_outputs`). Why a cache: export takes
seconds (ViT-B/32: ~15 s on 2 cores) and is needed once per model; it is keyed by a hash of the tower's
weights and config and the exporter/runtime versions, so a changed model or upgrade never reuses a
stale graph. Each entry stores the graph's sha256; a corrupt entry is rebuilt with a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from .models import ModelLoadError
from .tower import image_tower_outputs

GRAPH_FORMAT = 1  # bump when the exported graph's inputs, outputs or arithmetic change
OPSET = 18  # ONNX Runtime >= 1.14 and TensorRT >= 8.6 read opset 18
INPUT = "pixel_values"
OUTPUTS = ("image_embeds", "patch_embeds")
GRAPH_FILE = "image_tower.onnx"
META_FILE = "meta.json"
CACHE_ENV = "AV_SCENE_VLM_ONNX_CACHE"
_VERSIONED = ("torch", "onnx", "onnxscript", "onnxruntime", "transformers")

log = logging.getLogger("av_scene_vlm.onnx")


class ExportError(ModelLoadError):
    """The image tower could not be exported (exporter missing or the model not exportable)."""


def default_cache_dir() -> Path:
    """$AV_SCENE_VLM_ONNX_CACHE, else $XDG_CACHE_HOME/av_scene_vlm/onnx, else ~/.cache/av_scene_vlm/onnx."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "av_scene_vlm" / "onnx"


def versions() -> dict[str, str]:
    """Versions of the packages that shape the exported graph or run it ('-' when absent)."""
    out = {}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    return out


class ImageTower(torch.nn.Module):
    """The part of a CLIP model the graph holds: vision tower + projection, pooled and patch outputs."""

    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.vision_model = clip.vision_model
        self.visual_projection = clip.visual_projection

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb, patch = image_tower_outputs(self.vision_model, self.visual_projection, pixel_values, True)
        return emb, patch  # type: ignore[return-value]


def cache_key(clip: Any, precision: str = "fp32") -> str:
    """sha256 of the tower's weights, config and dtype, the graph's precision (fp32 or int8), the graph
    format and the package versions (onnxruntime's among them: its quantizer writes the int8 graph)."""
    h = hashlib.sha256()
    head = {
        "format": GRAPH_FORMAT,
        "precision": precision,
        "opset": OPSET,
        "versions": versions(),
        "class": type(clip).__name__,
        "vision_config": clip.config.vision_config.to_dict(),
        "projection_dim": int(clip.visual_projection.out_features),
    }
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    for part in (clip.vision_model, clip.visual_projection):
        for name, t in sorted(part.state_dict().items()):
            t = t.detach().to("cpu").contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def export_graph(clip: Any, path: str | Path, precision: str = "fp32") -> None:
    """Write the image tower of `clip` (on its device and dtype) as one ONNX file at `path`; `precision`
    int8: its MatMul weights quantized per channel (core/onnx_quantize.py).

    Deterministic: the same model and versions give byte-identical files. Needs `onnxscript`
    (torch's exporter); nothing is downloaded.
    """
    try:
        import onnxscript  # noqa: F401  (torch.onnx.export's dynamo exporter needs it)
    except ImportError as exc:
        raise ExportError(
            "exporting to ONNX needs the 'onnx' and 'onnxscript' packages: pip install 'av_scene_vlm[onnx]'"
        ) from exc
    if precision == "int8":
        try:
            from .onnx_quantize import export_int8

            export_int8(ImageTower(clip).eval(), _dummy(clip), Path(path), INPUT, OUTPUTS, OPSET)
        except ImportError as exc:
            raise ExportError(
                "precision int8 needs the onnxruntime package: pip install 'av_scene_vlm[onnx]'"
            ) from exc
        except Exception as exc:  # exporter and quantizer failures come in many types; one clear error
            raise ExportError(f"cannot build the int8 image tower: {type(exc).__name__}: {exc}") from exc
        return
    if precision != "fp32":
        raise ExportError(f"an ONNX graph is fp32 or int8, not {precision}")
    dummy = _dummy(clip)
    tower = ImageTower(clip).eval()
    with warnings.catch_warnings(), torch.no_grad(), torch.inference_mode(False):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                tower,
                (dummy,),
                str(path),
                input_names=[INPUT],
                output_names=list(OUTPUTS),
                opset_version=OPSET,
                dynamo=True,
                dynamic_shapes={INPUT: {0: torch.export.Dim("batch")}},
                external_data=False,
                verbose=False,
            )
        except Exception as exc:  # exporter failures come in many types; one clear error
            raise ExportError(f"cannot export the image tower to ONNX: {type(exc).__name__}: {exc}") from exc


def _dummy(clip: Any) -> torch.Tensor:
    """A traced input: batch 2, not 1 (the exporter would specialise a batch of 1 into the graph)."""
    size = int(getattr(clip.config.vision_config, "image_size", 224))
    param = next(clip.vision_model.parameters())
    return torch.zeros(2, 3, size, size, dtype=param.dtype, device=param.device)


@dataclass
class CachedGraph:
    """Where the graph is, and what getting it cost."""

    path: Path
    key: str
    cache_hit: bool
    seconds: float  # export (miss) or hash + verify (hit)
    rebuilt: str = ""  # why a cached entry was rebuilt, if it was
    precision: str = "fp32"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _check_entry(entry: Path, key: str) -> str:
    """'' when the cached entry is intact, else what is wrong with it."""
    graph, meta_path = entry / GRAPH_FILE, entry / META_FILE
    if not graph.is_file() or not meta_path.is_file():
        return "graph or meta.json missing"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        return f"meta.json unreadable ({exc})"
    if not isinstance(meta, dict) or meta.get("key") != key:
        return "meta.json does not match the entry"
    if graph.stat().st_size != meta.get("size") or _sha256(graph) != meta.get("sha256"):
        return "graph file does not match its recorded sha256"
    return ""


def cached_graph(
    clip: Any,
    model_id: str = "",
    cache_dir: str | Path | None = None,
    *,
    rebuild: str = "",
    precision: str = "fp32",
) -> CachedGraph:
    """The ONNX image tower of `clip` in `precision` (fp32 or int8) from the cache, exported into it
    first when missing or corrupt (a new model, precision or package version is a new entry).

    `rebuild`: a reason to discard the entry even when it looks intact (ONNX Runtime could not load it).
    Concurrent processes are safe: each exports into a private folder and renames it into place.
    """
    t0 = time.perf_counter()
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    key = cache_key(clip, precision)
    entry = root / key[:32]
    problem = rebuild
    if entry.exists() and not problem:
        problem = _check_entry(entry, key)
        if not problem:
            return CachedGraph(entry / GRAPH_FILE, key, True, time.perf_counter() - t0, precision=precision)
    if entry.exists():
        log.warning("cached ONNX graph %s is corrupt (%s); rebuilding it", entry, problem)
        shutil.rmtree(entry, ignore_errors=True)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=root))
    except OSError as exc:
        raise ExportError(f"cannot write the ONNX cache '{root}': {exc}") from exc
    try:
        t_export = time.perf_counter()
        export_graph(clip, tmp / GRAPH_FILE, precision)
        meta = {
            "key": key,
            "model_id": model_id,
            "precision": precision,
            "format": GRAPH_FORMAT,
            "opset": OPSET,
            "versions": versions(),
            "size": (tmp / GRAPH_FILE).stat().st_size,
            "sha256": _sha256(tmp / GRAPH_FILE),
            "export_seconds": round(time.perf_counter() - t_export, 3),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        try:
            tmp.rename(entry)
        except OSError:  # another process put the same graph there first: use theirs
            if _check_entry(entry, key):
                raise
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
    return CachedGraph(entry / GRAPH_FILE, key, False, time.perf_counter() - t0, problem, precision)
