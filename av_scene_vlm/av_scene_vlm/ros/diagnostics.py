"""What both nodes put on /diagnostics besides their own values: one status per camera (counters,
rates, latencies) and the count of the model worker's exceptions."""

from __future__ import annotations

import threading
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from av_scene_vlm.ros.camera_input import Camera


def kv(**values: object) -> list[KeyValue]:
    """Diagnostic key/values, every value as a string."""
    return [KeyValue(key=k, value=str(v)) for k, v in values.items()]


def camera_status(
    node_name: str, cam: Camera, publishers: int | None = None, **extra: object
) -> DiagnosticStatus:
    """The per-camera diagnostic both nodes publish: counters, rates, latencies and the stream (what
    the camera sends, its silences, its publishers: a camera restart shows here), plus `extra`."""
    level, message = DiagnosticStatus.OK, "ok"
    stream, age = cam.stream, cam.stream.age()
    seen = "?" if publishers is None else str(publishers)
    if cam.received == 0:
        level, message = DiagnosticStatus.WARN, f"no frames received ({seen} publishers)"
    elif stream.silent():
        level, message = DiagnosticStatus.WARN, f"no frames for {age:.1f} s ({seen} publishers)"
    elif cam.bad and cam.bad >= cam.processed:
        level, message = DiagnosticStatus.WARN, "most frames are malformed"
    return DiagnosticStatus(
        level=level,
        name=f"{node_name}: {cam.topic}",
        hardware_id=cam.topic,
        message=message,
        values=kv(
            input_rate_hz=f"{cam.input_rate.rate():.2f}",
            processed_fps=f"{cam.output_rate.rate():.2f}",
            received=cam.received,
            processed=cam.processed,
            dropped=cam.dropped,
            bad_frames=cam.bad,
            skipped_by_period=cam.skipped_period,
            failed=cam.failed,
            latency_stamp_to_publish_p50_ms=f"{cam.latency.get(0.5) * 1e3:.2f}",
            latency_stamp_to_publish_p95_ms=f"{cam.latency.get(0.95) * 1e3:.2f}",
            latency_receive_to_publish_p50_ms=f"{cam.node_latency.get(0.5) * 1e3:.2f}",
            latency_receive_to_publish_p95_ms=f"{cam.node_latency.get(0.95) * 1e3:.2f}",
            stamp_ahead_of_clock=cam.stamp_ahead,
            stream=stream.description,
            stream_changes=stream.changes,
            last_frame_age_s="" if age is None else f"{age:.2f}",
            longest_gap_s=f"{stream.longest_gap_s:.2f}",
            gaps=stream.gaps,
            publishers=seen,
            **extra,
            output_namespace=cam.namespace,
        ),
    )


class WorkerErrors:
    """Exceptions of a node's model worker, counted for /diagnostics.

    Why: the worker logs an exception and goes on (a transient CUDA error must not kill it), so
    without a count a node whose inference fails on every frame would still report itself healthy.
    """

    def __init__(self) -> None:
        self.count = 0
        self.last = ""
        self._reported = 0
        self._lock = threading.Lock()

    def record(self, exc: BaseException) -> None:
        with self._lock:
            self.count += 1
            self.last = f"{type(exc).__name__}: {exc}"[:300]

    def escalate(self, level: int, message: str) -> tuple[int, str]:
        """ERROR (with the newest error) while errors keep coming in, i.e. any since the last call."""
        with self._lock:
            new, self._reported = self.count - self._reported, self.count
            last = self.last
        if new:
            return DiagnosticStatus.ERROR, f"{new} worker error(s) since the last report; last: {last}"
        return level, message


def node_diagnostics(node: Any) -> DiagnosticArray:
    """A WorkerNode's /diagnostics: its own status (with its lifecycle state; the node's `_status`
    values while configured, escalated by worker errors while active) and one status per camera
    while active."""
    arr = DiagnosticArray()
    arr.header.stamp = node.get_clock().now().to_msg()
    name = node.get_fully_qualified_name()
    state, settings = node.state, node.settings
    error = str(node.transition_error or "")
    if settings is None:
        level = DiagnosticStatus.ERROR if error else DiagnosticStatus.OK
        message = (
            f"{state}: configure failed: {error.splitlines()[0]}" if error else f"{state}: no model loaded"
        )
        status = DiagnosticStatus(level=level, name=f"{name}: {node.STATUS_NAME}", message=message)
        status.values = kv(lifecycle_state=state, last_transition_error=error)
        arr.status.append(status)
        return arr
    level, message, hardware_id, values = node._status(settings)
    if state == "active":
        level, message = node.worker_errors.escalate(level, message)
    else:
        message = f"{state}: not taking frames"
    arr.status.append(
        DiagnosticStatus(
            level=level,
            name=f"{name}: {node.STATUS_NAME}",
            hardware_id=hardware_id,
            message=message,
            values=kv(lifecycle_state=state, **values),
        )
    )
    if state == "active":
        for cam in node.cameras:
            publishers = node.count_publishers(cam.topic)
            arr.status.append(camera_status(name, cam, publishers, **node._camera_values(cam)))
    return arr
