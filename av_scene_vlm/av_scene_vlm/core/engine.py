"""Zero-shot CLIP engine: one image encode per frame serves every task; text embeddings are cached.

Probabilities are exactly what `pipeline("zero-shot-image-classification")` computes — softmax over
a task's labels of exp(logit_scale) · cosine(image, text) — but the prompts are encoded once (and again
only when labels change), preprocessing runs in torch on the model's device, and all frames of a
batch (several cameras) go through the vision tower together. The vision tower runs in eager torch or,
exported to ONNX, in ONNX Runtime (`backend`, see core/backends.py); the text tower stays in torch.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .backend_options import check_options
from .backends import build_tower
from .models import DEFAULT_CLIP_MODEL, LoadedClip, load_clip
from .preprocess import Preprocessor, PreprocessSpec
from .tasks import DEFAULT_TEMPLATES, Task, TaskError, check_unique, expand_prompts, validate_templates


@dataclass
class TaskResult:
    """One task's result for one frame."""

    task: str
    labels: list[str]
    probabilities: np.ndarray  # (L,) float64, sums to 1
    cosine: np.ndarray  # (L,) float32, raw cosine of the ensembled label embeddings

    @property
    def index(self) -> int:
        return int(np.argmax(self.probabilities))

    @property
    def label(self) -> str:
        return self.labels[self.index]

    @property
    def probability(self) -> float:
        return float(self.probabilities[self.index])


@dataclass
class FrameResult:
    """Everything the engine knows about one frame."""

    tasks: list[TaskResult]
    image_embedding: np.ndarray  # (D,) float32, L2-normalized
    latency: float  # seconds of engine time for the batch this frame was in
    heatmap: np.ndarray | None = None  # (H, W) float32 cosine map in frame pixels
    heatmap_label: str | None = None
    heatmap_task: str | None = None
    extra: dict = field(default_factory=dict)

    def task(self, name: str) -> TaskResult:
        for t in self.tasks:
            if t.task == name:
                return t
        raise KeyError(name)


class ZeroShotEngine:
    """CLIP zero-shot classification and image-text similarity over batches of RGB frames.

    Thread-safe: the node's worker thread classifies while parameter callbacks call `set_tasks`,
    which only validates and swaps in the new label sets without waiting for a running batch (that
    batch finishes with the label sets it started with; texts are encoded by the next call, off the
    executor thread).
    """

    def __init__(
        self,
        model: str | LoadedClip = DEFAULT_CLIP_MODEL,
        *,
        device: str = "auto",
        dtype: str = "auto",
        tasks: Sequence[Task] = (),
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        text_cache_size: int = 4096,
        backend: str = "auto",
        onnx_providers: Sequence[str] | str | None = ("auto",),
        onnx_threads: int = 0,
        onnx_cache_dir: str | Path | None = None,
    ) -> None:
        """`backend`: 'auto' (onnxruntime on a CPU where it is installed, else torch), 'torch' or
        'onnxruntime'; the onnx_* options apply to the latter (see core/backends.py)."""
        check_options(backend, onnx_providers, onnx_threads)  # a typo fails before the model loads
        self.clip = model if isinstance(model, LoadedClip) else load_clip(model, device, dtype)
        self.model = self.clip.model
        self.model_id = self.clip.model_id
        self.device = self.clip.device
        self.dtype = self.clip.dtype
        ip = getattr(self.clip.processor, "image_processor", self.clip.processor)
        self.preprocess = Preprocessor(PreprocessSpec.from_image_processor(ip), self.device, self.dtype)
        self._tower = build_tower(self.clip, backend, onnx_providers, onnx_threads, onnx_cache_dir)
        self.backend: str = self._tower.name  # "torch" or "onnxruntime"
        self.providers: list[str] = list(getattr(self._tower, "providers", []))
        self.tokenizer = getattr(self.clip.processor, "tokenizer", self.clip.processor)
        self.logit_scale = float(self.model.logit_scale.detach().float().exp().item())
        self._max_len = int(getattr(self.model.config.text_config, "max_position_embeddings", 77))
        self._lock = threading.RLock()
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._cache_size = text_cache_size
        self.text_encoder_calls = 0  # times the text tower ran (the cache tests watch this)
        # The label sets as one immutable pair, swapped whole by set_tasks without the lock; the
        # label embeddings are cached for the pair they were computed from.
        self._config: tuple[tuple[Task, ...], tuple[str, ...]] = ((), validate_templates(templates))
        self._embeds_for: tuple[object, list[torch.Tensor]] | None = None
        self.set_tasks(tasks, templates)

    # ---- tasks -------------------------------------------------------------------------------
    @property
    def tasks(self) -> list[Task]:
        """The newest label sets (a batch already running finishes with the ones it started with)."""
        return list(self._config[0])

    @property
    def templates(self) -> tuple[str, ...]:
        return self._config[1]

    def set_tasks(self, tasks: Sequence[Task], templates: Sequence[str] | None = None) -> None:
        """Replace the label sets; validated now, used from the next batch, encoded by the next call
        that needs them. Never waits for a running batch (parameter services call this)."""
        new_templates = validate_templates(templates) if templates is not None else self._config[1]
        new_tasks = check_unique(tasks)
        for t in new_tasks:
            if len(t.labels) < 2:
                raise TaskError(f"task {t.name!r} needs at least 2 labels")
        self._config = (tuple(new_tasks), new_templates)  # one atomic swap; readers take one snapshot

    def prompts(self, task: Task, templates: Sequence[str] | None = None) -> list[list[str]]:
        """The prompts of each label of `task` after template expansion (default: current templates)."""
        templates = self._config[1] if templates is None else templates
        return [expand_prompts(label, templates) for label in task.labels]

    def prepare(self) -> None:
        """Encode the current tasks' texts now (at start-up, so the first frame is not slow)."""
        with self._lock, torch.inference_mode():
            self._label_embeddings(self._config)

    def label_embeddings(self) -> list[np.ndarray]:
        """Per task, the (L, D) L2-normalized prompt-ensembled label embeddings that frames are scored
        against (for exporting them next to the ONNX image tower)."""
        with self._lock, torch.inference_mode():
            return [e.cpu().numpy() for e in self._label_embeddings(self._config)]

    def _label_embeddings(self, config: tuple[tuple[Task, ...], tuple[str, ...]]) -> list[torch.Tensor]:
        """Ensembled label embeddings of `config` (a snapshot of `_config`); caller holds the lock."""
        cached = self._embeds_for
        if cached is None or cached[0] is not config:
            tasks, templates = config
            per_task = [self.prompts(task, templates) for task in tasks]
            flat = [p for labels in per_task for prompts in labels for p in prompts]
            encoded = self._encode_cached(flat)  # one text-tower call for every new prompt
            embeds, i = [], 0
            for labels in per_task:
                means = []
                for prompts in labels:
                    # Prompt ensemble (CLIP paper): mean of normalized prompt embeddings, renormalized.
                    means.append(encoded[i : i + len(prompts)].mean(0))
                    i += len(prompts)
                mean = torch.stack(means)
                embeds.append(mean / mean.norm(dim=-1, keepdim=True))
            cached = self._embeds_for = (config, embeds)
        return cached[1]

    # ---- text ---------------------------------------------------------------------------------
    def _encode_cached(self, prompts: Sequence[str]) -> torch.Tensor:
        missing = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        if missing:
            for p, e in zip(missing, self._encode_text(missing), strict=True):
                self._cache[p] = e
        for p in prompts:
            self._cache.move_to_end(p)
        out = torch.stack([self._cache[p] for p in prompts])
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return out

    def _encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        self.text_encoder_calls += 1
        tok = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self._max_len, return_tensors="pt"
        ).to(self.device)
        out = self.model.text_model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
        emb = self.model.text_projection(out.pooler_output).float()
        return emb / emb.norm(dim=-1, keepdim=True)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(T, D) L2-normalized text embeddings (each text alone, no templates)."""
        with self._lock, torch.inference_mode():
            return self._encode_cached(list(texts)).cpu().numpy()

    # ---- images --------------------------------------------------------------------------------
    def _encode_images(
        self, frames: Sequence[np.ndarray], patches: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self._tower(self.preprocess(frames), patches)

    def backend_info(self) -> dict[str, object]:
        """The backend in use and, for onnxruntime, its providers, threads and graph (for logs)."""
        return self._tower.describe()

    def encode_images(self, frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """(N, D) L2-normalized image embeddings."""
        frames = _as_list(frames)
        with self._lock, torch.inference_mode():
            return self._encode_images(frames, patches=False)[0].cpu().numpy()

    def similarity(self, frames: np.ndarray | Sequence[np.ndarray], texts: Sequence[str]) -> np.ndarray:
        """(N, T) raw cosine similarity of each frame with each text."""
        frames = _as_list(frames)
        with self._lock, torch.inference_mode():
            img, _ = self._encode_images(frames, patches=False)
            txt = self._encode_cached(list(texts))
            return (img @ txt.T).cpu().numpy()

    # ---- classification --------------------------------------------------------------------------
    def classify(
        self,
        frames: np.ndarray | Sequence[np.ndarray],
        *,
        heatmap: bool | Sequence[bool] = False,
        heatmap_task: str | None = None,
        heatmap_label: str | None = None,
    ) -> list[FrameResult]:
        """Classify a batch of frames for every task.

        `heatmap` (one flag, or one per frame) adds a patch-similarity map for `heatmap_label`
        (a label of `heatmap_task`, default: that task's top label; task default: the first task).
        """
        frames = _as_list(frames)
        if not frames:
            return []
        want = [bool(heatmap)] * len(frames) if isinstance(heatmap, bool) else [bool(h) for h in heatmap]
        t0 = time.perf_counter()
        with self._lock, torch.inference_mode():
            config = self._config  # this batch's label sets, whatever set_tasks does meanwhile
            tasks = list(config[0])
            if not tasks:
                raise TaskError("no tasks configured: set labels or tasks first")
            label_embeds = self._label_embeddings(config)
            img, patch = self._encode_images(frames, patches=any(want))
            cos = [img @ e.T for e in label_embeds]  # per task (N, L)
            probs = [(self.logit_scale * c.double()).softmax(dim=-1) for c in cos]  # float64: sums to 1
            cos_np = [c.cpu().numpy() for c in cos]
            probs_np = [p.cpu().numpy() for p in probs]
            img_np = img.cpu().numpy()
            maps = None
            if patch is not None:
                maps = self._patch_maps(
                    patch, want, tasks, label_embeds, probs_np, heatmap_task, heatmap_label
                )
        latency = time.perf_counter() - t0
        results = []
        for i, frame in enumerate(frames):
            task_results = [
                TaskResult(t.name, t.label_names, probs_np[k][i], cos_np[k][i]) for k, t in enumerate(tasks)
            ]
            fr = FrameResult(task_results, img_np[i], latency)
            if maps is not None and maps[i] is not None:
                grid, fr.heatmap_task, fr.heatmap_label = maps[i]
                fr.heatmap = self._upsample(grid, frame.shape[0], frame.shape[1])
            results.append(fr)
        return results

    def _patch_maps(self, patch, want, tasks, label_embeds, probs_np, heatmap_task, heatmap_label):
        k = 0
        if heatmap_task is not None:
            names = [t.name for t in tasks]
            if heatmap_task not in names:
                raise TaskError(f"heatmap task {heatmap_task!r} is not one of {names}")
            k = names.index(heatmap_task)
        labels = tasks[k].label_names
        if heatmap_label is not None and heatmap_label not in labels:
            raise TaskError(f"heatmap label {heatmap_label!r} is not a label of task {tasks[k].name!r}")
        n_side = round(patch.shape[1] ** 0.5)
        out = []
        for i, w in enumerate(want):
            if not w:
                out.append(None)
                continue
            j = labels.index(heatmap_label) if heatmap_label else int(np.argmax(probs_np[k][i]))
            grid = (patch[i] @ label_embeds[k][j]).reshape(n_side, n_side).cpu().numpy()
            out.append((grid, tasks[k].name, labels[j]))
        return out

    def _upsample(self, grid: np.ndarray, height: int, width: int) -> np.ndarray:
        """Place the patch grid over the crop region of the frame; edges extend outside it."""
        import cv2

        r = self.preprocess.crop_region(height, width)
        top, left = round(r.top), round(r.left)
        bottom, right = max(top + 1, round(r.bottom)), max(left + 1, round(r.right))
        inner = cv2.resize(
            grid.astype(np.float32), (right - left, bottom - top), interpolation=cv2.INTER_LINEAR
        )
        pad = ((top, max(0, height - bottom)), (left, max(0, width - right)))
        return np.pad(inner, pad, mode="edge")[:height, :width]


def _as_list(frames: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(frames, np.ndarray):
        if frames.ndim == 4:
            return list(frames)
        return [frames]
    return list(frames)
