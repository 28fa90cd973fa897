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
takes about a minute, so `warm_up()` does it up front on the caller's (worker) thread.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from av_scene_vlm.core.backend_options import check_switch
from av_scene_vlm.core.caption_images import as_rgb, to_chw
from av_scene_vlm.core.models import (
    DEFAULT_CAPTION_MODEL,
    DEFAULT_MAX_PIXELS,
    DEFAULT_PROMPT,
    OLD_CLI_NOTE,
    ModelLoadError,
    from_pretrained,
    resolve_device,
    resolve_dtype,
)

__all__ = [
    "DEFAULT_CAPTION_MODEL",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_PROMPT",
    "CaptionResult",
    "Captioner",
    "ModelLoadError",
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


def resolve_caption_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' -> bfloat16 on CUDA (float16 where bf16 is unsupported), float32 on CPU."""
    if (dtype or "auto").strip().lower() != "auto":
        return resolve_dtype(dtype, device)
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def resolve_attn_implementation(attn_implementation: str, device: torch.device, dtype: torch.dtype) -> str:
    """'auto' -> flash_attention_2 if flash_attn is installed and usable (CUDA, fp16/bf16), else sdpa."""
    attn = (attn_implementation or "auto").strip().lower()
    if attn != "auto":
        return attn
    if (
        device.type == "cuda"
        and dtype in (torch.float16, torch.bfloat16)
        and importlib.util.find_spec("flash_attn") is not None
    ):
        return "flash_attention_2"
    return "sdpa"


def resolve_compile(mode: str, device: torch.device) -> bool:
    """'auto' -> compile (static cache + compiled decode step) on CUDA only; 'on'/'off' as given."""
    key = check_switch("compile", mode or "auto")
    return key == "on" or (key == "auto" and device.type == "cuda")


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
    ) -> None:
        dev = resolve_device(device)
        resolve_compile(compile, dev)  # a bad value fails before the model loads
        dt = resolve_caption_dtype(dtype, dev)
        attn = resolve_attn_implementation(attn_implementation, dev, dt)
        net, processor = _load(model, dev, dt, attn)
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

            gen.cache_implementation = "static"
            gen.compile_config = CompileConfig()  # transformers' default: inductor, reduce-overhead
            if self.device.type != "cuda":  # transformers compiles on CUDA only unless told otherwise
                gen.compile_config._compile_all_devices = True
            gen.disable_compile = False
        return gen

    def warm_up(self, batch_sizes: Sequence[int] = (1,)) -> float:
        """Run the captions that compile the decoding step (static cache sized for the largest image)
        for each of `batch_sizes`, before the first real one; returns the seconds it took and keeps
        them in `compile_seconds`. Later batches of another size are padded up to the next compiled
        size (decoding a few more rows costs little; compiling again would stall for a minute).
        A no-op (0 s) when not compiling."""
        if not self.compiled:
            self.compile_seconds = 0.0
            return 0.0
        side = int(math.sqrt(self._size["longest_edge"])) // self._factor * self._factor
        grey = np.full((max(side, self._factor), max(side, self._factor), 3), 128, np.uint8)
        sizes = sorted({max(1, int(b)) for b in batch_sizes})
        start = time.perf_counter()
        for n in sizes:
            for _ in range(2):  # compile, then record the CUDA graphs
                self.generate_ids([grey] * n, min_new_tokens=self.max_new_tokens)
        self.compile_seconds = time.perf_counter() - start
        self.batch_sizes = tuple(sizes)
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

    def caption_batch(self, images: Sequence[np.ndarray], prompt: str | None = None) -> list[CaptionResult]:
        """Caption several images in one padded `generate` call; same prompt for all."""
        if len(images) == 0:
            return []
        prompt = self.prompt if prompt is None else prompt
        start = time.perf_counter()
        n = len(images)
        padded = list(images) + [images[-1]] * (self._padded_size(n) - n)
        generated, grid = self.generate_ids(padded, prompt)
        generated, grid = generated[:n], grid[:n]
        with self._lock:
            texts = self.processor.batch_decode(
                generated, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
        latency = time.perf_counter() - start
        return [
            CaptionResult(
                text=texts[i].strip(),
                prompt=prompt,
                num_tokens=self._count(generated[i]),
                latency=latency,
                num_visual_tokens=int(grid[i].prod()) // self._merge**2,
                model_id=self.model_id,
            )
            for i in range(len(images))
        ]

    def ask(self, image: np.ndarray, question: str, **options: Any) -> Any:
        """Answer `question` about one image, streaming the text: see `av_scene_vlm.core.ask.ask`
        for `options` (max_new_tokens, on_text, should_stop, max_question_chars) and the result."""
        from av_scene_vlm.core.ask import ask

        return ask(self, image, question, **options)

    def use_eager(self) -> None:
        """Decode eagerly with the dynamic cache from now on (e.g. after compiling failed)."""
        self.compiled = False
        self.batch_sizes = ()
        gen = self.generation_config
        gen.cache_implementation, gen.compile_config, gen.disable_compile = None, None, True

    def _padded_size(self, n: int) -> int:
        """The compiled batch size a batch of `n` is padded to (n itself when none is larger)."""
        return min((b for b in self.batch_sizes if b >= n), default=n)

    def generate_ids(
        self, images: Sequence[np.ndarray], prompt: str | None = None, **overrides: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(generated token ids B×T on the CPU, image_grid_thw B×3): the raw output of one batched
        `generate`, for captions and for checking that compiled and eager decoding agree.
        `overrides`: generation-config fields for this call (e.g. min_new_tokens)."""
        prompt = self.prompt if prompt is None else prompt
        frames = [to_chw(as_rgb(img), self._factor) for img in images]
        gen = self.generation_config
        if overrides:
            gen = copy.deepcopy(gen)
            for key, value in overrides.items():
                setattr(gen, key, value)
        with self._lock, torch.inference_mode():
            text = self._chat_text(prompt)
            inputs = self.processor(
                text=[text] * len(frames),
                images=frames,
                padding=True,
                return_tensors="pt",
                size=dict(self._size),
            ).to(self.device)
            prompt_len = inputs["input_ids"].shape[1]
            output = self.model.generate(**inputs, generation_config=gen, **self.generate_kwargs)
            generated = output[:, prompt_len:].cpu()
        return generated, inputs["image_grid_thw"].cpu()

    def _count(self, row: torch.Tensor) -> int:
        """Generated tokens up to and including the first end token (padding after it excluded)."""
        for i, token in enumerate(row.tolist()):
            if token in self._eos:
                return i + 1
        return int(row.shape[0])


def _load(model: str, device: torch.device, dtype: torch.dtype, attn: str) -> tuple[Any, Any]:
    """Load model + processor, turning every failure into a ModelLoadError naming `model`."""
    try:
        from transformers import AutoConfig, AutoProcessor, Qwen2_5_VLForConditionalGeneration

        config = from_pretrained(AutoConfig, model, example=DEFAULT_CAPTION_MODEL)
        if getattr(config, "model_type", None) != "qwen2_5_vl":
            raise ModelLoadError(
                f"model '{model}' is a '{getattr(config, 'model_type', '?')}' checkpoint, "
                f"not Qwen2.5-VL (e.g. {DEFAULT_CAPTION_MODEL})"
            )
        processor = from_pretrained(AutoProcessor, model, example=DEFAULT_CAPTION_MODEL)
        net = from_pretrained(
            Qwen2_5_VLForConditionalGeneration,
            model,
            example=DEFAULT_CAPTION_MODEL,
            config=config,
            dtype=dtype,
            attn_implementation=attn,
        )
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
    return net.to(device).eval(), processor
