"""What both nodes put on /diagnostics besides their own values: one status per camera (counters,
rates, latencies) and the count of the model worker's exceptions."""

from __future__ import annotations

import threading

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from av_scene_vlm.ros.camera_input import Camera


def kv(**values: object) -> list[KeyValue]:
    """Diagnostic key/values, every value as a string."""
    return [KeyValue(key=k, value=str(v)) for k, v in values.items()]


def camera_status(node_name: str, cam: Camera, **extra: object) -> DiagnosticStatus:
    """The per-camera diagnostic both nodes publish: counters, rates and latencies, plus `extra`."""
    level, message = DiagnosticStatus.OK, "ok"
    if cam.received == 0:
        level, message = DiagnosticStatus.WARN, "no frames received"
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
