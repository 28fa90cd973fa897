"""The GPU path's first-run fixes (issue 26) through the nodes, over real DDS, on a CPU with
stand-ins where CUDA is needed:
- out of memory while capturing a CUDA graph reaches clip_node's batch halving, cached memory is
  released after the exception is gone, and graphs are captured again at the smaller size;
- a caption_prompt over caption_prompt_token_budget is refused with the budget in the reason;
- a batch halved after out of memory is not padded back up to a compiled size;
- a sticky CUDA error: FATAL line, the lifecycle's error state, exit code 3 (autostarted).
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

rclpy = pytest.importorskip("rclpy")

from av_scene_vlm.core.cuda_graphs import EagerCapture  # noqa: E402
from av_scene_vlm.core.engine import ZeroShotEngine  # noqa: E402
from av_scene_vlm.ros.caption_node import CaptionNode  # noqa: E402
from lifecycle_msgs.msg import TransitionEvent  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402
from ros_helpers import OutOfMemoryError, Probe, header, image_msg, make_clip_node, wait_for, wait_matched  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from av_scene_vlm_msgs.msg import Caption, ClassificationArray  # noqa: E402

FAST = {"caption_max_new_tokens": 2, "caption_max_pixels": 112 * 112, "caption_device": "cpu"}


class OomCapture(EagerCapture):
    """Captures of 4 frames or more run out of memory, holding a tensor the way a real capture's
    frames hold the pool's; the test checks it is gone when memory is released."""

    def __init__(self) -> None:
        self.held: list[weakref.ref] = []
        self.buckets: list[int] = []

    def __call__(self, fn, static_inputs):
        bucket = int(static_inputs[0].shape[0])
        self.buckets.append(bucket)
        if bucket >= 4:
            scratch = torch.empty(1 << 16)
            self.held.append(weakref.ref(scratch))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return super().__call__(fn, static_inputs)


class GatedGraphEngine(ZeroShotEngine):
    """A real engine with graphs on (OomCapture); its first batch waits for the test's gate."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sizes, self.freed_at_release = [], []
        self.entered, self.gate = threading.Event(), threading.Event()

    def submit(self, frames, **kwargs):
        self.sizes.append(len(frames))
        if len(self.sizes) == 1:
            self.entered.set()
            assert self.gate.wait(60), "test never opened the gate"
        return super().submit(frames, **kwargs)

    def release_memory(self) -> None:
        gc.collect()  # only cycles: a live traceback would still hold the capture's tensor
        self.freed_at_release.append(all(ref() is None for ref in self.graphs.capture.held))
        super().release_memory()


def test_out_of_memory_in_a_capture_halves_the_batch_and_captures_smaller(ros, tiny_clip) -> None:
    ctx, spinner = ros
    capture = OomCapture()
    engine = GatedGraphEngine(
        str(tiny_clip), backend="torch", cuda_graphs="on", graph_capture=capture, tasks=()
    )
    topics = [f"/goom{i}/image_raw" for i in range(4)]
    node = make_clip_node(
        ctx, spinner, tiny_clip, engine=engine, image_topics=topics, labels=["car", "truck"], tasks="",
        heatmap=False, max_batch=4, input_reliability="reliable", input_depth=4,
    )  # fmt: skip
    probe = spinner.add(Probe(ctx))
    for i in range(4):
        probe.listen(ClassificationArray, f"/goom{i}/scene/classification", 10)
    pubs = [probe.camera_publisher(Image, t, depth=4) for t in topics]
    spinner.start()
    assert wait_matched(node, *pubs)
    frame = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    pubs[0].publish(image_msg(frame, "rgb8", header(0, "warm")))
    assert engine.entered.wait(20), "the first frame never reached the engine"
    for i, pub in enumerate(pubs):  # one batch of 4 waits in the slots
        pub.publish(image_msg(frame, "rgb8", header(1, f"lost{i}")))
    assert wait_for(lambda: [c.received for c in node.cameras] == [2, 1, 1, 1])
    engine.gate.set()
    assert wait_for(lambda: sum(c.failed for c in node.cameras) == 4), [c.failed for c in node.cameras]
    assert wait_for(lambda: engine.freed_at_release == [True]), engine.freed_at_release
    assert engine.graphs.enabled and len(engine.graphs) == 0  # dropped, not disabled
    assert node.batch_limit.size(4) == 2
    for i, pub in enumerate(pubs):
        pub.publish(image_msg(frame, "rgb8", header(2, f"ok{i}")))

    def answered() -> list[str]:
        return sorted(
            m.header.frame_id for i in range(4) for m in probe.messages(f"/goom{i}/scene/classification")
        )

    assert wait_for(lambda: answered() == ["ok0", "ok1", "ok2", "ok3", "warm"]), answered()
    assert capture.buckets[:2] == [1, 4] and 2 in capture.buckets[2:], capture.buckets
    assert engine.graphs.enabled and any(key[0] == 2 for key in engine.graphs._graphs)


def _caption_node(ctx, spinner, tiny_qwen, **params) -> CaptionNode:
    values = {"caption_model": str(tiny_qwen), **FAST, **params}
    node = CaptionNode(
        "caption_node", context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()]
    )
    return spinner.add(node)


def test_a_prompt_over_the_budget_is_refused_with_the_budget(ros, tiny_qwen) -> None:
    ctx, spinner = ros
    node = _caption_node(
        ctx, spinner, tiny_qwen, image_topics=["/budget/image_raw"], caption_prompt="Describe.",
        caption_prompt_token_budget=24,
    )  # fmt: skip
    probe = spinner.add(Probe(ctx))
    client = AsyncParameterClient(probe, "/caption_node")
    spinner.start()
    assert wait_for(client.services_are_ready, 30)

    def set_prompt(text: str):
        future = client.set_parameters([Parameter("caption_prompt", value=text)])
        assert wait_for(future.done, 30)
        return future.result().results[0]

    ok = set_prompt("Any hazard?")
    assert ok.successful and node.settings.caption_prompt == "Any hazard?"
    refused = set_prompt("Describe the road, the weather, the light and every vehicle in great detail. " * 3)
    assert not refused.successful
    assert "over the prompt-token budget of 24 (caption_prompt_token_budget)" in refused.reason
    assert node.settings.caption_prompt == "Any hazard?"


def test_a_halved_caption_batch_is_not_padded_back(ros, tiny_qwen) -> None:
    """Compiled for batches of 1 and 4 (as warm_up([1, 4]) leaves it): 4 cameras run out of memory
    together, the next batches take 2, and are decoded as 1 + 1, not padded back to 4."""
    ctx, spinner = ros
    topics = [f"/pad{i}/image_raw" for i in range(4)]
    node = _caption_node(ctx, spinner, tiny_qwen, image_topics=topics, caption_period=0.0,
                         input_reliability="reliable", input_depth=4)  # fmt: skip
    captioner = node.captioner
    captioner.batch_sizes = (1, 4)
    rows, entered, gate = [], threading.Event(), threading.Event()
    real = captioner.model.generate

    def watched(**kwargs):
        n = int(kwargs["input_ids"].shape[0])
        rows.append(n)
        if len(rows) == 1:
            entered.set()
            assert gate.wait(60)
        if n == 4 and len(rows) == 2:
            raise OutOfMemoryError("CUDA out of memory (injected)")
        return real(**kwargs)

    captioner.model.generate = watched
    probe = spinner.add(Probe(ctx))
    for i in range(4):
        probe.listen(Caption, f"/pad{i}/scene/caption", 10)
    pubs = [probe.camera_publisher(Image, t, depth=4) for t in topics]
    spinner.start()
    assert wait_matched(node, *pubs)
    frame = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    pubs[0].publish(image_msg(frame, "rgb8", header(0, "warm")))
    assert entered.wait(30)
    for i, pub in enumerate(pubs):
        pub.publish(image_msg(frame, "rgb8", header(1, f"lost{i}")))
    assert wait_for(lambda: [c.received for c in node.cameras] == [2, 1, 1, 1])
    gate.set()
    assert wait_for(lambda: sum(c.failed for c in node.cameras) == 4)
    for i, pub in enumerate(pubs):
        pub.publish(image_msg(frame, "rgb8", header(2, f"ok{i}")))

    def answered() -> list[str]:
        return sorted(m.header.frame_id for i in range(4) for m in probe.messages(f"/pad{i}/scene/caption"))

    assert wait_for(lambda: answered() == ["ok0", "ok1", "ok2", "ok3", "warm"], 60), answered()
    assert rows[:2] == [1, 4], rows  # the warm frame alone (compiled size 1), then the 4 together
    assert set(rows[2:]) == {1}, rows  # halved to 2 and decoded 1 + 1, never padded back to 4


def test_a_sticky_cuda_error_stops_the_node(ros, tiny_qwen, tmp_path: Path) -> None:
    """An illegal memory access (a stand-in with torch's message) is not retried: one FATAL line, the
    lifecycle goes through errorprocessing to finalized, and the autostarted process exits with 3."""
    ctx, spinner = ros
    probe = spinner.add(Probe(ctx))
    probe.listen(TransitionEvent, "/caption_node/transition_event", 20)
    pub = probe.camera_publisher(Image, "/sticky/image_raw")
    spinner.start()
    log = tmp_path / "sticky.log"
    script = Path(__file__).with_name("sticky_node.py")
    args = [
        "--ros-args",
        "-p",
        "image_topics:=[/sticky/image_raw]",
        "-p",
        "caption_period:=0.0",
        "-p",
        "caption_device:=cpu",
    ]
    with open(log, "w") as out:
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        cmd = [sys.executable, str(script), str(tiny_qwen), *args]
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            assert wait_for(lambda: pub.get_subscription_count() > 0 or proc.poll() is not None, 120), (
                log.read_text()
            )
            frame = np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)

            def sent() -> bool:
                pub.publish(image_msg(frame, "rgb8", header(0, "sticky")))
                return proc.poll() is not None

            assert wait_for(sent, 60, interval=0.5), log.read_text()
            rc = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    assert rc == 3, text
    fatal = [line for line in text.splitlines() if "FATAL" in line]
    assert len(fatal) == 1 and "illegal memory access" in fatal[0] and "unrecoverable" in fatal[0], text
    assert "Traceback" not in text

    def labels() -> list[str]:
        return [m.goal_state.label for m in probe.messages("/caption_node/transition_event")]

    assert wait_for(lambda: "finalized" in labels(), 10), labels()
    assert labels()[-3:] == ["deactivating", "errorprocessing", "finalized"], labels()
