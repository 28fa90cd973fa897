"""Random-weight CLIP checkpoints (model + processor) saved with `save_pretrained`."""

from __future__ import annotations

from pathlib import Path

from av_scene_vlm.random_weights.configs import load_config
from av_scene_vlm.random_weights.tokenizers import build_clip_tokenizer


def build_clip(name: str, path: str | Path, *, seed: int = 0, **vision: int) -> Path:
    """Save the random CLIP `model_configs/<name>.json` with its processor to `path`; returns `path`.

    `vision` overrides vision_config entries (e.g. image_size, patch_size); the processor's resize and
    crop follow image_size. Deterministic for a given seed.
    """
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    spec = load_config(name)
    kwargs = spec["config"]
    kwargs.setdefault("vision_config", {}).update(vision)
    image_size = int(kwargs["vision_config"].get("image_size", spec["image_size"]))
    config = CLIPConfig(**kwargs)
    tok = build_clip_tokenizer(spec["real_bpe"])
    config.text_config.vocab_size = max(config.text_config.vocab_size, len(tok))
    config.text_config.bos_token_id = tok.bos_token_id
    config.text_config.eos_token_id = tok.eos_token_id
    config.text_config.pad_token_id = tok.pad_token_id
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(out, safe_serialization=True)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(out)
    return out


def build_tiny_clip(path: str | Path, *, seed: int = 0, image_size: int = 224, patch_size: int = 32) -> Path:
    """A tiny random CLIP (`clip-tiny`: 2 layers, width 32) for unit tests.

    The logit scale starts at log(100), like trained CLIP, so probabilities are peaked and parity
    tests compare meaningful numbers rather than near-uniform ones.
    """
    return build_clip("clip-tiny", path, seed=seed, image_size=image_size, patch_size=patch_size)


def build_clip_b32(path: str | Path, *, seed: int = 0) -> Path:
    """A random-weight CLIP with the real ViT-B/32 architecture (`clip-vit-b32`): timings are real,
    labels are not."""
    return build_clip("clip-vit-b32", path, seed=seed)
