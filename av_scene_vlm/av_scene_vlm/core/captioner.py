"""Qwen2.5-VL image captioning, ROS-free.

Why a separate class from the zero-shot engine: captioning is autoregressive and ~100x slower
than a CLIP forward pass, so the caption node runs it on its own worker thread and it must never
share a call path (or a lock) with classification. This module only turns an H×W×3 uint8 RGB
array into text; scheduling is the caller's business.

It loads checkpoints exactly as users do for `Qwen/Qwen2.5-VL-3B-Instruct`
(`Qwen2_5_VLForConditionalGeneration` + `AutoProcessor`, hub id or local directory, no remote
code, HF_HUB_OFFLINE honoured) and prompts through the processor's own chat template.

On CUDA (`compile` auto/on) generation uses a static KV cache, which lets transformers compile the
decoding step with CUDA graphs: decoding a 3B model one token at a time is bound by per-token Python
and launch overhead (~24 ms a token eager on an H200), which the compiled step removes. Compiling
takes about a minute, so `warm_up()` does it up front on the caller's (worker) thread, holding the
device's capture lock (core/device_lock.py) so a CLIP engine in the same process never captures a CUDA
graph meanwhile. The fixed shapes compiling needs (one static cache per batch size, its length, the
prompt-token budget, batch padding within the worker's batch limit) are in core/caption_cache.py.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from av_scene_vlm.core.caption_cache import (
    DEFAULT_PROMPT_TOKEN_BUDGET,
    PromptTooLong,
    StaticCaches,
    batch_plan,
    cache_length,
    generate_cache_kwarg,
    max_visual_tokens,
    warm_up_side,
)
from av_scene_vlm.core.caption_images import as_rgb, to_chw
from av_scene_vlm.core.caption_load import (
    load_captioner,
    resolve_attn_implementation,
    resolve_caption_dtype,
    resolve_compile,
)
from av_scene_vlm.core.device_lock import device_lock
from av_scene_vlm.core.models import (
    DEFAULT_CAPTION_MODEL,
    DEFAULT_MAX_PIXELS,
    DEFAULT_PROMPT,
    ModelLoadError,
    resolve_device,
)

__all__ = [
    "DEFAULT_CAPTION_MODEL",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_PROMPT",
    "CaptionResult",
    "Captioner",
    "ModelLoadError",
    "PromptTooLong",
    "resolve_attn_implementation",
    "resolve_caption_dtype",
    "resolve_compile",
]


@dataclass
class CaptionResult:
    """One caption. `latency` is the wall time of the call that produced it (batch time in a batch)."""

    text: str
    prompt: str
    num_tokens: int  # generated tokens, prompt excluded, a terminating end-of-turn token included
    latency: float  # seconds, preprocessing + generation + decoding
    num_visual_tokens: int  # image tokens fed to the language model (bounded by min/max_pixels)
    model_id: str


class Captioner:
    """Qwen2.5-VL captioner: `caption(image) -> CaptionResult`, greedy by default.

    `min_pixels`/`max_pixels` bound the resized image area and therefore the visual tokens
    (area / 28² per image) — the main cost knob. `max_pixels` defaults to 448×448 (≤ 256 visual
    tokens); None keeps the checkpoint's own bounds. Thread-safe: calls are serialised by a lock
    private to this instance.
    """

    def __init__(
        self,
        model: str = DEFAULT_CAPTION_MODEL,
        *,
        prompt: str = DEFAULT_PROMPT,
        max_new_tokens: int = 64,
        min_pixels: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        device: str = "auto",
        dtype: str = "auto",
        attn_implementation: str = "auto",
        do_sample: bool = False,
        generate_kwargs: Mapping[str, Any] | None = None,
        compile: str = "auto",
        prompt_token_budget: int = DEFAULT_PROMPT_TOKEN_BUDGET,
    ) -> None:
        dev = resolve_device(device)
        compiled = resolve_compile(compile, dev, attn_implementation)  # bad values fail before loading
        net, processor = load_captioner(model, dev, dtype, attn_implementation, compiled)
        self._setup(
            net,
            processor,
            model_id=model,
            prompt=prompt,
            max_new_tokens=max_new_tokens,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            do_sample=do_sample,
            generate_kwargs=generate_kwargs,
            compile=compile,
            prompt_token_budget=prompt_token_budget,
        )

    @classmethod
    def from_model(
        cls, model: Any, processor: Any, *, model_id: str = "<in-memory>", **options: Any
    ) -> Captioner:
        """Wrap an already loaded model + processor (benchmarks with random weights, sharing a model).

        `options`: the constructor's prompt/token/pixel/sampling keywords, with the same defaults.
        """
        self = cls.__new__(cls)
        self._setup(model, processor, model_id=model_id, **options)
        return self

    def _setup(
        self,
        model: Any,
        processor: Any,
        *,
        model_id: str,
        prompt: str = DEFAULT_PROMPT,
        max_new_tokens: int = 64,
        min_pixels: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        do_sample: bool = False,
        generate_kwargs: Mapping[str, Any] | None = None,
        compile: str = "auto",
        prompt_token_budget: int = DEFAULT_PROMPT_TOKEN_BUDGET,
    ) -> None:
        if int(max_new_tokens) < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.model = model.eval()
        self.processor = processor
        self.model_id = model_id
        self.prompt = prompt
        self.max_new_tokens = int(max_new_tokens)
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        # Decoder-only batches must be left padded so every row's last token is its prompt's end.
        processor.tokenizer.padding_side = "left"
        image_processor = processor.image_processor
        self._merge = int(image_processor.merge_size)
        self._factor = int(image_processor.patch_size) * self._merge
        self._size = self._pixel_bounds(image_processor, min_pixels, max_pixels)
        self.compiled = resolve_compile(compile, self.device)
        self.generate_kwargs = dict(generate_kwargs or {})
        self.generation_config = self._generation_config(do_sample)
        self.compile_seconds: float | None = None  # set by warm_up
        self.batch_sizes: tuple[int, ...] = ()  # compiled for these (warm_up); others are padded up
        eos = self.generation_config.eos_token_id
        self._eos = set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])
        self._templates: dict[str, str] = {}
        self._lock = threading.Lock()
        self.device_lock = device_lock(self.device)  # held while decoding compiles or records graphs
        self._setup_budget(int(prompt_token_budget))
        self.check_prompt(prompt)

    def _setup_budget(self, budget: int) -> None:
        """The prompt-token budget and the static caches' length, fixed from here on."""
        if budget < 1:
            raise ValueError(f"prompt_token_budget must be >= 1, got {budget}")
        self.prompt_token_budget = budget
        template = len(self.processor.tokenizer(self._chat_text(""))["input_ids"])
        visual = max_visual_tokens(self._size["longest_edge"], self._factor)
        self.cache_length = cache_length(template, budget, visual, self.max_new_tokens)
        text = self.model.config.get_text_config(decoder=True)
        self.caches = StaticCaches(text, self.cache_length)
        self._cache_kwarg = generate_cache_kwarg()

    def prompt_tokens(self, prompt: str) -> int:
        """Tokens of an instruction (caption prompt or question), as counted against the budget."""
        return len(self.processor.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def check_prompt(self, prompt: str) -> None:
        """PromptTooLong (a ValueError) with the budget when `prompt` has more tokens than it."""
        n = self.prompt_tokens(prompt)
        if n > self.prompt_token_budget:
            raise PromptTooLong(
                f"the prompt is {n} tokens, over the prompt-token budget of {self.prompt_token_budget} "
                "(caption_prompt_token_budget) the static KV cache was sized for at configure; shorten "
                "it, or raise the budget and configure again"
            )

    @staticmethod
    def _pixel_bounds(image_processor: Any, min_pixels: int | None, max_pixels: int | None) -> dict[str, int]:
        size = image_processor.size
        get = size.get if isinstance(size, dict) else lambda key: getattr(size, key, None)
        lo = int(min_pixels) if min_pixels is not None else int(get("shortest_edge") or 56 * 56)
        hi = int(max_pixels) if max_pixels is not None else int(get("longest_edge") or 28 * 28 * 1280)
        if lo < 1 or hi < 1:
            raise ValueError(f"min_pixels and max_pixels must be positive, got {lo} and {hi}")
        if lo > hi:
            raise ValueError(f"min_pixels ({lo}) must not exceed max_pixels ({hi})")
        return {"shortest_edge": lo, "longest_edge": hi}

    def _generation_config(self, do_sample: bool) -> Any:
        gen = copy.deepcopy(self.model.generation_config)
        gen.max_new_tokens = self.max_new_tokens
        gen.do_sample = bool(do_sample)
        if not do_sample:
            # Greedy: neutralise the checkpoint's sampling knobs. Not None: transformers 5 refills
            # None from model.generation_config at generate() and then warns they are ignored.
            gen.temperature = 1.0
            gen.top_p = 1.0
            gen.top_k = 50
        if gen.pad_token_id is None:
            gen.pad_token_id = self.processor.tokenizer.pad_token_id
        if gen.eos_token_id is None:
            gen.eos_token_id = self.processor.tokenizer.eos_token_id
        # Generation options given as keywords live in the config too (transformers 5 deprecates both).
        for key in [k for k in self.generate_kwargs if hasattr(gen, k)]:
            setattr(gen, key, self.generate_kwargs.pop(key))
        if self.compiled:
            from transformers import CompileConfig

            # The cache is ours (caption_cache.StaticCaches), passed to generate: no cache_implementation.
            gen.compile_config = CompileConfig()  # transformers' default: inductor, reduce-overhead
            if self.device.type != "cuda":  # transformers compiles on CUDA only unless told otherwise
                gen.compile_config._compile_all_devices = True
            gen.disable_compile = False
        return gen

    def warm_up(self, batch_sizes: Sequence[int] = (1,)) -> float:
        """Run the captions that compile the decoding step for each of `batch_sizes` (the configured
        prompt, the smallest image the bounds allow: see core/caption_cache.py), before the first real
        one, holding the device's capture lock; returns the seconds it took and keeps them in
        `compile_seconds`. Later batches are padded up to a compiled size within the caller's batch
        limit (`caption_batch`). A no-op (0 s) when not compiling."""
        if not self.compiled:
            self.compile_seconds = 0.0
            return 0.0
        side = warm_up_side(self._size["shortest_edge"], self._factor)
        grey = np.full((side, side, 3), 128, np.uint8)
        sizes = sorted({max(1, int(b)) for b in batch_sizes})
        start = time.perf_counter()
        with self.device_lock:  # no CUDA graph capture on this device meanwhile
            for n in sizes:
                for _ in range(2):  # compile, then record the CUDA graphs
                    self._generate([grey] * n, self.prompt, {"min_new_tokens": self.max_new_tokens}, {})
        self.compile_seconds = time.perf_counter() - start
        self.batch_sizes = tuple(sorted({*self.batch_sizes, *sizes}))
        return self.compile_seconds

    def _chat_text(self, prompt: str) -> str:
        text = self._templates.get(prompt)
        if text is None:
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            self._templates[prompt] = text
        return text

    def caption(self, image: np.ndarray, prompt: str | None = None) -> CaptionResult:
        """Caption one H×W×3 uint8 RGB image (any size) with `prompt` (default: the instance's)."""
        return self.caption_batch([image], prompt)[0]

    def caption_batch(
        self, images: Sequence[np.ndarray], prompt: str | None = None, max_batch: int | None = None
    ) -> list[CaptionResult]:
        """Caption several images in padded `generate` calls; same prompt for all. Padded up to a
        compiled batch size, but never past `max_batch` (the worker's batch limit)."""
        if len(images) == 0:
            return []
        prompt = self.prompt if prompt is None else prompt
        start = time.perf_counter()
        rows: list[tuple[torch.Tensor, torch.Tensor]] = []
        done = 0
        for count, size in batch_plan(len(images), self.batch_sizes, max_batch):
            chunk = list(images[done : done + count])
            generated, grid = self.generate_ids(chunk + [chunk[-1]] * (size - count), prompt)
            rows += [(generated[i], grid[i]) for i in range(count)]
            done += count
        with self._lock:
            texts = self.processor.batch_decode(
                [g for g, _ in rows], skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
        latency = time.perf_counter() - start
        return [
            CaptionResult(
                text=texts[i].strip(),
                prompt=prompt,
                num_tokens=self._count(generated),
                latency=latency,
                num_visual_tokens=int(grid.prod()) // self._merge**2,
                model_id=self.model_id,
            )
            for i, (generated, grid) in enumerate(rows)
        ]

    def ask(self, image: np.ndarray, question: str, **options: Any) -> Any:
        """Answer `question` about one image, streaming the text: see `av_scene_vlm.core.ask.ask`
        for `options` (max_new_tokens, on_text, should_stop, max_question_chars) and the result."""
        from av_scene_vlm.core.ask import ask

        return ask(self, image, question, **options)

    def use_eager(self) -> None:
        """Decode eagerly with the dynamic cache (e.g. after compiling failed; `use_compiled` undoes)."""
        self.compiled = False
        self.batch_sizes = ()
        self.caches.clear()
        self.generation_config.disable_compile = True

    def use_compiled(self) -> None:
        """Compile again (a warm-up retried after a failure), with the options built at start."""
        self.compiled = self.generation_config.compile_config is not None
        self.generation_config.disable_compile = not self.compiled
        self.compile_seconds = None

    def generate_ids(
        self,
        images: Sequence[np.ndarray],
        prompt: str | None = None,
        extra: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(generated token ids B×T on the CPU, image_grid_thw B×3): the raw output of one batched
        `generate`, for captions, questions (core/ask.py) and for checking that compiled and eager
        decoding agree. `overrides`: generation-config fields for this call (e.g. min_new_tokens);
        `extra`: more `generate` arguments (a streamer, stopping criteria). A batch size not yet
        compiled compiles (and records graphs) holding the device's capture lock."""
        prompt = self.prompt if prompt is None else prompt
        if self.compiled and overrides.get("max_new_tokens", 0) > self.max_new_tokens:
            raise ValueError(
                f"max_new_tokens {overrides['max_new_tokens']} is over the {self.max_new_tokens} "
                "(caption_max_new_tokens) the compiled decoder's static cache was sized for"
            )
        if self.compiled and len(images) not in self.batch_sizes:
            with self.device_lock:
                out = self._generate(images, prompt, overrides, extra or {})
            self.batch_sizes = tuple(sorted({*self.batch_sizes, len(images)}))
            return out
        return self._generate(images, prompt, overrides, extra or {})

    def _generate(
        self,
        images: Sequence[np.ndarray],
        prompt: str,
        overrides: Mapping[str, Any],
        extra: Mapping[str, Any],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        frames = [to_chw(as_rgb(img), self._factor) for img in images]
        gen = self.generation_config
        if overrides:
            gen = copy.deepcopy(gen)
            for key, value in overrides.items():
                setattr(gen, key, value)
        if self.compiled:
            self.check_prompt(prompt)
        with self._lock, torch.inference_mode():
            cache: dict[str, Any] = {}
            if self.compiled:  # the batch size's own static cache, emptied: same addresses every call
                cache[self._cache_kwarg] = self.caches.get(len(frames))
            text = self._chat_text(prompt)
            inputs = self.processor(
                text=[text] * len(frames),
                images=frames,
                padding=True,
                return_tensors="pt",
                size=dict(self._size),
            ).to(self.device)
            prompt_len = inputs["input_ids"].shape[1]
            output = self.model.generate(
                **inputs, generation_config=gen, **cache, **extra, **self.generate_kwargs
            )
            generated = output[:, prompt_len:].cpu()
        return generated, inputs["image_grid_thw"].cpu()

    def _count(self, row: torch.Tensor) -> int:
        """Generated tokens up to and including the first end token (padding after it excluded)."""
        for i, token in enumerate(row.tolist()):
            if token in self._eos:
                return i + 1
        return int(row.shape[0])
