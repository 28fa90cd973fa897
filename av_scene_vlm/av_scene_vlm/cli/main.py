"""`av-scene-vlm` entry point: one program, one sub-command per tool.

Sub-commands live in their own modules and register through `COMMANDS`, so importing the
entry point stays cheap (torch/transformers load only when a command runs).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from av_scene_vlm import __version__
from av_scene_vlm.core.exit_codes import EXIT_USAGE

# name -> (module, help). Each module provides `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "classify": ("av_scene_vlm.cli.classify", "Zero-shot classify images with CLIP."),
    "caption": ("av_scene_vlm.cli.caption", "Describe images with Qwen2.5-VL."),
    "ask": ("av_scene_vlm.cli.ask", "Ask Qwen2.5-VL a question about each image."),
    "plot": ("av_scene_vlm.cli.plot", "Classify images and save them as a titled grid (PNG)."),
    "similarity": ("av_scene_vlm.cli.similarity", "Image-text cosine similarity matrix (PNG and/or JSON)."),
    "bag": ("av_scene_vlm.cli.bag", "Classify every frame of a rosbag2 offline; write a new bag."),
    "search": (
        "av_scene_vlm.cli.search",
        "Find the frames of a bag, or of a fleet index, matching a sentence.",
    ),
    "index": ("av_scene_vlm.cli.index", "Index every frame of many bags into a searchable vector store."),
    "check-precision": (
        "av_scene_vlm.cli.check_precision",
        "Compare an image-tower precision (int8, bf16) with fp32 on your images and labels.",
    ),
    "export": (
        "av_scene_vlm.cli.export",
        "Write the ONNX image tower, its preprocessing and label embeddings (for TensorRT).",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """Build the parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="av-scene-vlm", description="Language-level scene understanding tools (CLIP, Qwen2.5-VL)."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the chosen sub-command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
