"""Questions about one image, answered by the captioner's Qwen2.5-VL with the text streamed, ROS-free.

Why a module beside the captioner rather than inside it: a question is a caption with another prompt
plus two things a fixed-rate caption never needs — the answer so far, handed to a callback after every
token (a ROS action's feedback, a terminal), and a way to stop within one token (a cancelled goal, a
node shutting down). Both hook into transformers' own `generate` (a `BaseStreamer` and a
`StoppingCriteria`), so compiled decoding, the processor and the chat template stay the captioner's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from av_scene_vlm.core.ask_limits import DEFAULT_MAX_QUESTION_CHARS, check_question

__all__ = ["DEFAULT_MAX_QUESTION_CHARS", "AskResult", "ask", "check_question"]

TextCallback = Callable[[str, int], None]  # (answer so far, tokens generated so far)


@dataclass
class AskResult:
    """One answer. `stopped`: generation was ended early by `should_stop` (cancel, shutdown)."""

    answer: str
    question: str
    num_tokens: int  # generated tokens, an end-of-turn token included
    latency: float  # seconds from the call to the last token decoded
    first_token_latency: float  # seconds from the call to the first generated token
    model_id: str
    stopped: bool = False


class _Stream(BaseStreamer):
    """Decodes the ids generated so far after each token and hands the text to `on_text`.

    transformers calls `put` first with the prompt ids (skipped), then with each new token."""

    def __init__(self, tokenizer: Any, eos: set[int], on_text: TextCallback | None, start: float) -> None:
        self.tokenizer, self.eos, self.on_text, self.start = tokenizer, eos, on_text, start
        self.ids: list[int] = []
        self.text = ""
        self.first: float | None = None
        self._prompt_seen = False
        self._ended = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        if self._ended:
            return
        token = int(value.reshape(-1)[0])
        if self.first is None:
            self.first = time.perf_counter() - self.start
        self.ids.append(token)
        self._ended = token in self.eos
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        self.text = text.strip()
        if self.on_text is not None:
            self.on_text(self.text, len(self.ids))

    def end(self) -> None:
        """Nothing buffered: every token was decoded when it came."""


class _StopWhen(StoppingCriteria):
    """Ends generation at the next token once `should_stop()` is true."""

    def __init__(self, should_stop: Callable[[], bool]) -> None:
        self.should_stop = should_stop
        self.stopped = False

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        self.stopped = self.stopped or bool(self.should_stop())
        return torch.full((input_ids.shape[0],), self.stopped, dtype=torch.bool, device=input_ids.device)


def ask(
    captioner: Any,
    image: np.ndarray,
    question: str,
    *,
    max_new_tokens: int | None = None,
    on_text: TextCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    max_question_chars: int = DEFAULT_MAX_QUESTION_CHARS,
) -> AskResult:
    """Answer `question` about one H×W×3 uint8 RGB image with `captioner`'s (a `core.captioner.Captioner`,
    not imported here: it imports this module) model (greedy unless it
    samples). `on_text(answer_so_far, num_tokens)` runs on this thread after every generated token;
    `should_stop()` true ends generation within one token (the result then has `stopped`).
    ValueError for an empty or over-long question."""
    question = check_question(question, max_question_chars)
    limit = captioner.max_new_tokens if not max_new_tokens else int(max_new_tokens)
    if limit < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    start = time.perf_counter()
    stream = _Stream(captioner.processor.tokenizer, captioner._eos, on_text, start)
    stop = _StopWhen(should_stop or (lambda: False))
    # The captioner's own generate path: its lock, the compiled decoder with its static cache, the
    # prompt-token budget (a question over it is refused, never a recompile).
    overrides = {} if limit == captioner.generation_config.max_new_tokens else {"max_new_tokens": limit}
    extra = {"streamer": stream, "stopping_criteria": StoppingCriteriaList([stop])}
    captioner.generate_ids([image], question, extra=extra, **overrides)
    latency = time.perf_counter() - start
    return AskResult(
        answer=stream.text,
        question=question,
        num_tokens=len(stream.ids),
        latency=latency,
        first_token_latency=stream.first if stream.first is not None else latency,
        model_id=captioner.model_id,
        stopped=stop.stopped,
    )
