"""`av-scene-vlm check-precision --model M IMAGES... --precision int8`: how far int8 (or bf16) moves the
image tower's results from fp32 on your own images and label sets, with a verdict against printed bounds.

Why: a reduced precision changes results, by an amount that depends on the weights and the labels; run
this before enabling it on a vehicle. A pass is recorded next to the ONNX cache, which is what lets
`precision: auto` pick that precision for this model (core/precision.py); a fail replaces an old pass.
`--graph FILE` checks an ONNX image tower as shipped (an export bundle's image_tower.onnx) instead.
Exit codes: 0 pass, 1 fail, 2 bad option / model / image (one line on stderr).
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

from av_scene_vlm.cli.common import (
    EXIT_FAILED,
    CliError,
    add_clip_args,
    add_task_arguments,
    make_engine,
    read_images,
    run_guarded,
    tasks_and_templates,
)
from av_scene_vlm.core.agreement import Bounds

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the check-precision options on `parser`."""
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or directories of them")
    parser.add_argument(
        "--precision",
        default="int8",
        choices=("int8", "bf16"),
        help="precision to compare with fp32 (default: %(default)s)",
    )
    parser.add_argument(
        "--graph", metavar="ONNX", help="check this ONNX image tower instead (e.g. a bundle's)"
    )
    add_task_arguments(parser)
    add_clip_args(parser, precision=False)
    defaults = Bounds()
    bounds = parser.add_argument_group("bounds (the defaults hold for ViT-B/32 int8; see docs/PRECISION.md)")
    bounds.add_argument(
        "--min-cos-mean", type=float, default=defaults.cos_mean, help="(default: %(default)s)"
    )
    bounds.add_argument("--min-cos", type=float, default=defaults.cos_min, help="(default: %(default)s)")
    bounds.add_argument(
        "--max-dp", type=float, default=defaults.max_dp, help="max |delta p| (default: %(default)s)"
    )
    bounds.add_argument(
        "--min-top1",
        type=float,
        default=defaults.top1,
        help="top-1 agreement per task (default: %(default)s)",
    )
    parser.add_argument("--batch", type=int, default=8, help="images per tower call (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument(
        "--no-record", action="store_true", help="do not record the verdict for precision auto"
    )


def image_paths(items: list[str]) -> list[Path]:
    """The files given, directories expanded to their images (sorted)."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES))
        else:
            out.append(p)
    return out


def _graph_encoder(path: str, engine, threads: int):  # -> Callable[[frames], np.ndarray]
    """Image embeddings from an ONNX graph fed with the engine's preprocessing (the bundle's contract)."""
    import onnxruntime as ort

    from av_scene_vlm.core.onnx_export import INPUT, OUTPUTS

    if not Path(path).is_file():
        raise CliError(f"--graph '{path}': no such file")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's load errors have no common base class
        raise CliError(f"--graph '{path}': ONNX Runtime cannot load it: {exc}") from None

    def encode(frames):  # -> np.ndarray (N, D)
        pixels = engine.preprocess(frames).float().cpu().numpy()
        return session.run([OUTPUTS[0]], {INPUT: pixels})[0]

    return encode


def _run(args: argparse.Namespace) -> int:
    if args.batch < 1:
        raise CliError(f"--batch must be >= 1, got {args.batch}")
    paths = image_paths(args.images)
    tasks, templates = tasks_and_templates(args)
    frames = read_images(paths)
    from av_scene_vlm.core.agreement import compare, embed_all

    if args.graph:  # the graph is the candidate: the engine only loads the model (no graph of its own)
        args.precision, args.backend = "fp32", "torch"
    candidate = make_engine(args, tasks, templates)
    from av_scene_vlm.core.engine import ZeroShotEngine

    reference = ZeroShotEngine(
        candidate.clip, tasks=tasks, templates=candidate.templates, backend="torch", precision="fp32"
    )
    if args.graph:
        encode, what = _graph_encoder(args.graph, reference, args.onnx_threads or 0), f"graph {args.graph}"
    else:
        encode, what = candidate.encode_images, f"{candidate.precision} ({candidate.backend})"
    ref = embed_all(reference.encode_images, frames, args.batch)
    got = embed_all(encode, frames, args.batch)
    label_sets = dict(zip([t.name for t in reference.tasks], reference.label_embeddings(), strict=True))
    bounds = Bounds(args.min_cos_mean, args.min_cos, args.max_dp, args.min_top1)
    result = compare(
        ref, got, label_sets, reference.logit_scale, "graph" if args.graph else candidate.precision, bounds
    )
    recorded = None if args.graph or args.no_record else _record(candidate, result)
    if args.json:
        print(
            json.dumps(
                {
                    **result.record(),
                    "model": candidate.model_id,
                    "candidate": what,
                    "recorded": str(recorded or ""),
                }
            )
        )
    else:
        print(
            f"check-precision: {what} vs fp32 (torch) on {len(frames)} image(s), {len(tasks)} task(s), "
            f"model {candidate.model_id}"
        )
        print(f"{'metric':<34} {'value':>12}  {'bound':<10} verdict")
        for metric, value, bound, ok in result.rows():
            print(f"{metric:<34} {value:>12}  {bound:<10} {'ok' if ok else 'FAIL'}")
        verdict = "PASS" if result.passed else "FAIL"
        print(f"verdict: {verdict}" + (f" (recorded for precision auto: {recorded})" if recorded else ""))
    return 0 if result.passed else EXIT_FAILED


def _record(engine, result) -> Path | None:
    """Record the verdict where `precision: auto` looks for it (the engine's ONNX cache)."""
    from av_scene_vlm.core.onnx_export import cache_key, default_cache_dir
    from av_scene_vlm.core.precision import cpu_model, write_agreement

    root = default_cache_dir()  # $AV_SCENE_VLM_ONNX_CACHE: what the nodes and CLIs use
    record = {
        **result.record(),
        "model_id": engine.model_id,
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_model(),
        "cos_min": round(result.cos_min, 6),
    }
    try:
        return write_agreement(root, cache_key(engine.model, engine.precision), engine.precision, record)
    except OSError as exc:
        print(f"av-scene-vlm check-precision: warning: cannot record the verdict in '{root}': {exc}")
        return None


def run(args: argparse.Namespace) -> int:
    """Entry point for `av-scene-vlm check-precision`."""
    return run_guarded(_run, args)
