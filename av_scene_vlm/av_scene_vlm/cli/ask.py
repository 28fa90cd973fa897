"""`av-scene-vlm ask IMAGE... --question "..."`: ask Qwen2.5-VL a question about each image (no ROS).

Why: the same question a planner or operator would send to caption_node's `ask_scene` action, tried
on saved frames first (a checkpoint, a wording, a token budget). Same model options as `caption`;
`--stream` shows each answer growing token by token on stderr (what the action sends as feedback).
Exit codes: 0 ok, 2 unreadable image / empty or over-long question / bad option / model not loadable.
"""

from __future__ import annotations

import argparse
import json
import sys

from av_scene_vlm.cli.caption import add_captioner_arguments, build_captioner
from av_scene_vlm.cli.common import CliError, read_images, run_guarded
from av_scene_vlm.core.ask_limits import DEFAULT_MAX_QUESTION_CHARS, check_question


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ask options on `parser`."""
    add_captioner_arguments(parser)
    parser.add_argument("--question", "-q", required=True, help="the question, in words")
    parser.add_argument(
        "--max-question-chars",
        type=int,
        default=DEFAULT_MAX_QUESTION_CHARS,
        help="longest question accepted (default: %(default)s, caption_node's ask_max_question_chars)",
    )
    parser.add_argument(
        "--stream", action="store_true", help="show each answer as it is generated (on stderr)"
    )


def _run(args: argparse.Namespace) -> int:
    try:
        question = check_question(args.question, args.max_question_chars)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    images = read_images(args.images)  # every file checked before the (slow) model load
    captioner = build_captioner(args)

    def show(text: str, tokens: int) -> None:
        print(f"\r[{tokens}] {text}", end="", file=sys.stderr, flush=True)

    for path, rgb in zip(args.images, images, strict=True):
        result = captioner.ask(
            rgb, question, on_text=show if args.stream else None, max_question_chars=args.max_question_chars
        )
        if args.stream:
            print(file=sys.stderr)
        if args.json:
            record = {
                "image": path,
                "question": result.question,
                "answer": result.answer,
                "num_tokens": result.num_tokens,
                "latency": round(result.latency, 4),
                "first_token_latency": round(result.first_token_latency, 4),
                "model": result.model_id,
            }
            print(json.dumps(record, ensure_ascii=False), flush=True)
        else:
            print(f"{path}: {result.answer}", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    """Answer the question for every image; print `<path>: <answer>` (or JSON lines)."""
    return run_guarded(_run, args)
