"""Random-weight checkpoints for tests, the demo and benchmarks — not product code.

Why: no weights can be downloaded where this project is built and tested, yet tests, the demo
fallback and benchmarks must load models exactly as users load real checkpoints: these builders save
random-weight models with `save_pretrained`, and callers load them back with `from_pretrained`.
Architectures are data (`model_configs/*.json`, as open_clip keeps its model configs); the builders
only add what cannot be data (tokenizers, token ids, seeding). Importing this package is cheap:
transformers and torch load lazily. Nothing here imports rclpy.

| name (model_configs/<name>.json) | what |
|---|---|
| `clip-tiny` | 2-layer CLIP for unit tests |
| `clip-vit-b32` | real ViT-B/32 architecture (benchmarks: timings real, labels not) |
| `qwen25vl-tiny` | ~0.2M-parameter Qwen2.5-VL for unit tests |
| `qwen25vl-small` | ~120M-parameter Qwen2.5-VL (CPU caption benchmark) |
| `qwen25vl-3b` | Qwen/Qwen2.5-VL-3B-Instruct's architecture |
"""

from av_scene_vlm.random_weights.clip import build_clip, build_clip_b32, build_tiny_clip
from av_scene_vlm.random_weights.configs import config_names, load_config
from av_scene_vlm.random_weights.qwen25vl import (
    build_qwen25vl_processor,
    build_tiny_qwen25vl,
    qwen25vl_3b_config,
    qwen25vl_config,
    qwen_token_ids,
    random_qwen25vl,
    small_qwen25vl_config,
    tiny_qwen25vl_config,
)
from av_scene_vlm.random_weights.tokenizers import build_clip_tokenizer, build_qwen_tokenizer

__all__ = [
    "build_clip",
    "build_clip_b32",
    "build_clip_tokenizer",
    "build_qwen25vl_processor",
    "build_qwen_tokenizer",
    "build_tiny_clip",
    "build_tiny_qwen25vl",
    "config_names",
    "load_config",
    "qwen25vl_3b_config",
    "qwen25vl_config",
    "qwen_token_ids",
    "random_qwen25vl",
    "small_qwen25vl_config",
    "tiny_qwen25vl_config",
]
