"""Random-weight CLIP checkpoints built offline, loaded back through `from_pretrained`.

Why: no weights can be downloaded here, yet tests, the demo fallback and benchmarks must exercise the
exact loading path users take. `build_tiny_clip` is small enough for unit tests; `build_clip_b32`
has the real ViT-B/32 architecture (default `CLIPConfig()`), so timings are real even if labels
are not.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


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


def _bytes_to_unicode() -> list[str]:
    return list(bytes_to_unicode().values())


def _byte_level_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary covering any text (each byte, alone and word-final)."""
    chars = _bytes_to_unicode()
    tokens = list(chars) + [c + "</w>" for c in chars]
    merges = [("t", "h"), ("th", "e</w>"), ("o", "f</w>"), ("c", "a"), ("ca", "r</w>")]
    for a, b in merges:
        tokens.append(a + b)
    tokens.extend(SPECIAL_TOKENS)
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    return vocab, merges


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


def _openai_vocab(bpe: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The 49408-token vocabulary of openai/CLIP, rebuilt from its merges file (as CLIP does)."""
    import gzip

    with gzip.open(bpe, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    chars = _bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + list(SPECIAL_TOKENS)
    return {tok: i for i, tok in enumerate(tokens)}, merges


def build_tokenizer(real_bpe: bool = False):  # -> CLIPTokenizer
    """A CLIP tokenizer built offline.

    Default: a tiny byte-level vocabulary (any text, ~1 token per character). With `real_bpe` and
    open_clip installed: the real 49408-token CLIP vocabulary, so benchmarks see real prompt lengths.
    """
    from transformers import CLIPTokenizer

    bpe = openai_bpe_path() if real_bpe else None
    vocab, merges = _openai_vocab(bpe) if bpe else _byte_level_vocab()
    return CLIPTokenizer(vocab=vocab, merges=merges)


def _save(config, path: str | Path, seed: int, image_size: int, real_bpe: bool = False) -> Path:
    import torch
    from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(real_bpe)
    config.text_config.vocab_size = max(config.text_config.vocab_size, len(tok))
    config.text_config.bos_token_id = tok.bos_token_id
    config.text_config.eos_token_id = tok.eos_token_id
    config.text_config.pad_token_id = tok.pad_token_id
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    model.save_pretrained(out, safe_serialization=True)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(out)
    return out


def build_tiny_clip(path: str | Path, *, seed: int = 0, image_size: int = 224, patch_size: int = 32) -> Path:
    """Save a tiny random CLIP (2 layers, width 32) with processor to `path`; returns the path.

    The logit scale starts at log(100), like trained CLIP, so probabilities are peaked and parity
    tests compare meaningful numbers rather than near-uniform ones.
    """
    import math

    from transformers import CLIPConfig

    text = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
    )
    config = CLIPConfig(
        text_config=text, vision_config=vision, projection_dim=16, logit_scale_init_value=math.log(100.0)
    )
    return _save(config, path, seed, image_size)


def build_clip_b32(path: str | Path, *, seed: int = 0) -> Path:
    """Save a random-weight CLIP with the real ViT-B/32 architecture (default `CLIPConfig()`).

    Uses the real CLIP BPE vocabulary when open_clip is installed, so prompt lengths are real too.
    """
    from transformers import CLIPConfig

    return _save(CLIPConfig(), path, seed, 224, real_bpe=True)
