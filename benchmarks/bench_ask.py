"""Ask the scene: time from a question to its first streamed token and to its answer, alone and while
periodic captions run on the same model.

Two modes:
- `node` (default; ROS): caption_node in this process with the tiny random Qwen2.5-VL on the CPU, a
  camera at 10 Hz and an AskScene client over real DDS: goal -> first feedback and goal -> result,
  with `caption_period` off (alone) and short (captions beside), and the caption rate kept meanwhile.
- `core` (no ROS; `gpu_suite.sh`): `Captioner.ask` on random weights (`--config 3b`: the
  Qwen2.5-VL-3B architecture, bf16 on CUDA), first token and a `--new-tokens` answer, alone and with a
  thread captioning at `--period` beside it (one generate at a time: a question may wait for a caption).
  Target on an H200 (issue 27): first token <= 150 ms, 32-token answer <= 0.5 s.

    PYTHONPATH=av_scene_vlm python benchmarks/bench_ask.py [--mode node|core] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np

QUESTION = "Is the traffic light ahead red?"
TARGETS_S = {"first_token": 0.150, "answer": 0.5}  # 3b on an H200, 32 tokens


def stats(values: list[float]) -> dict[str, float]:
    """p50 / p95 / max in seconds."""
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "max": float("nan"), "n": 0}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": statistics.median(ordered), "p95": p95, "max": ordered[-1], "n": len(ordered)}


# ---- core mode (no ROS) -------------------------------------------------------------------------
def run_core(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    import torch
    from av_scene_vlm.core.captioner import resolve_attn_implementation, resolve_caption_dtype
    from av_scene_vlm.core.models import resolve_device
    from bench_caption import _captioner

    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    dtype = resolve_caption_dtype("auto", device)
    attn = resolve_attn_implementation("auto", device, dtype)
    compile = "auto" if device.type == "cuda" else "off"
    with tempfile.TemporaryDirectory() as tmp:
        cap = _captioner(args.config, device, dtype, attn, args.new_tokens, Path(tmp), compile)
    frame = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    cap.warm_up()
    for _ in range(2):  # the question's prompt length: compiled / cached before timing
        cap.ask(frame, QUESTION)
    desc = str(device) + (
        f" ({torch.cuda.get_device_name(device)})"
        if device.type == "cuda"
        else f" ({platform.machine()}, {args.threads} torch threads, {os.cpu_count()} cores)"
    )
    rows = [_core_scenario(args, cap, frame, beside) for beside in (False, True)]
    return rows, desc


def _captions_beside(cap: Any, frame: np.ndarray, period: float, stop: threading.Event, out: list) -> None:
    while not stop.is_set():
        cap.caption(frame)
        out.append(time.perf_counter())
        stop.wait(period)


def _core_scenario(args: argparse.Namespace, cap: Any, frame: np.ndarray, beside: bool) -> dict[str, Any]:
    stop, captions = threading.Event(), []
    thread = threading.Thread(target=_captions_beside, args=(cap, frame, args.period, stop, captions))
    if beside:
        thread.start()
    firsts, answers, rng = [], [], np.random.default_rng(1)
    for _ in range(args.repeats):
        time.sleep(float(rng.uniform(0, args.period if beside else 0.05)))
        asked = time.perf_counter()
        first: list[float] = []
        res = cap.ask(frame, QUESTION, on_text=lambda t, n, f=first: f or f.append(time.perf_counter()))
        firsts.append(first[0] - asked if first else res.latency)
        answers.append(time.perf_counter() - asked)
    stop.set()
    if beside:
        thread.join()
    return _row(args.config, beside, firsts, answers, captions, args.period)


def _row(name: str, beside: bool, firsts, answers, captions, period) -> dict[str, Any]:
    gaps = list(np.diff(captions)) if len(captions) > 1 else []
    return {
        "config": name,
        "captions_beside": beside,
        "first_token_s": stats(firsts),
        "answer_s": stats(answers),
        "caption_period_s": period if beside else None,
        "caption_gap_s": stats([float(g) for g in gaps]) if beside else None,
    }


# ---- node mode (ROS, CPU, tiny model) -----------------------------------------------------------
def run_node(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    from av_scene_vlm.random_weights import build_tiny_qwen25vl

    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_qwen25vl(Path(tmp) / "tiny")
        rows = [_node_scenario(args, model, beside) for beside in (False, True)]
    return (
        rows,
        f"cpu ({platform.processor() or platform.machine()}, {args.threads} torch threads, "
        f"{os.cpu_count()} cores)",
    )


def _node_scenario(args: argparse.Namespace, model: Path, beside: bool) -> dict[str, Any]:
    """caption_node and a client in one context; the questions of one scenario."""
    import rclpy
    from av_scene_vlm.ros.ask_client import AskClient
    from av_scene_vlm.ros.caption_node import CaptionNode
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from av_scene_vlm_msgs.msg import Caption

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    params = {
        "caption_model": str(model),
        "caption_device": "cpu",
        "caption_max_pixels": 112 * 112,
        "caption_max_new_tokens": args.new_tokens,
        "ask_max_new_tokens": args.new_tokens,
        "caption_period": args.period if beside else 1000.0,
        "caption_nice": 0,
        "caption_num_threads": args.threads,
    }
    node = CaptionNode(
        "caption_node",
        context=ctx,
        parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
    )
    client_node = rclpy.create_node("bench_ask_client", context=ctx)
    captions: list[float] = []
    client_node.create_subscription(
        Caption, "/camera/scene/caption", lambda _: captions.append(time.perf_counter()), 10
    )
    pub = client_node.create_publisher(
        Image, "/camera/image_raw", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    )
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    executor.add_node(client_node)
    stop = threading.Event()
    spin = threading.Thread(target=_spin, args=(executor, stop), daemon=True)
    feed = threading.Thread(target=_feed, args=(pub, stop), daemon=True)
    spin.start()
    feed.start()
    try:
        return _ask_node(args, AskClient(client_node), beside, captions)
    finally:
        stop.set()
        feed.join()
        spin.join()
        executor.shutdown()
        node.destroy_node()
        client_node.destroy_node()
        rclpy.shutdown(context=ctx)


def _feed(pub: Any, stop: threading.Event) -> None:
    from av_scene_vlm.core.image_encode import encode_raw
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    rgb = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    data, step = encode_raw(rgb, "rgb8")
    msg = Image(
        header=Header(frame_id="camera"), height=240, width=320, encoding="rgb8", step=step, data=data
    )
    while not stop.is_set():
        pub.publish(msg)
        stop.wait(0.1)


def _spin(executor: Any, stop: threading.Event) -> None:
    while not stop.is_set():
        executor.spin_once(timeout_sec=0.02)


def _ask_node(args: argparse.Namespace, client: Any, beside: bool, captions: list[float]) -> dict[str, Any]:
    if not client.wait_for_server(60):
        raise SystemExit("bench_ask: no ask_scene action server")
    time.sleep(1.0)  # frames have reached the node
    for _ in range(2):  # warm-up
        client.send(QUESTION).wait(60)
    firsts, answers, rng = [], [], np.random.default_rng(1)
    start = time.perf_counter()
    for _ in range(args.repeats):
        time.sleep(float(rng.uniform(0, args.period if beside else 0.05)))
        asked = client.send(QUESTION)
        if not asked.wait(60) or asked.status_name != "SUCCEEDED":
            raise SystemExit(f"bench_ask: goal ended {asked.status_name}: {asked.result}")
        firsts.append(asked.feedback[0][0])
        answers.append(asked.done_at - asked.sent)
    window = [t for t in captions if t >= start]
    return _row("tiny", beside, firsts, answers, window, args.period)


# ---- output -------------------------------------------------------------------------------------
def table(rows: list[dict[str, Any]], desc: str, mode: str) -> str:
    lines = [
        f"ask the scene ({mode}) on {desc}",
        "| config | captions beside | first token p50 / p95 ms | answer p50 / p95 ms "
        "| caption gap p50 / max s |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        f, a, g = r["first_token_s"], r["answer_s"], r["caption_gap_s"]
        gap = f"{g['p50']:.2f} / {g['max']:.2f} (period {r['caption_period_s']:g})" if g else "-"
        lines.append(
            f"| {r['config']} | {'yes' if r['captions_beside'] else 'no'} | {f['p50'] * 1e3:.0f} / "
            f"{f['p95'] * 1e3:.0f} | {a['p50'] * 1e3:.0f} / {a['p95'] * 1e3:.0f} | {gap} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("node", "core"), default="node")
    parser.add_argument("--config", default="tiny", help="core mode: tiny, small or 3b (default: tiny)")
    parser.add_argument("--device", default="auto", help="core mode: auto, cpu, cuda (default: auto)")
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens per answer (default: 16)")
    parser.add_argument("--size", type=int, default=448, help="core mode: square frame side (default: 448)")
    parser.add_argument("--period", type=float, default=1.0, help="caption period beside (s, default: 1)")
    parser.add_argument("--repeats", type=int, default=10, help="questions per scenario (default: 10)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads on a CPU (default: 1; the tiny model gains nothing from more, and on a busy "
        "2-core machine two OpenMP threads made an 8-token answer 10-40x slower)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    rows, desc = run_core(args) if args.mode == "core" else run_node(args)
    print(table(rows, desc, args.mode))
    met = None
    if args.mode == "core" and args.config == "3b":
        alone = rows[0]
        met = alone["first_token_s"]["p50"] <= TARGETS_S["first_token"] and (
            alone["answer_s"]["p50"] <= TARGETS_S["answer"]
        )
        print(f"target (alone, p50): first token <= 150 ms, answer <= 0.5 s: {'met' if met else 'NOT met'}")
    if args.json:
        import torch
        import transformers

        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "mode": args.mode,
            "device": desc,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
            "new_tokens": args.new_tokens,
            "repeats": args.repeats,
            "targets_met": met,
            "results": rows,
        }
        args.json.write_text(json.dumps(meta, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
