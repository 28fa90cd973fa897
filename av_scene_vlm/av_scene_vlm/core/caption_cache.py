"""The compiled captioner's fixed shapes: the static KV cache per batch size, its length, the prompt
budget, the batch-size plan, and which attention works with compiled decoding.

Why: compiled decoding (torch.compile, mode reduce-overhead) records CUDA graphs for the decoding
step; they stay valid only while its shapes and the cache's addresses do. transformers 5.24 builds a
new `StaticCache` in every `generate()` (generation/utils.py, `_prepare_static_cache`: `cache =
StaticCache(**self_attention_cache_kwargs)`), so each caption would record graphs again and keep the
old ones. Here one cache per compiled batch size is made once, `reset()` before each call and passed
to `generate` (as `cache=`, 5.24's name, or `past_key_values=` before: `generate_cache_kwarg`). Its length is
fixed when the captioner is built: the chat template's tokens + the prompt-token budget + the most
visual tokens `max_pixels` allows + `max_new_tokens`; a prompt within the budget never changes a
compiled shape, one over it is refused with the budget in the reason. The prefill is not compiled
(transformers compiles the decoding step only), so the warm-up image only needs to be small.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

DEFAULT_PROMPT_TOKEN_BUDGET = 256  # tokens of the instruction (caption prompt, or a question)


class PromptTooLong(ValueError):
    """A prompt over the prompt-token budget the static cache was sized for."""


def check_attn_for_compile(attn: str, compile_mode: str) -> None:
    """flash_attention_2 with compiled decoding `on` is refused (ValueError with the reason): with a
    static cache FA2 gets the 2-D mask, which grows each token, and its `_get_unpad_data`
    (modeling_flash_attention_utils.py) calls `torch.nonzero` and `.item()`, so the compiled step
    recompiles or breaks per token. sdpa takes the static 4-D mask."""
    if (attn or "").strip().lower() == "flash_attention_2" and (compile_mode or "").strip().lower() in (
        "on",
        "true",
        "yes",
        "1",
    ):
        raise ValueError(
            "attn_implementation flash_attention_2 does not work with compiled decoding (compile on): "
            "its per-token mask and host syncs recompile the step every token; use sdpa (or auto), "
            "or compile off"
        )


def max_visual_tokens(max_pixels: int, factor: int) -> int:
    """The most visual tokens an image resized to at most `max_pixels` can give (one per factor²)."""
    return max(1, max_pixels // (factor * factor))


def cache_length(template_tokens: int, prompt_budget: int, visual_tokens: int, max_new_tokens: int) -> int:
    """Tokens the static cache holds per row: every prompt within the budget, any image, all new tokens."""
    return template_tokens + prompt_budget + visual_tokens + max_new_tokens


def warm_up_side(min_pixels: int, factor: int) -> int:
    """Side of the square grey image the warm-up captions: the smallest the bounds allow (the compiled
    decoding step's shapes depend on the batch size and the cache length, not the image)."""
    return max(2 * factor, math.ceil(math.sqrt(min_pixels) / factor) * factor)


def batch_plan(n: int, compiled: Sequence[int], limit: int | None = None) -> list[tuple[int, int]]:
    """(images, padded size) chunks for a batch of `n`: padded up to the smallest compiled size that
    holds it, but never past `limit` (the worker's batch limit after a failure: padding a halved batch
    back up would fail again); otherwise chunks of the largest compiled size that fits. No compiled
    size fits: the batch as it is (decoding compiles for it)."""
    cap = n if limit is None else max(1, min(limit, n))
    fits = [b for b in compiled if n <= b <= (limit if limit is not None else b)]
    if fits:
        return [(n, min(fits))]
    smaller = [b for b in compiled if b <= cap]
    if not smaller:
        return [(n, n)]
    size = max(smaller)
    return [(min(size, n - start), size) for start in range(0, n, size)]


def generate_cache_kwarg() -> str:
    """`generate()`'s keyword for a cache passed in: `cache` where transformers renamed it (5.24:
    generation/utils.py `ALL_CACHE_NAMES = ["cache"] + DEPRECATED_CACHE_NAMES`), `past_key_values` in the
    releases before (setup.py allows 5.0; the GPU machine's suite runs 5.17), where `cache=` would be an
    unused model kwarg and every compiled caption would fail."""
    from transformers.generation import utils

    names = getattr(utils, "ALL_CACHE_NAMES", None) or ()
    return "cache" if "cache" in names else "past_key_values"


class StaticCaches:
    """One transformers `StaticCache` per batch size, `max_cache_len` fixed; `get` resets it."""

    def __init__(self, config: Any, max_cache_len: int) -> None:
        self.config = config
        self.max_cache_len = max_cache_len
        self._caches: dict[int, Any] = {}

    def get(self, batch_size: int) -> Any:
        """The batch size's cache, emptied (`reset` zeroes keys, values and lengths in place: the
        tensors, hence the compiled graphs' addresses, stay). Call it under inference mode, as
        `generate` fills it there."""
        cache = self._caches.get(batch_size)
        if cache is None:
            from transformers import StaticCache

            cache = self._caches[batch_size] = StaticCache(
                config=self.config, max_cache_len=self.max_cache_len
            )
        else:
            cache.reset()
        return cache

    def sizes(self) -> tuple[int, ...]:
        return tuple(sorted(self._caches))

    def storage(self, batch_size: int) -> int | None:
        """Address of the batch size's first key tensor (None before its first use): what compiled
        graphs are recorded against, so the same address across calls means no re-recording."""
        cache = self._caches.get(batch_size)
        layer = cache.layers[0] if cache is not None else None
        return (
            layer.keys.data_ptr() if layer is not None and getattr(layer, "is_initialized", False) else None
        )

    def clear(self) -> None:
        """Drop every cache (their memory returns to the allocator)."""
        self._caches.clear()
