"""The question bounds of `ask`, without torch: node parameters and goal checks import them before
(or without) a model."""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_QUESTION_CHARS", "check_question"]

# ~4 characters a token in English: 256 characters stay within ~80 prompt tokens beside the image's,
# a modest share of a compiled captioner's prompt budget (a longer prompt would recompile on a GPU).
DEFAULT_MAX_QUESTION_CHARS = 256


def check_question(question: str, max_chars: int = DEFAULT_MAX_QUESTION_CHARS) -> str:
    """The question stripped, or ValueError with the limit in the reason (empty or too long)."""
    text = (question or "").strip()
    if not text:
        raise ValueError(f"the question is empty (give 1 to {max_chars} characters)")
    if len(text) > max_chars:
        raise ValueError(f"the question has {len(text)} characters, over the limit of {max_chars}")
    return text
