"""`av-scene-vlm classify`: the notebook's "Probability of truck: 0.989 … Predicted Label: truck"."""

from __future__ import annotations

import argparse
import json

from av_scene_vlm.cli.common import (
    add_clip_args,
    add_task_arguments,
    make_engine,
    read_images,
    run_guarded,
    tasks_and_templates,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (jpg, png, ...)")
    add_task_arguments(
        parser,
        config_help="YAML with tasks; classifies every task (default without --labels: the package's "
        "installed config/scene_vlm.yaml, its vehicle tasks)",
    )
    add_clip_args(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object per image and task")


def _run(args: argparse.Namespace) -> int:
    tasks, templates = tasks_and_templates(args)
    images = read_images(args.images)
    engine = make_engine(args, tasks, templates)
    for path, image in zip(args.images, images, strict=True):
        result = engine.classify(image)[0]
        for task in result.tasks:
            if args.json:
                obj = {
                    "image": path,
                    "labels": task.labels,
                    "probabilities": [round(float(p), 6) for p in task.probabilities],
                    "label": task.label,
                }
                if len(result.tasks) > 1 or task.task != "default":
                    obj["task"] = task.task
                print(json.dumps(obj))
                continue
            title = path if task.task == "default" else f"{path} [{task.task}]"
            print(title)
            for label, p in zip(task.labels, task.probabilities, strict=True):
                print(f"Probability of {label}: {p:.3f}")
            print(f"Predicted Label: {task.label}")
    return 0


def run(args: argparse.Namespace) -> int:
    return run_guarded(_run, args)
