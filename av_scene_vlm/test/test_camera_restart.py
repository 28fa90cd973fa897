"""A camera driver restarting under a running clip_node (real DDS): its publisher goes away and comes
back with another resolution and encoding — 1920x1080 bgr8, then 1280x720 yuv422 on the same topic,
then JPEG on the camera's `/compressed` topic (another message type, so another publisher). Results
resume within 2 frames of each new stream without a node restart, and /diagnostics shows the
silence (WARN, no publishers), the gap and the new stream."""

from __future__ import annotations

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from ros_helpers import (  # noqa: E402
    Probe,
    compressed_msg,
    header,
    image_msg,
    make_clip_node,
    wait_for,
    wait_matched,
)
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from av_scene_vlm_msgs.msg import ClassificationArray  # noqa: E402

RAW, JPEG = "/restart/image_raw", "/restart/image_raw/compressed"
OUT = {RAW: "/restart/scene/classification", JPEG: "/restart/scene_jpeg/classification"}


def camera_values(probe: Probe, topic: str) -> tuple[int, str, dict[str, str]] | None:
    """(level, message, values) of the newest /diagnostics status of camera `topic`."""
    for arr in reversed(probe.messages("/diagnostics")):
        for status in arr.status:
            if status.hardware_id == topic:
                return status.level, status.message, {kv.key: kv.value for kv in status.values}
    return None


def frames_until_result(probe: Probe, pub, topic: str, make, first: int, limit: int = 5) -> int:
    """Publish frames `first`, `first`+1, ... of a new stream, one at a time, until a result for one of
    them comes back; how many were sent (limit + 1 when none was answered)."""
    for n in range(1, limit + 1):
        pub.publish(make(header(first + n, "restart")))
        answered = lambda: any(  # noqa: E731
            m.header.stamp.sec > 1_700_000_000 + first for m in probe.messages(OUT[topic])
        )
        if wait_for(answered, timeout=10):
            return n
    return limit + 1


def test_camera_restarts_with_other_resolution_and_encoding(ros, tiny_clip, rng) -> None:
    ctx, spinner = ros
    node = make_clip_node(
        ctx, spinner, tiny_clip, image_topics=[RAW, JPEG], output_namespaces=["/restart/scene",
        "/restart/scene_jpeg"], labels=["car", "truck"], tasks="", heatmap=False, diagnostics_period=0.2,
        input_reliability="reliable",
    )  # fmt: skip
    probe = spinner.add(Probe(ctx))
    for topic in OUT.values():
        probe.listen(ClassificationArray, topic)
    probe.listen(DiagnosticArray, "/diagnostics", 100)
    spinner.start()
    full_hd = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    hd = np.ascontiguousarray(full_hd[:720, :1280])

    # 1920x1080 bgr8, three frames, each answered.
    pub = probe.camera_publisher(Image, RAW)
    assert wait_matched(node, pub)
    assert frames_until_result(probe, pub, RAW, lambda h: image_msg(full_hd, "bgr8", h), 0) == 1
    assert frames_until_result(probe, pub, RAW, lambda h: image_msg(full_hd, "bgr8", h), 10) == 1
    assert wait_for(lambda: (camera_values(probe, RAW) or (0, "", {}))[2].get("stream") == "1920x1080 bgr8")

    # A malformed frame in between (an encoding nobody knows) is a bad frame, not a new stream.
    bad = image_msg(full_hd, "bgr8", header(20, "restart"))
    bad.encoding = "rgb9000"
    pub.publish(bad)
    assert wait_for(lambda: camera_values(probe, RAW)[2].get("bad_frames") == "1", timeout=10)
    values = camera_values(probe, RAW)[2]
    assert values["stream"] == "1920x1080 bgr8" and values["stream_changes"] == "0", values

    # The driver goes away: WARN while silent, with no publisher left.
    probe.destroy_publisher(pub)

    def silent() -> bool:
        got = camera_values(probe, RAW)
        return got is not None and got[0] == DiagnosticStatus.WARN and "no frames for" in got[1]

    assert wait_for(silent, timeout=10), camera_values(probe, RAW)
    assert wait_for(lambda: camera_values(probe, RAW)[2]["publishers"] == "0", timeout=10)
    time.sleep(0.5)

    # Back at 1280x720 yuv422 on the same topic: answered within 2 frames, diagnostics show it all.
    pub = probe.camera_publisher(Image, RAW)
    assert wait_matched(node, pub)
    assert frames_until_result(probe, pub, RAW, lambda h: image_msg(hd, "yuv422", h), 100) <= 2

    def recovered() -> bool:
        got = camera_values(probe, RAW)
        return got is not None and got[0] == DiagnosticStatus.OK and got[2]["stream"] == "1280x720 yuv422"

    assert wait_for(recovered, timeout=10), camera_values(probe, RAW)
    values = camera_values(probe, RAW)[2]
    assert values["stream_changes"] == "1" and values["gaps"] == "1" and values["publishers"] == "1"
    assert float(values["longest_gap_s"]) >= 1.0
    assert float(values["last_frame_age_s"]) < 1.0
    probe.destroy_publisher(pub)

    # Then JPEG: CompressedImage is another type, so the camera's /compressed topic.
    jpeg = probe.camera_publisher(CompressedImage, JPEG)
    assert wait_matched(node, jpeg)
    assert frames_until_result(probe, jpeg, JPEG, lambda h: compressed_msg(hd, h), 200) <= 2
    assert wait_for(lambda: (camera_values(probe, JPEG) or (0, "", {}))[2].get("stream") == "jpeg")

    # One node all along: no worker error, every frame accounted for.
    assert node.worker_errors.count == 0, node.worker_errors.last
    for cam in node.cameras:
        assert cam.received == cam.processed + cam.dropped + cam.bad + cam.skipped_period + cam.failed
        assert cam.bad == (1 if cam.topic == RAW else 0)  # the one malformed frame
