"""Tokenizers built offline for the random models: CLIP's and Qwen2's classes with local vocabularies.

Why: the real tokenizers cannot be downloaded; these use the same classes, byte-level alphabet and
special tokens, so processors, prompts and generation behave as with the published checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CLIP_SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")

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


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP/Qwen's reversible byte -> printable character table (the byte-level BPE alphabet),
    in the GPT-2 order (printable bytes first), which is also CLIP's token-id order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


def _clip_byte_level_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary covering any text (each byte, alone and word-final)."""
    chars = list(bytes_to_unicode().values())
    tokens = list(chars) + [c + "</w>" for c in chars]
    merges = [("t", "h"), ("th", "e</w>"), ("o", "f</w>"), ("c", "a"), ("ca", "r</w>")]
    tokens.extend(a + b for a, b in merges)
    tokens.extend(CLIP_SPECIAL_TOKENS)
    return {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}, merges


def openai_bpe_path() -> Path | None:
    """The original CLIP BPE merges file shipped inside the open_clip package, if installed.

    Found without importing open_clip (no timm import cost); None when the package is absent.
    """
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "bpe_simple_vocab_16e6.txt.gz"
        if candidate.is_file():
            return candidate
    return None


def _openai_clip_vocab(bpe: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The 49408-token vocabulary of openai/CLIP, rebuilt from its merges file (as CLIP does)."""
    import gzip

    with gzip.open(bpe, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + list(CLIP_SPECIAL_TOKENS)
    return {tok: i for i, tok in enumerate(tokens)}, merges


def build_clip_tokenizer(real_bpe: bool = False) -> Any:  # -> CLIPTokenizer
    """A CLIP tokenizer built offline.

    Default: a tiny byte-level vocabulary (any text, ~1 token per character). With `real_bpe` and
    open_clip installed: the real 49408-token CLIP vocabulary, so benchmarks see real prompt lengths.
    """
    from transformers import CLIPTokenizer

    bpe = openai_bpe_path() if real_bpe else None
    vocab, merges = _openai_clip_vocab(bpe) if bpe else _clip_byte_level_vocab()
    return CLIPTokenizer(vocab=vocab, merges=merges)


def build_qwen_tokenizer() -> Any:  # -> Qwen2Tokenizer
    """A Qwen2 byte-level BPE tokenizer (256 byte tokens, a few merges, Qwen's special tokens).

    Same class (`Qwen2Tokenizer`, Qwen's pre-tokenizer regex and byte-level decoder), special tokens
    and eos/pad choice (<|im_end|> / <|endoftext|>) as the real one; token id == byte value.
    """
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    table = bytes_to_unicode()
    chars = [table[b] for b in range(256)]
    vocab = {c: i for i, c in enumerate(chars)}
    space = chars[ord(" ")]
    merges = [(space, "a"), ("t", "h"), (space + "a", "r"), ("th", "e"), (space, "th" + "e")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    for tok in QWEN_SPECIAL_TOKENS:
        vocab[tok] = len(vocab)
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=[AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS[1:]],
        model_max_length=32768,
    )
