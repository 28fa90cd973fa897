"""The random-weight model builders (tests, demo, benchmarks): configs are data, builds are deterministic."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from av_scene_vlm.random_weights import build_tiny_clip, config_names, load_config, qwen25vl_config


def _digest(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}


def test_every_shipped_config_is_a_valid_transformers_config() -> None:
    from transformers import CLIPConfig

    names = config_names()
    assert {"clip-tiny", "clip-vit-b32", "qwen25vl-tiny", "qwen25vl-small", "qwen25vl-3b"} <= set(names)
    for name in names:
        if name.startswith("clip-"):
            config = CLIPConfig(**load_config(name)["config"])
            assert config.vision_config.patch_size > 0
        elif name.startswith("qwen25vl-") and "token-ids" not in name:
            config = qwen25vl_config(name)
            text = config.text_config
            head_dim = text.hidden_size // text.num_attention_heads
            # Qwen2.5-VL's multimodal rope needs mrope_section to cover half a head.
            assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2, name
            assert config.vision_config.out_hidden_size == text.hidden_size, name


def test_load_config_returns_a_copy_and_names_unknown_configs() -> None:
    first = load_config("clip-tiny")
    first["config"]["projection_dim"] = -1
    assert load_config("clip-tiny")["config"]["projection_dim"] == 16
    with pytest.raises(KeyError, match="clip-tiny"):
        load_config("no-such-model")


def test_3b_config_has_the_published_architecture() -> None:
    config = qwen25vl_config("qwen25vl-3b")
    assert (config.text_config.hidden_size, config.text_config.num_hidden_layers) == (2048, 36)
    assert (config.vision_config.depth, config.vision_config.hidden_size) == (32, 1280)
    assert config.image_token_id == 151655


def test_tiny_clip_build_is_deterministic_per_seed(tmp_path: Path) -> None:
    a = _digest(build_tiny_clip(tmp_path / "a", seed=3))
    b = _digest(build_tiny_clip(tmp_path / "b", seed=3))
    c = _digest(build_tiny_clip(tmp_path / "c", seed=4))
    assert a == b
    assert a["model.safetensors"] != c["model.safetensors"]
