"""`core.ask` (Captioner.ask) and `av-scene-vlm ask` with the tiny random Qwen2.5-VL: the streamed text,
stopping within one token, the question bounds and the CLI's output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from av_scene_vlm.cli.main import main
from av_scene_vlm.core.ask import AskResult
from av_scene_vlm.core.ask_limits import check_question
from av_scene_vlm.core.captioner import Captioner


@pytest.fixture(scope="module")
def captioner(tiny_qwen: Path) -> Captioner:
    cap = Captioner(str(tiny_qwen), device="cpu", max_new_tokens=6, max_pixels=112 * 112)
    tok, vocab = cap.processor.tokenizer, cap.model.config.text_config.vocab_size
    keep = {i for i in range(len(tok)) if (t := tok.decode([i])).isascii() and t.isalpha()}
    cap.generation_config.suppress_tokens = [i for i in range(vocab) if i not in keep]  # visible text
    return cap


def image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def test_streams_the_whole_text_after_every_token(captioner: Captioner) -> None:
    seen: list[tuple[str, int]] = []
    result = captioner.ask(image(), "  Is the light red?  ", on_text=lambda t, n: seen.append((t, n)))
    assert isinstance(result, AskResult) and result.question == "Is the light red?"
    assert [n for _, n in seen] == list(range(1, 7)) and result.num_tokens == 6
    assert seen[-1][0] == result.answer and result.answer.isalpha() and not result.stopped
    assert 0 < result.first_token_latency <= result.latency
    # Same greedy tokens as a caption with the question as its prompt: one model path.
    ids, _ = captioner.generate_ids([image()], "Is the light red?")
    assert captioner.processor.tokenizer.decode(ids[0], skip_special_tokens=True).strip() == result.answer
    short = captioner.ask(image(), "Is the light red?", max_new_tokens=2)
    assert short.num_tokens == 2 and result.answer.startswith(short.answer)


def test_should_stop_ends_generation_within_one_token(captioner: Captioner) -> None:
    seen: list[int] = []
    result = captioner.ask(
        image(), "How many cars?", max_new_tokens=50, on_text=lambda t, n: seen.append(n),
        should_stop=lambda: len(seen) >= 2,
    )  # fmt: skip
    assert result.stopped and result.num_tokens in (2, 3) and seen[-1] == result.num_tokens


@pytest.mark.parametrize(
    ("question", "limit", "reason"),
    [("", 10, "empty"), ("   ", 10, "empty"), ("x" * 11, 10, "11 characters, over the limit of 10")],
)
def test_question_bounds(captioner: Captioner, question: str, limit: int, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_question(question, limit)
    with pytest.raises(ValueError, match=reason):
        captioner.ask(image(), question, max_question_chars=limit)
    assert check_question("x" * 10, 10) == "x" * 10


def test_cli_ask_text_json_and_errors(tiny_qwen: Path, image_files: list[str], capsys) -> None:
    common = ["--model", str(tiny_qwen), "--max-new-tokens", "3", "--device", "cpu", "-q", "Any cyclists?"]
    assert main(["ask", *image_files, *common]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in lines] == image_files
    assert main(["ask", image_files[0], *common, "--json", "--stream"]) == 0
    out = capsys.readouterr()
    (obj,) = [json.loads(line) for line in out.out.splitlines()]
    assert obj["image"] == image_files[0] and obj["question"] == "Any cyclists?"
    assert obj["num_tokens"] == 3 and obj["model"] == str(tiny_qwen) and obj["first_token_latency"] > 0
    assert "[3]" in out.err  # the streamed text, token by token
    assert main(["ask", image_files[0], "--model", str(tiny_qwen), "-q", "  "]) == 2
    assert "question is empty" in capsys.readouterr().err
    long = ["-q", "x" * 30, "--max-question-chars", "20"]
    assert main(["ask", image_files[0], "--model", "/nonexistent/model", *long]) == 2
    assert "over the limit of 20" in capsys.readouterr().err  # checked before the model loads
