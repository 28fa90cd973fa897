"""Qwen2.5-VL captioner on a tiny random checkpoint, offline: any image size, budgets, CLI, errors.

Random weights produce arbitrary text, so the tests check types, token counts and the visual-token
budget (min/max_pixels), not wording.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from av_scene_vlm.cli.main import main
from av_scene_vlm.core.captioner import Captioner, CaptionResult, ModelLoadError

MAX_NEW = 6


@pytest.fixture(scope="module")
def captioner(tiny_qwen: Path) -> Captioner:
    return Captioner(str(tiny_qwen), max_new_tokens=MAX_NEW)


def test_checkpoint_loads_like_the_hub_model(tiny_qwen: Path) -> None:
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_qwen)
    processor = AutoProcessor.from_pretrained(tiny_qwen)
    tok = processor.tokenizer
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert model.config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert processor.image_processor.patch_size == model.config.vision_config.patch_size
    assert processor.image_processor.merge_size == model.config.vision_config.spatial_merge_size
    assert processor.video_processor.temporal_patch_size == model.config.vision_config.temporal_patch_size
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.endswith(
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_3b_config_matches_published_architecture() -> None:
    from av_scene_vlm.random_weights import qwen25vl_3b_config

    cfg = qwen25vl_3b_config()
    text, vision = cfg.text_config, cfg.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (2048, 36, 16)
    assert (text.num_key_value_heads, text.intermediate_size, text.vocab_size) == (2, 11008, 151936)
    assert (vision.depth, vision.hidden_size, vision.out_hidden_size) == (32, 1280, 2048)
    assert sum(text.rope_parameters["mrope_section"]) == text.hidden_size // text.num_attention_heads // 2
    assert cfg.image_token_id == 151655 and cfg.tie_word_embeddings


@pytest.mark.parametrize("shape", [(1, 1, 3), (7, 300, 3), (480, 640, 3)])
def test_caption_any_size(captioner: Captioner, shape: tuple[int, int, int]) -> None:
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    result = captioner.caption(image)
    assert isinstance(result, CaptionResult)
    assert isinstance(result.text, str)
    assert 1 <= result.num_tokens <= MAX_NEW
    assert result.latency > 0
    assert result.num_visual_tokens >= 4  # at least one 2×2 merge of 14-px patches of a 28×28 image
    assert result.prompt == captioner.prompt and result.model_id == captioner.model_id


def test_greedy_is_deterministic_and_prompt_overridable(captioner: Captioner) -> None:
    image = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    a, b = captioner.caption(image), captioner.caption(image)
    assert a.text == b.text and a.num_tokens == b.num_tokens
    assert captioner.caption(image, prompt="Any pedestrians?").prompt == "Any pedestrians?"


def test_max_new_tokens_respected(tiny_qwen: Path) -> None:
    short = Captioner(str(tiny_qwen), max_new_tokens=3)
    image = np.zeros((120, 160, 3), np.uint8)
    assert 1 <= short.caption(image).num_tokens <= 3
    with pytest.raises(ValueError):
        Captioner(str(tiny_qwen), max_new_tokens=0)


def test_pixel_bounds_set_visual_tokens(captioner: Captioner) -> None:
    big = np.random.default_rng(2).integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    small_budget = Captioner.from_model(captioner.model, captioner.processor, max_pixels=224 * 224)
    large_budget = Captioner.from_model(captioner.model, captioner.processor, max_pixels=448 * 448)
    n_small = small_budget.caption(big).num_visual_tokens
    n_large = large_budget.caption(big).num_visual_tokens
    assert n_small * 28 * 28 <= 224 * 224 and n_large * 28 * 28 <= 448 * 448
    assert n_large > 2 * n_small
    tiny = np.zeros((30, 30, 3), np.uint8)
    floor = Captioner.from_model(captioner.model, captioner.processor, min_pixels=112 * 112)
    assert captioner.caption(tiny).num_visual_tokens == 4
    assert floor.caption(tiny).num_visual_tokens >= 16
    with pytest.raises(ValueError):
        Captioner.from_model(captioner.model, captioner.processor, min_pixels=10_000, max_pixels=1_000)


def test_batch_left_padded(captioner: Captioner) -> None:
    rng = np.random.default_rng(3)
    images = [
        rng.integers(0, 256, (40, 60, 3), dtype=np.uint8),
        rng.integers(0, 256, (300, 400, 3), dtype=np.uint8),
    ]
    results = captioner.caption_batch(images, prompt="Describe.")
    assert len(results) == 2 and captioner.caption_batch([]) == []
    assert results[0].num_visual_tokens < results[1].num_visual_tokens
    assert all(1 <= r.num_tokens <= MAX_NEW and r.prompt == "Describe." for r in results)
    assert captioner.processor.tokenizer.padding_side == "left"


def test_rejects_bad_arrays(captioner: Captioner) -> None:
    with pytest.raises(ValueError):
        captioner.caption(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError):
        captioner.caption(np.zeros((10, 10, 2), np.uint8))
    with pytest.raises(TypeError):
        captioner.caption("frame.png")  # type: ignore[arg-type]


def test_cli_human_and_json(tiny_qwen: Path, image_files: list[str], capsys: pytest.CaptureFixture) -> None:
    common = ["--model", str(tiny_qwen), "--max-new-tokens", "4", "--device", "cpu"]
    assert main(["caption", *image_files, *common]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(image_files)
    assert all(line.startswith(f"{path}: ") for line, path in zip(lines, image_files, strict=True))
    assert main(["caption", image_files[0], *common, "--json", "--max-pixels", "50176"]) == 0
    (obj,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert set(obj) == {"image", "text", "num_tokens", "latency", "model"}
    assert obj["image"] == image_files[0] and obj["model"] == str(tiny_qwen)
    assert 1 <= obj["num_tokens"] <= 4 and obj["latency"] > 0 and isinstance(obj["text"], str)


def test_cli_subprocess_offline(tiny_qwen: Path, image_files: list[str], run_cli) -> None:
    proc = run_cli("caption", image_files[1], "--model", str(tiny_qwen), "--max-new-tokens", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    (obj,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert obj["image"] == image_files[1] and 1 <= obj["num_tokens"] <= 2


def test_cli_unreadable_image(tiny_qwen: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    assert main(["caption", str(bad), "--model", str(tiny_qwen)]) == 1
    err = capsys.readouterr().err
    assert "cannot read image" in err and str(bad) in err and "Traceback" not in err


@pytest.mark.parametrize("model", ["/nonexistent/qwen25vl-dir", "nobody/no-such-qwen-vl"])
def test_cli_missing_model(
    model: str, image_files: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["caption", image_files[0], "--model", model]) == 1  # a missing model, as for the nodes
    err = capsys.readouterr().err
    assert model in err and "hf download" in err and "Traceback" not in err
    with pytest.raises(ModelLoadError, match="hf download"):
        Captioner(model)


def test_cli_rejects_non_qwen_checkpoint(tmp_path: Path, image_files: list[str], capsys) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip"}))
    assert main(["caption", image_files[0], "--model", str(tmp_path)]) == 1
    assert "not Qwen2.5-VL" in capsys.readouterr().err


# ---- static KV cache and the compiled decoding step -----------------------------------------------
def _frames() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [rng.integers(0, 256, s, dtype=np.uint8) for s in [(90, 160, 3), (120, 120, 3), (60, 200, 3)]]


def test_compile_option_resolves_by_device(tiny_qwen: Path) -> None:
    from av_scene_vlm.core.captioner import resolve_compile

    assert resolve_compile("auto", torch.device("cpu")) is False
    assert resolve_compile("auto", torch.device("cuda")) is True
    assert resolve_compile("off", torch.device("cuda")) is False
    with pytest.raises(ValueError, match="compile must be auto, on or off"):
        Captioner(str(tiny_qwen), compile="fast")


def test_static_cache_gives_the_eager_tokens(tiny_qwen: Path) -> None:
    """The static KV cache (what compile uses) decodes the same greedy tokens as the dynamic one,
    for a padded batch of differently sized frames."""
    eager = Captioner(str(tiny_qwen), max_new_tokens=MAX_NEW, compile="off")
    static = Captioner(
        str(tiny_qwen),
        max_new_tokens=MAX_NEW,
        compile="off",
        generate_kwargs={"cache_implementation": "static", "disable_compile": True},
    )
    assert static.generation_config.cache_implementation == "static"
    frames = _frames()
    want, _ = eager.generate_ids(frames, min_new_tokens=MAX_NEW)
    got, _ = static.generate_ids(frames, min_new_tokens=MAX_NEW)
    assert want.shape == (3, MAX_NEW)
    assert torch.equal(got, want)


def test_compiled_decoding_gives_the_eager_tokens(tiny_qwen: Path) -> None:
    """compile=on (static cache + torch.compile of the decoding step; on a CPU through inductor's C++
    backend) warms up once, then decodes exactly the eager path's greedy tokens."""
    eager = Captioner(str(tiny_qwen), max_new_tokens=4, compile="off")
    compiled = Captioner(str(tiny_qwen), max_new_tokens=4, compile="on")
    assert compiled.compiled and compiled.generation_config.compile_config is not None
    seconds = compiled.warm_up(batch_sizes=[2])
    assert seconds > 0 and compiled.compile_seconds == seconds
    frames = _frames()[:2]
    want, _ = eager.generate_ids(frames, min_new_tokens=4)
    got, _ = compiled.generate_ids(frames, min_new_tokens=4)
    assert torch.equal(got, want)
    # The batch size's one static cache, reset in place: the compiled step's graphs keep their addresses.
    storage = compiled.caches.storage(2)
    again, _ = compiled.generate_ids(frames, min_new_tokens=4)
    assert storage is not None and compiled.caches.storage(2) == storage and torch.equal(again, want)
    assert [r.num_tokens for r in compiled.caption_batch(frames)] == [
        r.num_tokens for r in eager.caption_batch(frames)
    ]
    # One camera due alone: padded up to the compiled batch of 2 (no new compile), one caption back.
    assert compiled.batch_sizes == (2,)
    single = compiled.caption_batch(frames[:1])
    assert len(single) == 1 and single[0].num_tokens == eager.caption(frames[0]).num_tokens
    assert eager.warm_up() == 0.0  # nothing to compile


def test_auto_dtype_on_a_cpu_is_the_checkpoints_bf16_where_the_cpu_has_it(
    tiny_qwen: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Qwen2.5-VL is published in bf16: `auto` on a CPU keeps it where the CPU computes bf16 natively
    (AVX512_BF16 / AMX, simulated with $AV_SCENE_VLM_CPU_FLAGS), else float32; an fp32 checkpoint (the
    tests' tiny one) and an explicit dtype stay as they are."""
    import shutil

    bf16 = tmp_path / "tiny-bf16"
    shutil.copytree(tiny_qwen, bf16)
    config = json.loads((bf16 / "config.json").read_text())
    config["dtype"] = "bfloat16"  # what Qwen/Qwen2.5-VL-3B-Instruct's config.json declares
    (bf16 / "config.json").write_text(json.dumps(config))
    frame = np.full((64, 64, 3), 90, np.uint8)

    monkeypatch.setenv("AV_SCENE_VLM_CPU_FLAGS", "avx512f avx512_bf16")
    native = Captioner(str(bf16), device="cpu", max_new_tokens=3)
    assert native.model.dtype == torch.bfloat16
    assert native.caption(frame).num_tokens >= 1
    assert Captioner(str(tiny_qwen), device="cpu").model.dtype == torch.float32  # an fp32 checkpoint
    assert Captioner(str(bf16), device="cpu", dtype="float32").model.dtype == torch.float32
    monkeypatch.setenv("AV_SCENE_VLM_CPU_FLAGS", "avx2 avx512f")  # no bf16 instructions: emulated, slower
    assert Captioner(str(bf16), device="cpu").model.dtype == torch.float32
