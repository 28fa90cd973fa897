"""Zero-shot CLIP engine: one image encode per frame serves every task; text embeddings are cached.

Probabilities are exactly what `pipeline("zero-shot-image-classification")` computes — softmax over
a task's labels of exp(logit_scale) · cosine(image, text) — but the prompts are encoded once (and again
only when labels change), preprocessing runs in torch on the model's device, and all frames of a
batch (several cameras) go through the vision tower together. The vision tower runs in eager torch or,
exported to ONNX, in ONNX Runtime (`backend`, see core/backends.py); the text tower stays in torch.

On CUDA a batch is `submit`ted without waiting: frame windows are copied in parallel into pinned
memory (core/staging.py), uploaded on the engine's copy stream, preprocessed, encoded and scored by
one CUDA graph per batch-size bucket (core/cuda_graphs.py), and copied back as one tensor
(core/scoring.py); `PendingBatch.result()` is the batch's only host sync. `classify_stream` keeps one
batch in flight, so the next batch's copy overlaps the current batch's compute.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from .backend_options import check_options
from .backends import build_tower
from .cuda_graphs import BUCKETS, Capture, bucket_for, check_mode, graph_set, split_batch
from .models import DEFAULT_CLIP_MODEL, LoadedClip, load_clip
from .preprocess import FramePlan, Preprocessor, PreprocessSpec, check_frame
from .results import FrameResult, PendingBatch, TaskResult, download
from .scoring import ScoreLayout, make_layout, max_probability_error, pack_scores
from .staging import Uploader
from .tasks import DEFAULT_TEMPLATES, Task, TaskError, check_unique, expand_prompts, validate_templates

__all__ = ["FrameResult", "PendingBatch", "TaskResult", "ZeroShotEngine"]  # results re-exported


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
        cuda_graphs: str = "auto",
        graph_capture: Capture | None = None,
        cuda_graphs_memory_mb: float = 0,
        precision: str = "auto",
    ) -> None:
        """`backend`: 'auto' (onnxruntime on a CPU where it is installed, else torch), 'torch' or
        'onnxruntime'; the onnx_* options apply to the latter (see core/backends.py).

        `cuda_graphs`: 'auto' (on for the torch tower on CUDA), 'on' or 'off'. `graph_capture`
        replaces the CUDA graph capture (core/cuda_graphs.py: EagerCapture runs the graph machinery
        on a CPU, which is how it is tested there); `cuda_graphs_memory_mb`: what the graphs may hold
        (0: a tenth of the device), least recently used ones dropped past it.

        `precision`: the image tower's on a CPU: fp32, bf16, int8 or auto (core/precision.py)."""
        check_options(backend, onnx_providers, onnx_threads, cuda_graphs, precision)  # before the model loads
        graphs_mode = check_mode(cuda_graphs)
        self.clip = model if isinstance(model, LoadedClip) else load_clip(model, device, dtype)
        self.model = self.clip.model
        self.model_id = self.clip.model_id
        self.device = self.clip.device
        self.dtype = self.clip.dtype
        ip = getattr(self.clip.processor, "image_processor", self.clip.processor)
        self.preprocess = Preprocessor(PreprocessSpec.from_image_processor(ip), self.device, self.dtype)
        self._tower = build_tower(self.clip, backend, onnx_providers, onnx_threads, onnx_cache_dir, precision)
        self.backend: str = self._tower.name  # "torch" or "onnxruntime"
        self.precision, self.precision_reason = self._tower.choice.precision, self._tower.choice.reason
        self.providers: list[str] = list(getattr(self._tower, "providers", []))
        self._uploader = Uploader(self.device)
        compare = lambda a, b, key: max_probability_error(a, b, key[-1], self.logit_scale)  # noqa: E731
        self.graphs = graph_set(
            graphs_mode, graph_capture, cuda_graphs_memory_mb, self.device, self.backend, compare
        )
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
        self._embeds_for: tuple[object, torch.Tensor] | None = None
        self._dim = int(self.model.config.projection_dim)
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
            stacked = self._label_embeddings(self._config).cpu().numpy()
        sizes = [len(t.labels) for t in self._config[0]]
        return np.split(stacked, np.cumsum(sizes)[:-1]) if sizes else []

    def _label_embeddings(self, config: tuple[tuple[Task, ...], tuple[str, ...]]) -> torch.Tensor:
        """Every task's ensembled label embeddings of `config` (a snapshot of `_config`), stacked
        (ΣL×D float32 on the device); caller holds the lock."""
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
            stacked = torch.cat(embeds) if embeds else torch.empty(0, self._dim, device=self.device)
            cached = self._embeds_for = (config, stacked)
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
    def _forward(
        self, windows: torch.Tensor, labels: torch.Tensor, *, plan: FramePlan, layout: ScoreLayout
    ) -> torch.Tensor:
        """uint8 frame windows on the device -> packed scores (the eager forward a graph captures)."""
        pixels = self.preprocess.normalize(self.preprocess.crops(windows, plan))
        emb, patch = self._tower(pixels, layout.patches > 0)
        return pack_scores(emb, patch, labels, layout)

    def backend_info(self) -> dict[str, object]:
        """The backend and precision in use and, for onnxruntime, its providers, threads and graph."""
        info = self._tower.describe()
        info["cuda_graphs"] = self.graphs_state()
        return info

    def release_memory(self) -> None:
        """After an out-of-memory error: drop the captured graphs (each holds its share of a memory
        pool; they are captured again when needed) and give cached blocks back to the driver, so the
        smaller batches that follow find room."""
        with self._lock:
            if self.graphs is not None:
                self.graphs.clear()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def graphs_state(self) -> str:
        """'off', 'on (N captured)' or 'off after a failed check: <reason>' (logs, diagnostics)."""
        if self.graphs is None:
            return "off"
        if not self.graphs.enabled:
            return f"off after a failed check: {self.graphs.disabled_reason}"
        return f"on ({len(self.graphs)} captured)"

    def graph_stats(self) -> dict[str, object]:
        """The graphs' memory, retries, deferred captures, drops (/diagnostics; {} without graphs)."""
        return {} if self.graphs is None else self.graphs.stats()

    def _embed(self, frames: Sequence[np.ndarray], patches: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Eager image (and patch) embeddings on the device, in frame order; caller holds the lock."""
        return self._tower(self.preprocess(frames), patches)

    def encode_images(self, frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """(N, D) L2-normalized image embeddings."""
        frames = _as_list(frames)
        with self._lock, torch.inference_mode():
            return self._embed(frames, patches=False)[0].cpu().numpy()

    def similarity(self, frames: np.ndarray | Sequence[np.ndarray], texts: Sequence[str]) -> np.ndarray:
        """(N, T) raw cosine similarity of each frame with each text."""
        frames = _as_list(frames)
        with self._lock, torch.inference_mode():
            img, _ = self._embed(frames, patches=False)
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
        return self.submit(
            frames, heatmap=heatmap, heatmap_task=heatmap_task, heatmap_label=heatmap_label
        ).result()

    def classify_stream(
        self, batches: Iterable[np.ndarray | Sequence[np.ndarray]], **options: object
    ) -> Iterator[list[FrameResult]]:
        """`classify` each batch, in order, with the next batch submitted before the current one's
        results are read: on CUDA its copy and upload overlap the current batch's compute.
        `options`: classify's keywords."""
        pending: PendingBatch | None = None
        for frames in batches:
            nxt = self.submit(frames, **options)  # type: ignore[arg-type]
            if pending is not None:
                yield pending.result()
            pending = nxt
        if pending is not None:
            yield pending.result()

    def submit(
        self,
        frames: np.ndarray | Sequence[np.ndarray],
        *,
        heatmap: bool | Sequence[bool] = False,
        heatmap_task: str | None = None,
        heatmap_label: str | None = None,
    ) -> PendingBatch:
        """Start classifying a batch and return without waiting for the device; `.result()` waits.

        Same-size frames are copied (their crop windows only) and uploaded together, in chunks of at
        most 64, each chunk computed as soon as it is on the device (by its CUDA graph where graphs
        are on), and all scores come back in one copy.
        """
        frames = _as_list(frames)
        for frame in frames:
            check_frame(frame)
        want = [bool(heatmap)] * len(frames) if isinstance(heatmap, bool) else [bool(h) for h in heatmap]
        if len(want) != len(frames):
            raise ValueError(f"heatmap has {len(want)} flags for {len(frames)} frames")
        t0 = time.perf_counter()
        with self._lock, torch.inference_mode():
            config = self._config  # this batch's label sets, whatever set_tasks does meanwhile
            tasks = list(config[0])
            if not tasks:
                raise TaskError("no tasks configured: set labels or tasks first")
            patches = self._patches if any(want) else 0
            layout = make_layout(tasks, self._dim, patches, heatmap_task, heatmap_label)
            labels = self._label_embeddings(config)
            packed, order = self._score(frames, labels, layout) if frames else (None, [])
            host = download(packed) if packed is not None else None
        shapes = [f.shape[:2] for f in frames]
        return PendingBatch(shapes, want, tasks, layout, host, t0, self.logit_scale, self.preprocess, order)

    def _score(
        self, frames: list[np.ndarray], labels: torch.Tensor, layout: ScoreLayout
    ) -> tuple[torch.Tensor, list[int]]:
        """Packed scores of every frame on the device (enqueued, not waited for), and the frame index
        of each row: rows come grouped by frame size and are put back in frame order on the host."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, frame in enumerate(frames):
            groups.setdefault(frame.shape[:2], []).append(i)
        work = [
            (self.preprocess.plan(h, w), idx[start:end])
            for (h, w), idx in groups.items()
            for start, end in split_batch(len(idx), BUCKETS[-1])
        ]
        order = [i for _, chunk in work for i in chunk]
        if len(work) > 1 and not (self.graphs is not None and self.graphs.enabled):
            return self._score_together(frames, work, labels, layout), order
        parts: list[torch.Tensor] = []
        for plan, chunk in work:
            out = self._run(self._windows([frames[i] for i in chunk], plan), labels, plan, layout)
            # A graph's output is its static buffer, which the next replay (of it or of another graph
            # sharing its memory pool) overwrites: with more parts to come it is copied out at once.
            parts.append(out if len(work) == 1 else out.clone())
        return (parts[0] if len(parts) == 1 else torch.cat(parts)), order

    def _score_together(
        self,
        frames: list[np.ndarray],
        work: list[tuple[FramePlan, list[int]]],
        labels: torch.Tensor,
        layout: ScoreLayout,
    ) -> torch.Tensor:
        """Eager scores of frames of several sizes: each size cropped and normalized on its own, the
        image tower run once on all of them (in chunks of at most 64).

        Why: a vehicle's cameras differ in size; one tower call per size cut a 4-camera batch into
        calls of 1 + 3 frames, 21 % slower on a CPU (benchmarks/bench_mixed_sizes.py).
        With CUDA graphs on, each size keeps its own graph (preprocessing is inside it)."""
        pixels = []
        for plan, chunk in work:
            windows = self._windows([frames[i] for i in chunk], plan)
            pixels.append(self.preprocess.normalize(self.preprocess.crops(windows, plan)))
        x = torch.cat(pixels)
        parts = [
            pack_scores(*self._tower(x[start:end], layout.patches > 0), labels, layout)
            for start, end in split_batch(x.shape[0], BUCKETS[-1])
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _windows(self, frames: list[np.ndarray], plan: FramePlan) -> torch.Tensor:
        """Same-size frames' crop windows on the device (pinned, on the engine's copy stream on CUDA)."""
        host = self.preprocess.host_batch(frames, plan, pin=self.device.type == "cuda")
        windows, uploaded = self._uploader.upload(host)
        self._uploader.wait(uploaded)
        return windows

    def _run(self, windows: torch.Tensor, labels: torch.Tensor, plan: FramePlan, layout: ScoreLayout):
        """One same-size chunk through its CUDA graph, or eagerly."""
        if self.graphs is not None and self.graphs.enabled:
            bucket = bucket_for(windows.shape[0])
            out = self.graphs.run(
                (bucket, plan, layout),
                bucket,
                windows,
                [labels],
                forward=lambda w, lab: self._forward(w, lab, plan=plan, layout=layout),
            )
            if out is not None:
                return out
        return self._forward(windows, labels, plan=plan, layout=layout)

    @property
    def _patches(self) -> int:
        cfg = self.model.config.vision_config
        return (int(cfg.image_size) // int(cfg.patch_size)) ** 2


def _as_list(frames: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(frames, np.ndarray):
        if frames.ndim == 4:
            return list(frames)
        return [frames]
    return list(frames)
