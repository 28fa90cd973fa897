"""caption_node and scene_vlm over real DDS with a tiny random Qwen2.5-VL (and tiny CLIP).

Random weights give arbitrary text, so the tests check headers, rates, triggers, counters and exit
behaviour, not wording.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from av_scene_vlm.core.captioner import DEFAULT_PROMPT  # noqa: E402
from av_scene_vlm.core.engine import ZeroShotEngine  # noqa: E402
from av_scene_vlm.core.scene_change import cosine_distance  # noqa: E402
from av_scene_vlm.ros.caption_node import PARAMETERS, CaptionNode  # noqa: E402
from av_scene_vlm.ros.scene_vlm import caption_enabled  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from ros_helpers import (  # noqa: E402
    OutOfMemoryError,
    Probe,
    Spinner,
    compressed_msg,
    header,
    image_msg,
    run_node_offline,
    wait_for,
    wait_matched,
)
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from av_scene_vlm_msgs.msg import Caption, ClassificationArray, Similarity  # noqa: E402

# Small frames and budgets keep a tiny-model caption well under 0.5 s on 2 CPU cores.
FAST = {"caption_max_new_tokens": 3, "caption_max_pixels": 112 * 112, "caption_device": "cpu"}


def make_node(ctx, spinner, tiny_qwen, **params) -> CaptionNode:
    values = {"caption_model": str(tiny_qwen), **FAST, **params}
    node = CaptionNode(
        "caption_node", context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()]
    )
    spinner.add(node)
    return node


def frame(seed: int, shape=(48, 64, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_parameters_have_descriptions() -> None:
    assert all(desc.strip() for _, desc, _ in PARAMETERS.values())
    assert PARAMETERS["caption_prompt"][0] == DEFAULT_PROMPT
    assert PARAMETERS["caption_model"][0] == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert cosine_distance(np.array([1.0, 0.0]), np.array([0.0, 2.0])) == pytest.approx(1.0)


def test_captions_carry_source_header_prompt_and_text(ros, tiny_qwen) -> None:
    ctx, spinner = ros
    node = make_node(
        ctx,
        spinner,
        tiny_qwen,
        image_topics=["/front/image_raw", "/rear/image_raw/compressed"],
        caption_period=0.0,
        caption_prompt="Any pedestrians?",
        publish_text=True,
    )
    probe = spinner.add(Probe(ctx))
    for ns in ("/front/scene", "/rear/scene"):
        probe.listen(Caption, f"{ns}/caption")
    probe.listen(String, "/front/scene/caption_text")
    front = probe.camera_publisher(Image, "/front/image_raw")
    rear = probe.camera_publisher(CompressedImage, "/rear/image_raw/compressed")
    spinner.start()
    assert wait_matched(node, front, rear)
    front.publish(image_msg(frame(1), "bgr8", header(1, "front_cam"), padding=3))
    rear.publish(compressed_msg(frame(2, (30, 300, 3)), header(2, "rear_cam"), "jpeg"))
    assert wait_for(
        lambda: probe.messages("/front/scene/caption") and probe.messages("/rear/scene/caption"), timeout=30
    )
    for ns, idx, frame_id in (("/front/scene", 1, "front_cam"), ("/rear/scene", 2, "rear_cam")):
        (msg,) = probe.messages(f"{ns}/caption")
        assert msg.header.frame_id == frame_id
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_700_000_000 + idx, 1000 * idx + 7)
        assert msg.prompt == "Any pedestrians?" and msg.model_id == str(tiny_qwen)
        assert msg.latency > 0 and 1 <= msg.num_tokens <= 3
    assert wait_for(lambda: probe.messages("/front/scene/caption_text"))
    assert (
        probe.messages("/front/scene/caption_text")[0].data == probe.messages("/front/scene/caption")[0].text
    )


def test_period_limits_captions_and_counts_skipped(ros, tiny_qwen) -> None:
    """Within caption_period every frame is skipped and counted; once it has passed, the next frame
    is captioned. Decided by conditions, not by counting captions in a timed window."""
    ctx, spinner = ros
    node = make_node(
        ctx, spinner, tiny_qwen, image_topics=["/cam/image_raw"], caption_period=1000.0,
        input_reliability="reliable", input_depth=100,  # every frame must reach the node to be counted
    )  # fmt: skip
    probe = spinner.add(Probe(ctx))
    probe.listen(Caption, "/cam/scene/caption")
    pub = probe.camera_publisher(Image, "/cam/image_raw", depth=100)
    spinner.start()
    assert wait_matched(node, pub)
    img, cam = frame(3), node.cameras[0]

    def captions() -> list[str]:
        return [m.header.frame_id for m in probe.messages("/cam/scene/caption")]

    pub.publish(image_msg(img, "rgb8", header(0, "f0")))
    assert wait_for(lambda: captions() == ["f0"], timeout=30), captions()  # the first frame is due at once
    seen_first = time.monotonic()  # after the worker started f0's caption (the period counts from there)
    for i in (1, 2, 3):
        pub.publish(image_msg(img, "rgb8", header(i, f"f{i}")))
        assert wait_for(lambda i=i: cam.skipped_period == i), vars(cam)
    # A period that has already passed since f0's caption began: the next frame is due. It is also
    # the sentinel: frames are taken in order, so f1..f3 had every chance to be captioned before it.
    elapsed = time.monotonic() - seen_first
    assert node.set_parameters([Parameter("caption_period", value=elapsed / 2)])[0].successful
    pub.publish(image_msg(img, "rgb8", header(4, "f4")))
    assert wait_for(lambda: "f4" in captions(), timeout=30), captions()
    assert captions() == ["f0", "f4"]

    def counts() -> tuple[int, ...]:
        return cam.received, cam.processed, cam.skipped_period, cam.dropped, cam.bad

    assert wait_for(lambda: counts() == (5, 2, 3, 0, 0)), counts()
    assert node.triggered == 0


def test_scene_change_trigger_from_similarity_topic(ros, tiny_qwen) -> None:
    ctx, spinner = ros
    node = make_node(
        ctx,
        spinner,
        tiny_qwen,
        image_topics=["/cam/image_raw"],
        caption_period=1000.0,  # only the first frame is due; any later caption is a trigger
        caption_scene_change_threshold=0.3,
        caption_embedding_source="similarity_topic",
    )
    probe = spinner.add(Probe(ctx))
    probe.listen(Caption, "/cam/scene/caption")
    pub = probe.camera_publisher(Image, "/cam/image_raw")
    sim_pub = probe.camera_publisher(Similarity, "/cam/scene/similarity")
    spinner.start()
    assert wait_matched(node, pub, sim_pub)
    a, b = np.zeros(16, np.float32), np.zeros(16, np.float32)
    a[0], b[1] = 1.0, 1.0  # orthogonal: cosine distance 1
    a_close = a.copy()
    a_close[1] = 0.1  # distance ~0.005: the same scene

    def send(i: int, emb: np.ndarray) -> None:
        hdr = header(i, "cam")
        sim_pub.publish(Similarity(header=hdr, image_embedding=emb.tolist(), model_id="test"))
        assert wait_for(
            lambda: (
                node.scenes.received("/cam/image_raw", (hdr.stamp.sec, hdr.stamp.nanosec, "cam"), exact=True)
                is not None
            )
        )
        pub.publish(image_msg(frame(i), "rgb8", hdr))

    def captions() -> list[int]:
        return [m.header.stamp.sec - 1_700_000_000 for m in probe.messages("/cam/scene/caption")]

    send(1, a)
    assert wait_for(lambda: captions() == [1], timeout=20)
    cam = node.cameras[0]
    for i, emb in ((2, a), (3, a_close)):
        send(i, emb)
        assert wait_for(lambda i=i: cam.received == i and cam.skipped_period == i - 1), vars(cam)
    send(4, b)
    assert wait_for(lambda: captions() == [1, 4], timeout=20), captions()
    seen_4 = time.monotonic()  # after the worker started frame 4's caption
    send(5, b)  # the reference is now b: no trigger
    assert wait_for(lambda: cam.skipped_period == 3)
    # Sentinel: a period already over makes frame 6 due; once its caption is out, frame 5 (taken
    # before it) has had every chance to be captioned.
    elapsed = time.monotonic() - seen_4
    assert node.set_parameters([Parameter("caption_period", value=elapsed / 2)])[0].successful
    send(6, b)
    assert wait_for(lambda: 6 in captions(), timeout=20), captions()
    assert captions() == [1, 4, 6] and node.triggered == 1


def test_scene_change_trigger_computed(ros, tiny_qwen, tiny_clip) -> None:
    ctx, spinner = ros
    scene_a, scene_b = frame(10), np.zeros((48, 64, 3), np.uint8)
    scene_b[:, 32:] = 255
    engine = ZeroShotEngine(str(tiny_clip), device="cpu")
    ea, eb = engine.encode_images([scene_a, scene_b])
    distance = cosine_distance(ea, eb)
    assert distance > 1e-3, "tiny CLIP cannot tell the two scenes apart"
    node = make_node(
        ctx,
        spinner,
        tiny_qwen,
        image_topics=["/cam/image_raw"],
        caption_period=1000.0,
        caption_scene_change_threshold=distance / 2,
        caption_embedding_source="compute",
        caption_clip_model=str(tiny_clip),
    )
    probe = spinner.add(Probe(ctx))
    probe.listen(Caption, "/cam/scene/caption")
    pub = probe.camera_publisher(Image, "/cam/image_raw")
    spinner.start()
    assert wait_matched(node, pub)
    cam = node.cameras[0]
    for i, img in enumerate((scene_a, scene_a, scene_b), start=1):
        pub.publish(image_msg(img, "rgb8", header(i, "cam")))
        assert wait_for(lambda i=i: cam.processed + cam.skipped_period == i, timeout=20), vars(cam)
    assert [m.header.stamp.sec - 1_700_000_000 for m in probe.messages("/cam/scene/caption")] == [1, 3]
    assert cam.skipped_period == 1 and node.triggered == 1


def _malformed(i: int) -> Image:
    hdr = header(i, "bad")
    return [
        Image(header=hdr, height=0, width=4, encoding="rgb8", step=12, data=b""),
        Image(header=hdr, height=4, width=8, encoding="rgb8", step=8, data=bytes(32)),
        Image(header=hdr, height=8, width=8, encoding="bgr8", step=24, data=bytes(100)),
        Image(header=hdr, height=2, width=2, encoding="weird", step=6, data=bytes(12)),
        Image(header=hdr, height=2, width=3, encoding="yuv422", step=6, data=bytes(12)),
    ][i % 5]


def test_malformed_frames_counted_and_skipped(ros, tiny_qwen) -> None:
    ctx, spinner = ros
    node = make_node(
        ctx, spinner, tiny_qwen, image_topics=["/cam/image_raw"], caption_period=0.0, diagnostics_period=0.2
    )
    probe = spinner.add(Probe(ctx))
    probe.listen(Caption, "/cam/scene/caption")
    probe.listen(DiagnosticArray, "/diagnostics")
    pub = probe.camera_publisher(Image, "/cam/image_raw")
    spinner.start()
    assert wait_matched(node, pub)
    n = 10
    for i in range(n):
        pub.publish(_malformed(i))
        time.sleep(0.03)

    def diag() -> dict[str, str]:
        for arr in reversed(probe.messages("/diagnostics")):
            for status in arr.status:
                if status.hardware_id == "/cam/image_raw":
                    return {kv.key: kv.value for kv in status.values}
        return {}

    assert wait_for(lambda: int(diag().get("bad_frames", 0)) + int(diag().get("dropped", 0)) == n), diag()
    assert int(diag()["bad_frames"]) > 0 and int(diag()["captions"]) == 0
    pub.publish(image_msg(frame(5), "rgb8", header(99, "good")))
    assert wait_for(
        lambda: [m.header.frame_id for m in probe.messages("/cam/scene/caption")] == ["good"], timeout=20
    )
    assert wait_for(lambda: node.cameras[0].processed == 1)  # counted just after publishing


def test_enable_caption_parameter() -> None:
    for args, expected in (([], True), (["--ros-args", "-p", "enable_caption:=false"], False)):
        ctx = rclpy.Context()
        rclpy.init(args=args, context=ctx)
        try:
            assert caption_enabled(context=ctx) is expected
        finally:
            rclpy.shutdown(context=ctx)


def test_scene_vlm_publishes_classification_and_captions(tiny_clip, tiny_qwen) -> None:
    params = {
        "model": str(tiny_clip),
        "caption_model": str(tiny_qwen),
        "labels": "[car,truck]",
        "tasks": "''",
        "image_topics": "[/cam/image_raw]",
        "caption_period": "0.5",
        "caption_max_new_tokens": "3",
        "caption_max_pixels": str(112 * 112),
        "heatmap": "false",
    }
    cmd = [sys.executable, "-m", "av_scene_vlm.ros.scene_vlm", "--ros-args"]
    for k, v in params.items():
        cmd += ["-p", f"{k}:={v}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    spinner = Spinner(ctx)
    try:
        probe = spinner.add(Probe(ctx))
        probe.listen(ClassificationArray, "/cam/scene/classification")
        probe.listen(Caption, "/cam/scene/caption")
        pub = probe.camera_publisher(Image, "/cam/image_raw")
        spinner.start()
        img = frame(7)

        def both() -> bool:
            return bool(probe.messages("/cam/scene/classification") and probe.messages("/cam/scene/caption"))

        deadline, i = time.monotonic() + 60, 0
        while not both() and time.monotonic() < deadline and proc.poll() is None:
            pub.publish(image_msg(img, "rgb8", header(i, "cam")))
            i += 1
            time.sleep(0.1)
        assert both(), proc.poll()
        sent = {(1_700_000_000 + k, 1000 * k + 7) for k in range(i)}
        for topic in ("/cam/scene/classification", "/cam/scene/caption"):
            msg = probe.messages(topic)[0]
            assert msg.header.frame_id == "cam" and (msg.header.stamp.sec, msg.header.stamp.nanosec) in sent
        assert probe.messages("/cam/scene/classification")[0].results[0].labels == ["car", "truck"]
    finally:
        spinner.stop()
        for node in list(spinner.executor.get_nodes()):
            node.destroy_node()
        rclpy.shutdown(context=ctx)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out


def test_missing_caption_model_exits_nonzero_quickly() -> None:
    proc, elapsed = run_node_offline("av_scene_vlm.ros.caption_node", "caption_model:=acme/no-such-qwen-vl")
    assert proc.returncode == 1
    assert elapsed < 10, f"took {elapsed:.1f}s"
    out = proc.stdout + proc.stderr
    assert "acme/no-such-qwen-vl" in out and "hf download" in out
    assert "Traceback" not in out


def test_caption_errors_are_counted_and_reported_then_recovered(ros, tiny_qwen) -> None:
    ctx, spinner = ros
    node = make_node(ctx, spinner, tiny_qwen, image_topics=["/err/image_raw"], caption_period=0.0,
                     diagnostics_period=0.2)  # fmt: skip
    real, failures = node.captioner.caption_batch, [1]

    def fail_once(*args, **kwargs):  # as a GPU out of memory would, once
        if failures:
            failures.pop()
            raise RuntimeError("CUDA out of memory (injected)")
        return real(*args, **kwargs)

    node.captioner.caption_batch = fail_once
    probe = spinner.add(Probe(ctx))
    probe.listen(Caption, "/err/scene/caption")
    probe.listen(DiagnosticArray, "/diagnostics", 100)
    pub = probe.camera_publisher(Image, "/err/image_raw")
    spinner.start()
    assert wait_matched(node, pub)

    def captioner_statuses():
        statuses = [s for arr in probe.messages("/diagnostics") for s in arr.status]
        return [s for s in statuses if s.name.endswith(": captioner")]

    pub.publish(image_msg(frame(1), "rgb8", header(1, "fail")))
    assert wait_for(lambda: node.worker_errors.count == 1)
    assert wait_for(lambda: any(s.level == DiagnosticStatus.ERROR for s in captioner_statuses()))
    error = next(s for s in captioner_statuses() if s.level == DiagnosticStatus.ERROR)
    assert "out of memory" in error.message
    pub.publish(image_msg(frame(2), "rgb8", header(2, "ok")))
    assert wait_for(lambda: [m.header.frame_id for m in probe.messages("/err/scene/caption")] == ["ok"], 30)
    seen = len(captioner_statuses())
    assert wait_for(lambda: len(captioner_statuses()) > seen + 1)
    assert captioner_statuses()[-1].level == DiagnosticStatus.OK, captioner_statuses()[-1].message
    cam = node.cameras[0]
    assert wait_for(lambda: (cam.received, cam.processed, cam.failed) == (2, 1, 1)), vars(cam)


def test_compiled_decoder_warms_up_before_captions(ros, tiny_qwen, tiny_clip) -> None:
    """caption_compile on (here on a CPU, through inductor): the caption worker compiles before its
    first caption, /diagnostics shows it compiling and then how long it took, no caption comes
    before, and a clip_node in the same process keeps classifying meanwhile."""
    from ros_helpers import make_clip_node

    ctx, spinner = ros
    topic = "/cmp/image_raw"
    node = make_node(
        ctx, spinner, tiny_qwen, image_topics=[topic], caption_period=0.0, caption_compile="on",
        caption_max_new_tokens=2, diagnostics_period=0.2,
    )  # fmt: skip
    make_clip_node(
        ctx, spinner, tiny_clip, image_topics=[topic], labels=["car", "truck"], tasks="", heatmap=False
    )
    probe = spinner.add(Probe(ctx))
    probe.listen(ClassificationArray, "/cmp/scene/classification", 1000)
    probe.listen(Caption, "/cmp/scene/caption", 1000)
    probe.listen(DiagnosticArray, "/diagnostics", 5000)
    pub = probe.camera_publisher(Image, topic)
    spinner.start()
    assert wait_matched(node, pub)

    def compile_values() -> list[str]:
        statuses = [s for arr in probe.messages("/diagnostics") for s in arr.status]
        ours = [s for s in statuses if s.name.endswith(": captioner")]
        return [kv.value for s in ours for kv in s.values if kv.key == "compile"]

    classified_while_compiling, i = 0, 0
    deadline = time.monotonic() + 240
    while not probe.messages("/cmp/scene/caption") and time.monotonic() < deadline:
        pub.publish(image_msg(frame(i), "rgb8", header(i, "cmp")))
        i += 1
        time.sleep(0.1)
        if node._compile_state == "compiling":
            classified_while_compiling = len(probe.messages("/cmp/scene/classification"))
    assert probe.messages("/cmp/scene/caption"), compile_values()[-3:]
    assert node.captioner.batch_sizes == (1,) and node.captioner.compile_seconds > 0
    assert classified_while_compiling > 0, "clip_node published nothing while the captioner compiled"
    assert wait_for(lambda: any(v.startswith("compiled in") for v in compile_values()))
    values = compile_values()
    assert "compiling" in values, set(values)
    first_compiled = next(k for k, v in enumerate(values) if v.startswith("compiled in"))
    assert "compiling" not in values[first_compiled:] and "compiled in" not in " ".join(
        values[:first_compiled]
    )


def test_failed_caption_batch_halves_the_next_batches(ros, tiny_qwen) -> None:
    """Out of memory captioning 4 cameras together: their frames count as failed, the next batches
    take 2 cameras, every camera gets its caption, and /diagnostics says why while it lasts."""
    ctx, spinner = ros
    topics = [f"/coom{i}/image_raw" for i in range(4)]
    node = make_node(ctx, spinner, tiny_qwen, image_topics=topics, caption_period=0.0, diagnostics_period=0.2,
                     input_reliability="reliable", input_depth=4)  # fmt: skip
    real, sizes = node.captioner.caption_batch, []
    entered, gate = threading.Event(), threading.Event()

    def gated(images, *args, **kwargs):  # the first batch waits for the gate, the second runs out of memory
        sizes.append(len(images))
        if len(sizes) == 1:
            entered.set()
            assert gate.wait(60), "test never opened the gate"
        if len(sizes) == 2:
            raise OutOfMemoryError("CUDA out of memory (injected)")
        return real(images, *args, **kwargs)

    node.captioner.caption_batch = gated
    probe = spinner.add(Probe(ctx))
    for i in range(4):
        probe.listen(Caption, f"/coom{i}/scene/caption", 10)
    probe.listen(DiagnosticArray, "/diagnostics", 500)
    pubs = [probe.camera_publisher(Image, t, depth=4) for t in topics]
    spinner.start()
    assert wait_matched(node, *pubs)
    pubs[0].publish(image_msg(frame(0), "rgb8", header(0, "warm")))
    assert entered.wait(30), "the first frame never reached the captioner"
    for i, pub in enumerate(pubs):  # wait in the slots while the worker is held: one batch of 4
        pub.publish(image_msg(frame(i), "rgb8", header(1, f"lost{i}")))
    assert wait_for(lambda: [c.received for c in node.cameras] == [2, 1, 1, 1])
    gate.set()
    assert wait_for(lambda: sum(c.failed for c in node.cameras) == 4), [c.failed for c in node.cameras]
    assert sizes[:2] == [1, 4]

    def held() -> list:
        statuses = [s for arr in probe.messages("/diagnostics") for s in arr.status]
        return [s for s in statuses if s.name.endswith(": captioner") and "held at 2" in s.message]

    assert wait_for(held), "no diagnostics while batches are held"
    assert held()[0].level in (DiagnosticStatus.WARN, DiagnosticStatus.ERROR)
    assert {kv.key: kv.value for kv in held()[0].values}["failed_batches"] == "1"
    for i, pub in enumerate(pubs):
        pub.publish(image_msg(frame(i), "rgb8", header(2, f"ok{i}")))

    def answered() -> list[str]:
        return sorted(m.header.frame_id for i in range(4) for m in probe.messages(f"/coom{i}/scene/caption"))

    assert wait_for(lambda: answered() == ["ok0", "ok1", "ok2", "ok3", "warm"], 60), answered()
    assert max(sizes[2:]) == 2, sizes  # halved after the failure
    assert node.worker_errors.count == 1
    for cam in node.cameras:
        assert cam.received == cam.processed + cam.dropped + cam.bad + cam.skipped_period + cam.failed


def test_bare_node_follows_remapping(ros, tiny_qwen) -> None:
    """Issue 30: without image_topics the captioner, like clip_node, subscribes to the relative
    `image_raw`; `-r image_raw:=/cam9/image_raw` moves it, and captions go beside the resolved topic."""
    ctx, spinner = ros
    values = {"caption_model": str(tiny_qwen), **FAST, "caption_period": 0.0}
    node = spinner.add(
        CaptionNode(
            "caption_node",
            context=ctx,
            cli_args=["--ros-args", "-r", "image_raw:=/cam9/image_raw"],
            parameter_overrides=[Parameter(k, value=v) for k, v in values.items()],
        )
    )
    assert [(c.topic, c.namespace) for c in node.cameras] == [("/cam9/image_raw", "/cam9/scene")]
    probe = spinner.add(Probe(ctx))
    probe.listen(Caption, "/cam9/scene/caption")
    pub = probe.camera_publisher(Image, "/cam9/image_raw")
    spinner.start()
    assert wait_matched(node, pub)
    pub.publish(image_msg(frame(9), "rgb8", header(9, "cam9")))
    assert wait_for(lambda: probe.messages("/cam9/scene/caption"), timeout=60)
    assert probe.messages("/cam9/scene/caption")[0].header.frame_id == "cam9"
