"""Random-weight Qwen2.5-VL models (captioner): configs from model_configs/, processor, checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from av_scene_vlm.random_weights.configs import load_config
from av_scene_vlm.random_weights.tokenizers import build_qwen_tokenizer

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

_CONFIG_IDS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
_TEXT_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")


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
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels, **sizes),
        tokenizer=tokenizer if tokenizer is not None else build_qwen_tokenizer(),
        video_processor=Qwen2VLVideoProcessor(**sizes),
        chat_template=QWEN25VL_CHAT_TEMPLATE,
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


def qwen25vl_config(name: str, token_ids: dict[str, int] | None = None, **text: Any) -> Any:
    """The `Qwen2_5_VLConfig` of `model_configs/<name>.json`.

    Special-token ids: `token_ids` if given, else the file's choice ("local": the local tokenizer's;
    "published": Qwen/Qwen2.5-VL-3B-Instruct's). They change no shapes. `text` overrides
    text_config entries (e.g. vocab_size).
    """
    from transformers import Qwen2_5_VLConfig

    spec = load_config(name)
    if token_ids is None:
        published = spec["token_ids"] == "published"
        token_ids = _published_ids() if published else qwen_token_ids(build_qwen_tokenizer())
    text_config = {**spec["text_config"], **text}
    for key in _TEXT_IDS:
        text_config[key] = token_ids[key]
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=spec["vision_config"],
        tie_word_embeddings=text_config.pop("tie_word_embeddings", False),
        **{k: token_ids[k] for k in _CONFIG_IDS},
    )


def _published_ids() -> dict[str, int]:
    return {k: v for k, v in load_config("qwen25vl-published-token-ids").items() if not k.startswith("_")}


def tiny_qwen25vl_config(token_ids: dict[str, int] | None = None, vocab_size: int = 288) -> Any:
    """`qwen25vl-tiny`: ~0.2M parameters (2+2 layers) for unit tests."""
    return qwen25vl_config("qwen25vl-tiny", token_ids, vocab_size=vocab_size)


def small_qwen25vl_config(token_ids: dict[str, int] | None = None) -> Any:
    """`qwen25vl-small`: ~120M parameters, the real vocabulary (CPU caption benchmark)."""
    return qwen25vl_config("qwen25vl-small", token_ids)


def qwen25vl_3b_config(token_ids: dict[str, int] | None = None) -> Any:
    """`qwen25vl-3b`: the architecture of Qwen/Qwen2.5-VL-3B-Instruct (its published config.json)."""
    return qwen25vl_config("qwen25vl-3b", token_ids)


def _generation_config(ids: dict[str, int]) -> Any:
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
    for key in _CONFIG_IDS:
        setattr(config, key, ids[key])
    for key in _TEXT_IDS:
        setattr(config.text_config, key, ids[key])
    config.text_config.vocab_size = max(config.text_config.vocab_size, len(processor.tokenizer))
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype or torch.float32)
    model.generation_config = _generation_config(ids)
    return model.eval(), processor


def build_tiny_qwen25vl(path: str | Path, *, seed: int = 0, config: Any = None) -> Path:
    """Save a random Qwen2.5-VL checkpoint (model, processor, generation config) to `path`.

    Loads with `Qwen2_5_VLForConditionalGeneration.from_pretrained(path)` +
    `AutoProcessor.from_pretrained(path)`, exactly like `Qwen/Qwen2.5-VL-3B-Instruct`.
    Default: `qwen25vl-tiny` (~0.2M parameters, ~0.7 MB). Returns `path`.
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model, processor = random_qwen25vl(config, seed=seed)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out
