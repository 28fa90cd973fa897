"""Random-weight checkpoints built offline, loaded back through `from_pretrained`.

Why: no weights can be downloaded here, yet tests, demos and benchmarks must exercise the exact
loading path users take for the published checkpoints. Every builder is deterministic
(`torch.manual_seed`) and imports transformers lazily, so importing this module stays cheap.
Nothing here imports rclpy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------------------------
# Qwen2.5-VL (captioner): tiny/small/3B-architecture configs, a local tokenizer, the processor.
# Self-contained section: shares nothing with other builders in this module.
# ---------------------------------------------------------------------------------------------

QWEN_MODEL_ID = "Qwen/Qwen2.5-VL-3B-Instruct"

# Qwen2.5-VL's special tokens, in the order (and so with the relative ids) of the real tokenizer,
# where they follow the BPE vocabulary (<|endoftext|> = 151643 ... <|video_pad|> = 151656).
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Same structure as the template shipped with Qwen2.5-VL-*-Instruct (ChatML; a default system turn;
# each image becomes <|vision_start|><|image_pad|><|vision_end|>, expanded later by the processor).
QWEN25VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _qwen_bytes_to_unicode() -> list[str]:
    """The byte-level alphabet indexed by byte value, so token id == byte value."""
    from av_scene_vlm.core.random_clip import bytes_to_unicode

    table = bytes_to_unicode()
    return [table[b] for b in range(256)]


def build_qwen_tokenizer() -> Any:
    """A Qwen2 byte-level BPE tokenizer (256 byte tokens, a few merges, Qwen's special tokens).

    Why: the real tokenizer cannot be downloaded; this one uses the same class (`Qwen2Tokenizer`,
    Qwen's pre-tokenizer regex and byte-level decoder), the same special tokens and the same
    eos/pad choice (<|im_end|> / <|endoftext|>), so the processor and generation behave alike.
    """
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    chars = _qwen_bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    space = chars[ord(" ")]
    merges = [(space, "a"), ("t", "h"), (space + "a", "r"), ("th", "e"), (space, "th" + "e")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    for tok in QWEN_SPECIAL_TOKENS:
        vocab[tok] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=[AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS[1:]],
        model_max_length=32768,
    )
    return tokenizer


def build_qwen25vl_processor(
    tokenizer: Any = None,
    *,
    patch_size: int = 14,
    merge_size: int = 2,
    temporal_patch_size: int = 2,
    min_pixels: int = 56 * 56,
    max_pixels: int = 12845056,
) -> Any:
    """A `Qwen2_5_VLProcessor` (image + video processor, tokenizer, chat template).

    Patch/merge/temporal sizes must equal the vision config's; the pixel bounds default to the
    published preprocessor_config.json values (3136 and 12845056).
    """
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    sizes = dict(patch_size=patch_size, merge_size=merge_size, temporal_patch_size=temporal_patch_size)
    image_processor = Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels, **sizes)
    video_processor = Qwen2VLVideoProcessor(**sizes)
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer if tokenizer is not None else build_qwen_tokenizer(),
        video_processor=video_processor,
        chat_template=QWEN25VL_CHAT_TEMPLATE,
    )


def _qwen_config(text: dict[str, Any], vision: dict[str, Any], token_ids: dict[str, int] | None) -> Any:
    from transformers import Qwen2_5_VLConfig

    ids = token_ids or {}
    text = dict(text)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if key in ids:
            text[key] = ids[key]
    top = {
        k: ids[k]
        for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    }
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        tie_word_embeddings=text.pop("tie_word_embeddings", False),
        **top,
    )


def qwen_token_ids(tokenizer: Any) -> dict[str, int]:
    """The config-level token ids a Qwen2.5-VL config must share with `tokenizer`."""
    tid = tokenizer.convert_tokens_to_ids
    return {
        "bos_token_id": tid("<|endoftext|>"),
        "eos_token_id": tid("<|im_end|>"),
        "pad_token_id": tid("<|endoftext|>"),
        "image_token_id": tid("<|image_pad|>"),
        "video_token_id": tid("<|video_pad|>"),
        "vision_start_token_id": tid("<|vision_start|>"),
        "vision_end_token_id": tid("<|vision_end|>"),
    }


# Published ids of Qwen/Qwen2.5-VL-3B-Instruct's config.json.
_QWEN_REAL_TOKEN_IDS = {
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "pad_token_id": 151643,
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
}


def tiny_qwen25vl_config(token_ids: dict[str, int] | None = None, vocab_size: int = 288) -> Any:
    """A ~0.2M-parameter Qwen2.5-VL config (2+2 layers) for unit tests.

    Real patch 14 / merge 2 / temporal 2, so visual-token counts equal the real model's.
    mrope_section sums to head_dim / 2 (16 / 2 = 8). Token ids default to the local tokenizer's.
    """
    text = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1000000.0},
        tie_word_embeddings=True,
    )
    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=[1],
        tokens_per_second=2,
        out_hidden_size=64,
    )
    return _qwen_config(text, vision, token_ids or qwen_token_ids(build_qwen_tokenizer()))


def small_qwen25vl_config(token_ids: dict[str, int] | None = None) -> Any:
    """A ~120M-parameter Qwen2.5-VL config (CPU benchmark): 8 text layers of width 512 with the
    real 151936-token vocabulary (so the LM head costs what it costs), 8 vision blocks of width 384."""
    text = dict(
        vocab_size=151936,
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "mrope_section": [8, 12, 12], "rope_theta": 1000000.0},
        tie_word_embeddings=True,
    )
    vision = dict(
        depth=8,
        hidden_size=384,
        intermediate_size=1024,
        num_heads=6,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=[3, 7],
        tokens_per_second=2,
        out_hidden_size=512,
    )
    return _qwen_config(text, vision, token_ids or _QWEN_REAL_TOKEN_IDS)


def qwen25vl_3b_config(token_ids: dict[str, int] | None = None) -> Any:
    """The architecture of Qwen/Qwen2.5-VL-3B-Instruct (values of its published config.json).

    Text: hidden 2048, 36 layers, 16 heads / 2 KV heads (head_dim 128), MLP 11008, vocab 151936,
    tied embeddings, mrope [16, 24, 24], rope_theta 1e6, max positions 128000.
    Vision: depth 32, hidden 1280, 16 heads, MLP 3420, patch 14, merge 2, temporal 2, window 112,
    full attention in blocks 7/15/23/31, out_hidden_size 2048.
    `token_ids` overrides the special-token ids (to pair random weights with a local tokenizer);
    they change no shapes.
    """
    text = dict(
        vocab_size=151936,
        hidden_size=2048,
        intermediate_size=11008,
        num_hidden_layers=36,
        num_attention_heads=16,
        num_key_value_heads=2,
        hidden_act="silu",
        max_position_embeddings=128000,
        max_window_layers=70,
        rms_norm_eps=1e-6,
        use_sliding_window=False,
        sliding_window=32768,
        attention_dropout=0.0,
        rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1000000.0},
        tie_word_embeddings=True,
    )
    vision = dict(
        depth=32,
        hidden_act="silu",
        hidden_size=1280,
        intermediate_size=3420,
        num_heads=16,
        in_channels=3,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31],
        tokens_per_second=2,
        out_hidden_size=2048,
    )
    return _qwen_config(text, vision, token_ids or _QWEN_REAL_TOKEN_IDS)


def _qwen_generation_config(ids: dict[str, int]) -> Any:
    """Mirror of the published generation_config.json (the captioner overrides sampling)."""
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=ids["bos_token_id"],
        pad_token_id=ids["pad_token_id"],
        eos_token_id=[ids["eos_token_id"], ids["bos_token_id"]],
        do_sample=True,
        repetition_penalty=1.05,
        temperature=0.1,
        top_p=0.001,
        top_k=1,
    )


def random_qwen25vl(
    config: Any = None,
    *,
    seed: int = 0,
    device: Any = "cpu",
    dtype: Any = None,
    attn_implementation: str = "sdpa",
) -> tuple[Any, Any]:
    """An in-memory random Qwen2.5-VL `(model, processor)` pair (eval mode) for `config`.

    Why: large configs (3B) are benchmarked without writing gigabytes to disk; weights are
    initialised directly on `device`. `config` defaults to the tiny one; its special-token ids
    are replaced by the local tokenizer's (no shape changes).
    """
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    processor = build_qwen25vl_processor()
    ids = qwen_token_ids(processor.tokenizer)
    config = config if config is not None else tiny_qwen25vl_config(ids)
    _apply_token_ids(config, ids)
    config.text_config.vocab_size = max(config.text_config.vocab_size, len(processor.tokenizer))
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype or torch.float32)
    model.generation_config = _qwen_generation_config(ids)
    return model.eval(), processor


def _apply_token_ids(config: Any, ids: dict[str, int]) -> None:
    for key in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
        setattr(config, key, ids[key])
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(config.text_config, key, ids[key])


def build_tiny_qwen25vl(path: str | Path, *, seed: int = 0, config: Any = None) -> Path:
    """Save a random Qwen2.5-VL checkpoint (model, processor, generation config) to `path`.

    Loads with `Qwen2_5_VLForConditionalGeneration.from_pretrained(path)` +
    `AutoProcessor.from_pretrained(path)`, exactly like `Qwen/Qwen2.5-VL-3B-Instruct`.
    Default: the tiny config (~0.2M parameters, ~0.7 MB). Returns `path`.
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model, processor = random_qwen25vl(config, seed=seed)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out
