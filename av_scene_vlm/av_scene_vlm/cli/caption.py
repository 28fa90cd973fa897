"""`av-scene-vlm caption IMAGE...`: describe images with Qwen2.5-VL (no ROS needed).

Why a CLI: it checks a checkpoint, prompt and pixel budget on a laptop before they go into the
caption node's parameters. Heavy imports (torch, transformers) happen in `run`, so building the
`av-scene-vlm` parser stays cheap. Exit codes: 0 ok, 2 unreadable image / bad option / model
not loadable (message on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import json

from av_scene_vlm.cli.common import make_captioner, read_images, run_guarded
from av_scene_vlm.core.models import DEFAULT_CAPTION_MODEL


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the caption options on `parser`."""
    add_captioner_arguments(parser)
    parser.add_argument(
        "--prompt", default=None, help="instruction (default: a one-sentence driving-scene prompt)"
    )


def add_captioner_arguments(parser: argparse.ArgumentParser) -> None:
    """The images, the model and its budgets, --json: shared by `caption` and `ask`."""
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (anything OpenCV reads)")
    parser.add_argument(
        "--model",
        default=DEFAULT_CAPTION_MODEL,
        help=f"hub id or local directory of a Qwen2.5-VL checkpoint (default: {DEFAULT_CAPTION_MODEL})",
    )
    parser.add_argument("--max-new-tokens", type=int, default=64, help="generation budget (default: 64)")
    parser.add_argument(
        "--min-pixels",
        type=int,
        default=None,
        help="lower bound of the resized image area (default: checkpoint's)",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=448 * 448,
        help="upper bound of the resized image area; visual tokens ≈ area / 784 (default: 200704 = 448²)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    parser.add_argument("--dtype", default="auto", help="auto, float32, float16, bfloat16 (default: auto)")
    parser.add_argument(
        "--compile",
        default="off",
        choices=("auto", "on", "off"),
        help="static KV cache + compiled decoding step (auto = on CUDA): ~2x faster captions after a "
        "compile of about a minute, worth it for many images (default: %(default)s)",
    )
    parser.add_argument(
        "--attn",
        default="auto",
        choices=("auto", "sdpa", "eager", "flash_attention_2"),
        help="attention: auto = flash_attention_2 if installed and not compiling, else sdpa; "
        "flash_attention_2 is refused with --compile on (default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of text")


def build_captioner(args: argparse.Namespace, prompt: str | None = None):  # -> Captioner
    """The captioner the options describe, compiled first with --compile on (auto on CUDA)."""
    captioner = make_captioner(
        model=args.model,
        prompt=prompt,
        max_new_tokens=args.max_new_tokens,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        device=args.device,
        dtype=args.dtype,
        compile=args.compile,
        attn_implementation=args.attn,
    )
    captioner.warm_up()
    return captioner


def _run(args: argparse.Namespace) -> int:
    images = read_images(args.images)  # every file checked before the (slow) model load
    captioner = build_captioner(args, args.prompt)
    for path, rgb in zip(args.images, images, strict=True):
        result = captioner.caption(rgb)
        if args.json:
            record = {
                "image": path,
                "text": result.text,
                "num_tokens": result.num_tokens,
                "latency": round(result.latency, 4),
                "model": result.model_id,
            }
            print(json.dumps(record, ensure_ascii=False), flush=True)
        else:
            print(f"{path}: {result.text}", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    """Caption every image; print `<path>: <caption>` (or JSON lines). Returns the exit code."""
    return run_guarded(_run, args)
