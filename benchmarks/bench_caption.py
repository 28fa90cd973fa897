"""Caption latency and generated tokens/s of the Qwen2.5-VL captioner (random weights, no ROS).

Why random weights: the cost of a caption depends on the architecture, the visual-token count and
the number of generated tokens, not on the weight values; random checkpoints need no download.
Every run generates exactly `--new-tokens` tokens (`min_new_tokens` = `max_new_tokens`), so
numbers are comparable across models that would stop early.

Configs: `tiny` (unit-test model, loaded from disk through `from_pretrained`), `small` (~120M
params, real 151936-token vocabulary) and `3b` (the Qwen2.5-VL-3B-Instruct architecture, built
in memory; CUDA only by default, bf16). Target for `3b` on CUDA: ≤ 0.5 s per 448×448 frame with 48
new tokens, compiled (static KV cache + compiled decoding step).

`--compare-compile` times, per config and on the same weights, the eager decoder against the compiled
one: the compile (warm-up) time, p50 per caption, whether the greedy tokens agree, and `--batch N`
frames (cameras due together) in one batched `generate` against N captions one after another. Exact
token equality is required of the fp32 `tiny` model (exit 1 otherwise); a random-weight 3B model's
logits are nearly flat, so bf16 rounding may break its ties differently: its agreement is reported.

    PYTHONPATH=av_scene_vlm python benchmarks/bench_caption.py [--device cpu|cuda|auto] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import torch
from av_scene_vlm.core.captioner import (
    Captioner,
    resolve_attn_implementation,
    resolve_caption_dtype,
)
from av_scene_vlm.core.models import resolve_device
from av_scene_vlm.random_weights import (
    build_tiny_qwen25vl,
    qwen25vl_3b_config,
    random_qwen25vl,
    small_qwen25vl_config,
)

TARGET_S = {"3b": 0.5}  # per-frame latency target (CUDA, bf16, 448×448, 48 new tokens, compiled)


def _captioner(
    name: str,
    device: torch.device,
    dtype: torch.dtype,
    attn: str,
    new_tokens: int,
    tmp: Path,
    compile: str = "off",
):
    """A captioner that generates exactly `new_tokens` tokens for config `name`."""
    kwargs: dict[str, Any] = dict(
        max_new_tokens=new_tokens, generate_kwargs={"min_new_tokens": new_tokens}, compile=compile
    )
    if name == "tiny":  # the path users take: a saved checkpoint loaded by from_pretrained
        path = build_tiny_qwen25vl(tmp / "tiny-qwen25vl")
        return Captioner(str(path), device=str(device), dtype=str(dtype).removeprefix("torch."), **kwargs)
    config = {"small": small_qwen25vl_config, "3b": qwen25vl_3b_config}[name]()
    model, processor = random_qwen25vl(config, device=device, dtype=dtype, attn_implementation=attn)
    return Captioner.from_model(model, processor, model_id=f"random:{name}", **kwargs)


def _p50(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def compare_compile(
    name: str,
    device: torch.device,
    dtype: torch.dtype,
    attn: str,
    args: argparse.Namespace,
    tmp: Path,
    partial: Any = None,
) -> dict[str, Any]:
    """Eager vs compiled decoding on the same weights: compile time, p50, token agreement, batching.
    `partial(row)` is called with the row before the batch compile (the first thing a time limit cuts)."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8) for _ in range(args.batch)]
    t0 = time.perf_counter()
    eager = _captioner(name, device, dtype, attn, args.new_tokens, tmp, compile="off")
    build_s = time.perf_counter() - t0
    options = dict(max_new_tokens=args.new_tokens, generate_kwargs={"min_new_tokens": args.new_tokens})
    compiled = Captioner.from_model(
        eager.model, eager.processor, model_id=eager.model_id, compile="on", **options
    )
    row: dict[str, Any] = {"config": name, "dtype": str(dtype).removeprefix("torch."), "build_s": build_s}
    row["frame"], row["new_tokens"], row["batch"] = [args.size, args.size], args.new_tokens, args.batch
    _p50(lambda: eager.caption(frames[0]), args.warmup)
    row["eager_p50_s"] = _p50(lambda: eager.caption(frames[0]), args.repeats)
    row["eager_batch_p50_s"] = _p50(lambda: eager.caption_batch(frames), max(2, args.repeats // 3))
    print(f"# {name} eager: {row['eager_p50_s']:.3f} s", file=sys.stderr, flush=True)
    row["compile_s"] = compiled.warm_up([1])
    print(f"# {name} compiled in {row['compile_s']:.1f} s", file=sys.stderr, flush=True)
    row["compiled_p50_s"] = _p50(lambda: compiled.caption(frames[0]), args.repeats)
    want, _ = eager.generate_ids(frames[:1])
    got, _ = compiled.generate_ids(frames[:1])
    row["tokens_equal"] = bool(torch.equal(want, got))
    row["token_agreement"] = float((want == got).float().mean()) if want.shape == got.shape else 0.0
    row["speedup"] = row["eager_p50_s"] / row["compiled_p50_s"]
    target = TARGET_S.get(name)
    if target is not None and device.type == "cuda":
        row["target_s"], row["meets_target"] = target, row["compiled_p50_s"] <= target
    row["parity_required"] = name == "tiny"
    if partial is not None:
        partial(row)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if args.batch > 1 and not args.no_batch_compile:
        row["compile_batch_s"] = compiled.warm_up([args.batch])
        row["compiled_batch_p50_s"] = _p50(lambda: compiled.caption_batch(frames), max(2, args.repeats // 3))
    return row


def _target_cell(row: dict[str, Any]) -> str:
    """'≤ 0.5 s PASS' where the row has a target, else ''."""
    if "target_s" not in row:
        return ""
    return f"≤ {row['target_s']:.1f} s {'PASS' if row['meets_target'] else 'FAIL'}"


def _compile_table(rows: list[dict[str, Any]], device: str) -> str:
    head = (
        f"{'config':<7} {'eager s':>8} {'compiled s':>10} {'speedup':>7} {'compile s':>9} {'tokens':>7} "
        f"{'batch':>5} {'eager batch s':>13} {'compiled batch s':>16}  target"
    )
    lines = [f"device: {device}", head, "-" * len(head)]
    for r in rows:
        target = _target_cell(r)
        batch = r.get("compiled_batch_p50_s")
        tokens = "same" if r["tokens_equal"] else f"{r['token_agreement']:.0%}"
        lines.append(
            f"{r['config']:<7} {r['eager_p50_s']:>8.3f} {r['compiled_p50_s']:>10.3f} {r['speedup']:>6.2f}x "
            f"{r['compile_s']:>9.1f} {tokens:>7} "
            f"{r['batch']:>5} {r['eager_batch_p50_s']:>13.3f} {format(batch, '>16.3f') if batch else '-':>16}"
            f"  {target}"
        )
    return "\n".join(lines)


def _time(captioner: Captioner, frame: np.ndarray, repeats: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(repeats):
        result = captioner.caption(frame)
        times.append(result.latency)
    return times, result


def bench_one(
    name: str, device: torch.device, dtype: torch.dtype, attn: str, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    """Time one config: full captions (`--new-tokens`) and 1-token captions (time to first token)."""
    frame = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    cap = _captioner(name, device, dtype, attn, args.new_tokens, tmp)
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in cap.model.parameters())
    first = Captioner.from_model(
        cap.model,
        cap.processor,
        model_id=cap.model_id,
        max_new_tokens=1,
        generate_kwargs={"min_new_tokens": 1},
    )
    _time(cap, frame, args.warmup)
    _time(first, frame, args.warmup)
    times, result = _time(cap, frame, args.repeats)
    ttft, _ = _time(first, frame, args.repeats)
    median, ttft_median = statistics.median(times), statistics.median(ttft)
    decode_s = max(median - ttft_median, 1e-9)
    row = {
        "config": name,
        "params_m": round(params / 1e6, 1),
        "dtype": str(dtype).removeprefix("torch."),
        "attn": cap.model.config._attn_implementation,
        "frame": [args.size, args.size],
        "visual_tokens": result.num_visual_tokens,
        "new_tokens": result.num_tokens,
        "latency_s": {"median": median, "min": min(times), "max": max(times)},
        "ttft_s": ttft_median,
        "tok_s": result.num_tokens / median,
        "decode_tok_s": (result.num_tokens - 1) / decode_s,
        "build_s": build_s,
        "repeats": args.repeats,
    }
    if device.type == "cuda":
        row["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    target = TARGET_S.get(name)
    if target is not None and device.type == "cuda":
        row["target_s"] = target
        row["meets_target"] = median <= target
    del cap, first
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def _table(rows: list[dict[str, Any]], device: str) -> str:
    head = (
        f"{'config':<7} {'params':>8} {'dtype':<9} {'attn':<18} {'vis tok':>7} {'new tok':>7} "
        f"{'latency s':>10} {'TTFT s':>8} {'tok/s':>7} {'decode tok/s':>12}  target"
    )
    lines = [f"device: {device}", head, "-" * len(head)]
    for r in rows:
        target = _target_cell(r)
        lines.append(
            f"{r['config']:<7} {r['params_m']:>7.1f}M {r['dtype']:<9} {r['attn']:<18} "
            f"{r['visual_tokens']:>7} "
            f"{r['new_tokens']:>7} {r['latency_s']['median']:>10.3f} {r['ttft_s']:>8.3f} {r['tok_s']:>7.1f} "
            f"{r['decode_tok_s']:>12.1f}  {target}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the selected configs and print a table (optionally JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument(
        "--configs",
        default=None,
        help="comma-separated subset of tiny,small,3b (default: tiny,small on CPU; tiny,small,3b on CUDA)",
    )
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU) | float32 | ...")
    parser.add_argument("--attn", default="auto", help="auto | sdpa | eager | flash_attention_2")
    parser.add_argument(
        "--new-tokens", type=int, default=48, help="tokens generated per caption (default: 48)"
    )
    parser.add_argument("--size", type=int, default=448, help="square frame side in px (default: 448)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default: 3 CPU, 10 CUDA)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default: 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--compare-compile", action="store_true", help="eager vs compiled decoding (see the module doc)"
    )
    parser.add_argument("--batch", type=int, default=4, help="frames captioned together (--compare-compile)")
    parser.add_argument(
        "--no-batch-compile", action="store_true", help="skip compiling for the batch size (saves a compile)"
    )
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    dtype = resolve_caption_dtype(args.dtype, device)
    attn = resolve_attn_implementation(args.attn, device, dtype)
    if args.repeats is None:
        args.repeats = 10 if device.type == "cuda" else 3
    names = (args.configs or ("tiny,small,3b" if device.type == "cuda" else "tiny,small")).split(",")
    unknown = set(names) - {"tiny", "small", "3b"}
    if unknown:
        parser.error(f"unknown config(s): {', '.join(sorted(unknown))}")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            if args.compare_compile:
                dt = torch.float32 if name == "tiny" else dtype  # tiny: exact token parity in fp32
                partial = lambda row: _write(args, [*rows, row], device)  # noqa: E731
                rows.append(compare_compile(name.strip(), device, dt, attn, args, Path(tmp), partial))
                _write(args, rows, device)  # a later config cut short by a time limit loses only itself
                continue
            rows.append(bench_one(name.strip(), device, dtype, attn, args, Path(tmp)))
            print(f"# {name}: done ({rows[-1]['latency_s']['median']:.3f} s)", file=sys.stderr, flush=True)

    desc = str(device)
    if device.type == "cuda":
        desc += f" ({torch.cuda.get_device_name(device)})"
    else:
        desc += f" ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    if args.compare_compile:
        print(_compile_table(rows, desc))
        _write(args, rows, device)
        return 0 if all(r["tokens_equal"] for r in rows if r["parity_required"]) else 1
    print(_table(rows, desc))
    _write(args, rows, device)
    return 0 if all(r.get("meets_target", True) for r in rows) else 1


def _write(args: argparse.Namespace, rows: list[dict[str, Any]], device: torch.device) -> None:
    if not args.json:
        return
    import transformers

    desc = str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "device": desc,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "new_tokens": args.new_tokens,
        "results": rows,
    }
    args.json.write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
