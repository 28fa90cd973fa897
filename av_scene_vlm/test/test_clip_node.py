"""clip_node over real DDS with a tiny CLIP: topics, headers, parity, bad input, overload, errors.
(Its runtime parameters — relabel, smoothing, min_publish_period — are test_param_services.py.)"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from av_scene_vlm.core.engine import ZeroShotEngine  # noqa: E402
from av_scene_vlm.ros.clip_node import ClipNode  # noqa: E402
from clip_reference import clip_reference, photo_prompts  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from ros_helpers import (  # noqa: E402
    OutOfMemoryError,
    Probe,
    compressed_msg,
    header,
    image_msg,
    make_clip_node,
    run_node_offline,
    wait_for,
    wait_matched,
)
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from av_scene_vlm_msgs.msg import ClassificationArray, LabelInfo, Similarity  # noqa: E402

TASKS_YAML = (
    "road_user: {car: [a photo of a car., a car on the road.], pedestrian: [a baby crossing the road.]}\n"
    "weather: [clear, rain, snow]\n"
)


def test_two_cameras_outputs_headers_and_parity(ros, tiny_clip, rng) -> None:
    ctx, spinner = ros
    node = make_clip_node(
        ctx,
        spinner,
        tiny_clip,
        image_topics=["/front/image_raw", "/rear/image_raw/compressed"],
        tasks=TASKS_YAML,
    )
    probe = spinner.add(Probe(ctx))
    for cam in ("/front/scene", "/rear/scene"):
        probe.listen(ClassificationArray, f"{cam}/classification")
        probe.listen(Similarity, f"{cam}/similarity")
        probe.listen(Image, f"{cam}/heatmap")
    latched = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    probe.listen(LabelInfo, "/front/scene/labels", latched)
    front = probe.camera_publisher(Image, "/front/image_raw")
    rear = probe.camera_publisher(CompressedImage, "/rear/image_raw/compressed")
    spinner.start()
    assert wait_matched(node, front, rear)
    assert wait_for(lambda: node._pubs["/front/image_raw"]["heatmap"].get_subscription_count() > 0)

    frames = {"front": rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)}
    yy, xx = np.mgrid[0:90, 0:200]
    frames["rear"] = np.stack([xx % 256, yy * 2 % 256, (xx + yy) % 256], -1).astype(np.uint8)
    sent_rear = compressed_msg(frames["rear"], header(2, "rear_cam"), "png")  # png: lossless, exact parity
    front.publish(image_msg(frames["front"], "bgr8", header(1, "front_cam"), padding=5))
    rear.publish(sent_rear)
    topics = [
        f"/{c}/scene/{k}" for c in ("front", "rear") for k in ("classification", "similarity", "heatmap")
    ]
    assert wait_for(lambda: all(probe.messages(t) for t in topics)), {
        t: len(probe.messages(t)) for t in topics
    }

    # Expected values from transformers' CLIPModel (independent of the engine), TASKS_YAML spelled out.
    reference = clip_reference(tiny_clip)
    spec = {
        "road_user": {
            "car": ["a photo of a car.", "a car on the road."],
            "pedestrian": ["a baby crossing the road."],
        },
        "weather": photo_prompts("clear", "rain", "snow"),
    }
    for cam, idx, frame_id in (("front", 1, "front_cam"), ("rear", 2, "rear_cam")):
        cls = probe.messages(f"/{cam}/scene/classification")[0]
        sim = probe.messages(f"/{cam}/scene/similarity")[0]
        heat = probe.messages(f"/{cam}/scene/heatmap")[0]
        for msg in (cls, sim, heat, *cls.results):
            assert msg.header.frame_id == frame_id
            assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_700_000_000 + idx, 1000 * idx + 7)
        expected = reference.classify(frames[cam], spec)
        assert [r.task for r in cls.results] == ["road_user", "weather"]
        for r, e in zip(cls.results, expected.tasks.values(), strict=True):
            assert list(r.labels) == e.labels
            np.testing.assert_allclose(r.probabilities, e.probabilities, atol=1e-4)
            assert r.top_label == e.label and r.model_id == str(tiny_clip)
        assert list(sim.texts) == ["car", "pedestrian", "clear", "rain", "snow"]
        np.testing.assert_allclose(sim.image_embedding, expected.image_embedding, atol=1e-5)
        cosine = np.concatenate([e.cosine for e in expected.tasks.values()])
        np.testing.assert_allclose(sim.cosine, cosine, atol=1e-5)
        assert heat.encoding == "bgr8" and (heat.height, heat.width) == frames[cam].shape[:2]
    # Latched: delivered when the probe's subscription matches the node's publisher, which under load
    # can be after the first results.
    assert wait_for(lambda: probe.messages("/front/scene/labels"))
    labels = probe.messages("/front/scene/labels")
    assert [t.task for t in labels[-1].tasks] == ["road_user", "weather"]


def _malformed(rng, i: int):
    """A malformed Image or CompressedImage (random sizes, steps, encodings, truncated data, bad JPEG)."""
    kind = i % 6
    w = int(rng.integers(0, 40))
    hdr = header(i, "bad")
    if kind == 0:  # zero size
        return Image(header=hdr, height=0, width=w, encoding="rgb8", step=w * 3, data=b"")
    if kind == 1:  # step too small
        return Image(header=hdr, height=4, width=8, encoding="rgb8", step=8, data=bytes(32))
    if kind == 2:  # truncated data
        return Image(
            header=hdr, height=8, width=8, encoding="bgr8", step=24, data=bytes(int(rng.integers(0, 191)))
        )
    if kind == 3:  # unknown encoding
        return Image(header=hdr, height=2, width=2, encoding=f"weird{i}", step=6, data=bytes(12))
    if kind == 4:  # odd width yuv422
        return Image(header=hdr, height=2, width=3, encoding="yuv422", step=6, data=bytes(12))
    return CompressedImage(
        header=hdr,
        format="jpeg",
        data=rng.integers(0, 256, int(rng.integers(0, 500)), dtype=np.uint8).tobytes(),
    )


def test_malformed_flood_then_valid_frame(ros, tiny_clip, rng) -> None:
    ctx, spinner = ros
    node = make_clip_node(
        ctx,
        spinner,
        tiny_clip,
        image_topics=["/raw/image_raw", "/jpg/image_raw/compressed"],
        labels=["car", "truck"],
        tasks="",
        diagnostics_period=0.2,
        # Reliable and deep on both ends so that DDS loses nothing and every frame must be counted:
        # best effort may drop the first samples before discovery completes both ways, or under load.
        input_reliability="reliable",
        input_depth=300,
    )
    probe = spinner.add(Probe(ctx))
    probe.listen(ClassificationArray, "/raw/scene/classification")
    probe.listen(DiagnosticArray, "/diagnostics")
    raw = probe.camera_publisher(Image, "/raw/image_raw", depth=300)
    jpg = probe.camera_publisher(CompressedImage, "/jpg/image_raw/compressed", depth=300)
    spinner.start()
    assert wait_matched(node, raw, jpg)
    sent = {"raw": 0, "jpg": 0}
    for i in range(240):
        msg = _malformed(rng, i)
        (jpg if isinstance(msg, CompressedImage) else raw).publish(msg)
        sent["jpg" if isinstance(msg, CompressedImage) else "raw"] += 1
        time.sleep(0.004)

    def bad_counts() -> dict[str, int]:
        for arr in reversed(probe.messages("/diagnostics")):
            vals = {s.hardware_id: {kv.key: kv.value for kv in s.values} for s in arr.status}
            if "/raw/image_raw" in vals:
                return {
                    k: int(vals[k]["bad_frames"]) + int(vals[k]["dropped"])
                    for k in ("/raw/image_raw", "/jpg/image_raw/compressed")
                }
        return {}

    assert wait_for(
        lambda: bad_counts() == {"/raw/image_raw": sent["raw"], "/jpg/image_raw/compressed": sent["jpg"]},
        timeout=20,
    ), (bad_counts(), sent)
    good = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    raw.publish(image_msg(good, "rgb8", header(999, "good")))
    assert wait_for(
        lambda: any(m.header.frame_id == "good" for m in probe.messages("/raw/scene/classification"))
    )


def test_overload_keeps_newest_and_counts_drops(ros, tiny_clip, rng) -> None:
    ctx, spinner = ros
    node = make_clip_node(
        ctx,
        spinner,
        tiny_clip,
        image_topics=["/fast/image_raw"],
        labels=["car", "truck"],
        tasks="",
        input_reliability="reliable",
        input_depth=1000,
        heatmap=False,
    )
    probe = spinner.add(Probe(ctx))
    probe.listen(ClassificationArray, "/fast/scene/classification", 1000)
    pub = probe.camera_publisher(Image, "/fast/image_raw")
    spinner.start()
    assert wait_matched(node, pub)
    frame = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    n = 150
    for i in range(n):
        pub.publish(image_msg(frame, "rgb8", header(i, f"f{i}")))
    cam = node.cameras[0]
    assert wait_for(lambda: cam.received == n, timeout=30), cam.received
    assert wait_for(
        lambda: any(m.header.frame_id == f"f{n - 1}" for m in probe.messages("/fast/scene/classification")),
        timeout=20,
    ), "newest frame never processed"
    # Counters move after the outputs are published: wait until every frame is accounted for.
    assert wait_for(
        lambda: (
            cam.processed + cam.dropped == n
            and len(probe.messages("/fast/scene/classification")) == cam.processed
        )
    ), (cam.processed, cam.dropped, len(probe.messages("/fast/scene/classification")))
    results = probe.messages("/fast/scene/classification")
    assert cam.dropped > 0, "publishing far faster than inference dropped nothing"
    assert len(results) == cam.processed < n
    stamps = [m.header.stamp.sec for m in results]
    assert stamps == sorted(stamps), "results out of order"


class BlockingEngine(ZeroShotEngine):
    """A real engine whose submit waits until the test releases it (inference as slow as we like)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.entered, self.release = threading.Event(), threading.Event()
        self.batches: list[list[tuple[int, ...]]] = []  # shapes of the frames of each call

    def submit(self, frames, **kwargs):
        self.batches.append([f.shape[:2] for f in frames])
        self.entered.set()
        assert self.release.wait(60), "test never released the engine"
        return super().submit(frames, **kwargs)


def test_busy_worker_holds_one_frame_per_camera(ros, tiny_clip, rng) -> None:
    """Memory stays bounded under any input rate: while inference runs, a flood of frames leaves one
    waiting frame per camera (the newest); every other one is dropped and counted, none queues."""
    ctx, spinner = ros
    engine = BlockingEngine(str(tiny_clip))
    n = 200
    topics = ["/busy_a/image_raw", "/busy_b/image_raw"]
    node = make_clip_node(
        ctx, spinner, tiny_clip, engine=engine, image_topics=topics, labels=["car", "truck"], tasks="",
        heatmap=False, input_reliability="reliable", input_depth=2 * n,  # DDS delivers every frame
    )  # fmt: skip
    probe = spinner.add(Probe(ctx))
    for t in ("/busy_a/scene/classification", "/busy_b/scene/classification"):
        probe.listen(ClassificationArray, t, 2 * n)
    pubs = [probe.camera_publisher(Image, t, depth=2 * n) for t in topics]
    spinner.start()
    assert wait_matched(node, *pubs)
    cam_a, cam_b = node.cameras
    frame = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    pubs[0].publish(image_msg(frame, "rgb8", header(0, "a0")))
    assert engine.entered.wait(20), "the first frame never reached the engine"
    for i in range(1, n + 1):
        for pub, tag in zip(pubs, ("a", "b"), strict=True):
            pub.publish(image_msg(frame, "rgb8", header(i, f"{tag}{i}")))
    assert wait_for(lambda: (cam_a.received, cam_b.received) == (n + 1, n), timeout=60), (
        cam_a.received, cam_b.received,
    )  # fmt: skip
    # Worker still busy with a0: of the n frames per camera that came meanwhile, n - 1 are dropped.
    assert (cam_a.dropped, cam_b.dropped) == (n - 1, n - 1)
    assert (cam_a.processed, cam_b.processed) == (0, 0) and len(engine.batches) == 1

    def results(t: str) -> list[str]:
        return [m.header.frame_id for m in probe.messages(f"/{t}/scene/classification")]

    engine.release.set()
    assert wait_for(lambda: (results("busy_a"), results("busy_b")) == (["a0", f"a{n}"], [f"b{n}"])), (
        results("busy_a"), results("busy_b"),
    )  # fmt: skip
    assert [len(b) for b in engine.batches] == [1, 2]  # the two newest frames, batched together
    assert wait_for(lambda: (cam_a.processed, cam_b.processed) == (2, 1))
    assert (cam_a.dropped, cam_b.dropped) == (n - 1, n - 1)


def test_missing_model_exits_nonzero_quickly() -> None:
    proc, elapsed = run_node_offline(
        "av_scene_vlm.ros.clip_node", "model:=acme/no-such-clip", "labels:=[car, truck]"
    )
    assert proc.returncode != 0
    assert elapsed < 10, f"took {elapsed:.1f}s"
    out = proc.stdout + proc.stderr
    assert "acme/no-such-clip" in out and "hf download" in out
    assert "Traceback" not in out


@pytest.mark.parametrize(
    ("param", "value", "reason"),
    [
        ("input_reliability", "sometimes", "input_reliability"),
        ("input_depth", 0, "input_depth"),
        ("diagnostics_period", 0.0, "diagnostics_period"),
    ],
)
def test_bad_input_parameters_fail_before_the_model_loads(ros, tmp_path, param, value, reason) -> None:
    ctx, _ = ros
    overrides = [
        Parameter("model", value=str(tmp_path / "no-model")),  # loading it would raise ModelLoadError
        Parameter("labels", value=["car", "truck"]),
        Parameter(param, value=value),
    ]
    with pytest.raises(ValueError, match=reason):
        ClipNode("clip_node", context=ctx, parameter_overrides=overrides)


class FailingEngine(ZeroShotEngine):
    """A real engine whose first `fail` batches raise, as a GPU out of memory would; records the size
    of every batch it is given."""

    def __init__(self, *args, fail: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fail = fail
        self.sizes: list[int] = []

    def submit(self, frames, **kwargs):
        self.sizes.append(len(frames))
        if self.fail > 0:
            self.fail -= 1
            raise RuntimeError("CUDA out of memory (injected)")
        return super().submit(frames, **kwargs)


def test_inference_errors_are_counted_and_reported_then_recovered(ros, tiny_clip, rng) -> None:
    ctx, spinner = ros
    engine = FailingEngine(str(tiny_clip), fail=2)
    node = make_clip_node(
        ctx, spinner, tiny_clip, engine=engine, image_topics=["/err/image_raw"], labels=["car", "truck"],
        tasks="", heatmap=False, diagnostics_period=0.2,
    )  # fmt: skip
    probe = spinner.add(Probe(ctx))
    probe.listen(ClassificationArray, "/err/scene/classification")
    probe.listen(DiagnosticArray, "/diagnostics", 100)
    pub = probe.camera_publisher(Image, "/err/image_raw")
    spinner.start()
    assert wait_matched(node, pub)
    frame = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)

    def engine_statuses():
        statuses = [s for arr in probe.messages("/diagnostics") for s in arr.status]
        return [s for s in statuses if s.name.endswith(": engine")]

    for i in range(2):
        pub.publish(image_msg(frame, "rgb8", header(i, f"fail{i}")))
        assert wait_for(lambda i=i: node.worker_errors.count == i + 1), node.worker_errors.count
    assert wait_for(lambda: any(s.level == DiagnosticStatus.ERROR for s in engine_statuses()))
    error = next(s for s in engine_statuses() if s.level == DiagnosticStatus.ERROR)
    assert "out of memory" in error.message
    values = {kv.key: kv.value for kv in error.values}
    assert int(values["worker_errors"]) >= 1 and "out of memory" in values["last_worker_error"]

    pub.publish(image_msg(frame, "rgb8", header(2, "ok")))  # the worker survived: the next frame works

    def results() -> list[str]:
        return [m.header.frame_id for m in probe.messages("/err/scene/classification")]

    assert wait_for(lambda: results() == ["ok"]), results()
    seen = len(engine_statuses())
    assert wait_for(lambda: len(engine_statuses()) > seen + 1)
    last = engine_statuses()[-1]
    assert last.level == DiagnosticStatus.OK, last.message  # no new errors: healthy again
    assert {kv.key: kv.value for kv in last.values}["worker_errors"] == "2"
    cam = node.cameras[0]  # every frame is accounted for: the two lost to the model count as failed

    def counts() -> tuple[int, ...]:
        return cam.received, cam.processed, cam.failed, cam.dropped, cam.bad

    assert wait_for(lambda: counts() == (3, 1, 2, 0, 0)), counts()
    camera_values = {kv.key: kv.value for kv in probe.messages("/diagnostics")[-1].status[1].values}
    assert camera_values["failed"] == "2"


class GatedEngine(ZeroShotEngine):
    """A real engine whose first batch waits for the test's gate and whose batches numbered in
    `fail` (1-based) run out of memory; records every batch's size and memory releases."""

    def __init__(self, *args, fail: set[int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fail, self.sizes, self.released = fail, [], 0
        self.entered, self.gate = threading.Event(), threading.Event()

    def submit(self, frames, **kwargs):
        self.sizes.append(len(frames))
        if len(self.sizes) == 1:
            self.entered.set()
            assert self.gate.wait(60), "test never opened the gate"
        if len(self.sizes) in self.fail:
            raise OutOfMemoryError("CUDA out of memory (injected)")
        return super().submit(frames, **kwargs)

    def release_memory(self) -> None:
        self.released += 1
        super().release_memory()


def test_failed_batch_halves_the_next_batches(ros, tiny_clip, rng) -> None:
    """Out of memory in a batch of 4 cameras: its frames count as failed, cached memory is released,
    the next batches take 2 frames, every camera is answered again, and /diagnostics says why."""
    ctx, spinner = ros
    engine = GatedEngine(str(tiny_clip), fail={2})
    topics = [f"/oom{i}/image_raw" for i in range(4)]
    node = make_clip_node(
        ctx, spinner, tiny_clip, engine=engine, image_topics=topics, labels=["car", "truck"], tasks="",
        heatmap=False, max_batch=4, diagnostics_period=0.2, input_reliability="reliable", input_depth=4,
    )  # fmt: skip
    probe = spinner.add(Probe(ctx))
    for i in range(4):
        probe.listen(ClassificationArray, f"/oom{i}/scene/classification", 10)
    probe.listen(DiagnosticArray, "/diagnostics", 200)
    pubs = [probe.camera_publisher(Image, t, depth=4) for t in topics]
    spinner.start()
    assert wait_matched(node, *pubs)
    frame = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    pubs[0].publish(image_msg(frame, "rgb8", header(0, "warm")))
    assert engine.entered.wait(20), "the first frame never reached the engine"
    for i, pub in enumerate(pubs):  # wait in the slots while the worker is held: one batch of 4
        pub.publish(image_msg(frame, "rgb8", header(1, f"lost{i}")))
    assert wait_for(lambda: [c.received for c in node.cameras] == [2, 1, 1, 1]), [
        c.received for c in node.cameras
    ]
    engine.gate.set()
    assert wait_for(lambda: sum(c.failed for c in node.cameras) == 4), [c.failed for c in node.cameras]
    assert engine.sizes[:2] == [1, 4]
    assert wait_for(lambda: engine.released == 1)  # after the except block: the traceback is gone
    for i, pub in enumerate(pubs):
        pub.publish(image_msg(frame, "rgb8", header(2, f"ok{i}")))

    def answered() -> list[str]:
        msgs = [m for i in range(4) for m in probe.messages(f"/oom{i}/scene/classification")]
        return sorted(m.header.frame_id for m in msgs)

    assert wait_for(lambda: answered() == ["ok0", "ok1", "ok2", "ok3", "warm"]), answered()
    assert max(engine.sizes[2:]) == 2, engine.sizes  # halved after the failure

    def engine_status():
        statuses = [s for arr in probe.messages("/diagnostics") for s in arr.status]
        return [s for s in statuses if s.name.endswith(": engine")]

    assert wait_for(lambda: any("batches held at 2" in s.message for s in engine_status()))
    held = next(s for s in engine_status() if "batches held at 2" in s.message)
    assert held.level in (DiagnosticStatus.WARN, DiagnosticStatus.ERROR)
    values = {kv.key: kv.value for kv in held.values}
    assert values["batch_limit"] == "2" and values["failed_batches"] == "1"


def test_bare_node_follows_remapping_and_reads_the_installed_tasks(ros, tiny_clip, rng) -> None:
    """Issue 30: neither image_topics nor tasks given. The node subscribes to the relative `image_raw`,
    which `-r image_raw:=/cam9/image_raw` moves (its `/compressed` form with it, image_transport's rule);
    results go beside the resolved topic; the tasks are those of the package's config/scene_vlm.yaml."""
    from av_scene_vlm.core.package_config import default_config
    from av_scene_vlm.core.tasks import read_task_file

    ctx, spinner = ros
    remap = ["--ros-args", "-r", "image_raw:=/cam9/image_raw"]
    node = spinner.add(
        ClipNode(
            "clip_node",
            context=ctx,
            cli_args=remap,
            parameter_overrides=[Parameter("model", value=str(tiny_clip))],
        )
    )
    assert [(c.topic, c.namespace) for c in node.cameras] == [("/cam9/image_raw", "/cam9/scene")]
    probe = spinner.add(Probe(ctx))
    probe.listen(ClassificationArray, "/cam9/scene/classification")
    pub = probe.camera_publisher(Image, "/cam9/image_raw")
    spinner.start()
    assert wait_matched(node, pub)
    pub.publish(image_msg(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), "rgb8", header(1, "cam9")))
    assert wait_for(lambda: probe.messages("/cam9/scene/classification"))
    installed = [t.name for t in read_task_file(default_config()).tasks]
    assert len(installed) >= 3  # the vehicle's label sets: road users, weather, time of day, ...
    assert [r.task for r in probe.messages("/cam9/scene/classification")[0].results] == installed

    compressed = spinner.add(
        ClipNode(
            "clip_node_compressed",
            context=ctx,
            cli_args=remap,
            parameter_overrides=[
                Parameter("model", value=str(tiny_clip)),
                Parameter("image_topics", value=["image_raw/compressed"]),
                Parameter("labels", value=["car", "bus"]),
            ],
        )
    )
    cam = compressed.cameras[0]
    assert (cam.topic, cam.namespace, cam.compressed) == ("/cam9/image_raw/compressed", "/cam9/scene", True)
