"""Camera subscriptions with newest-frame slots, shared by the classifier and the captioner.

Why: the executor callback must stay O(1) — it only swaps the newest message into the camera's slot
and wakes the worker. A frame overwritten before the worker took it is counted as dropped, so the node
never falls behind the cameras and never processes stale frames. A frame whose size fields or
compressed header claim more than `max_frame_pixels`, or more bytes than it carries, is counted as bad
right there (O(1), or a header read): a flood of hostile frames never takes a camera's slot from a
valid frame and never reaches a decoder.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from av_scene_vlm.core.image_codec import DEFAULT_MAX_FRAME_PIXELS, ImageDecodeError
from av_scene_vlm.core.naming import output_namespace
from av_scene_vlm.core.stream_watch import StreamWatch
from av_scene_vlm.ros.conversions import check_frame

RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
INPUT_TYPES = ("auto", "raw", "compressed")
BAD_FRAME_WARN_PERIOD_S = 5.0  # at most one bad-frame warning per camera in this time


class RateMeter:
    """Events per second over a sliding window (input rate, processed fps)."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._times: deque[float] = deque(maxlen=10000)

    def tick(self, now: float | None = None) -> None:
        self._times.append(time.monotonic() if now is None else now)

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()
        if len(self._times) < 2:
            return 0.0
        span = max(now - self._times[0], 1e-6)
        return len(self._times) / span


class Percentiles:
    """p50/p95 of the last N samples (latencies in seconds)."""

    def __init__(self, size: int = 300) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self._values.append(value)

    def get(self, q: float) -> float:
        if not self._values:
            return 0.0
        values = sorted(self._values)
        return values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))]

    def __len__(self) -> int:
        return len(self._values)


@dataclass
class Camera:
    """One input topic: its newest-frame slot, its output namespace and its counters."""

    topic: str
    namespace: str
    compressed: bool
    received: int = 0
    dropped: int = 0
    bad: int = 0
    processed: int = 0
    skipped_period: int = 0
    failed: int = 0  # taken by the worker, lost to a model error (see failures_counted)
    stamp_ahead: int = 0  # results whose source stamp was ahead of the node clock (clock jumped back)
    stream: StreamWatch = field(default_factory=StreamWatch)
    input_rate: RateMeter = field(default_factory=RateMeter)
    output_rate: RateMeter = field(default_factory=RateMeter)
    latency: Percentiles = field(default_factory=Percentiles)  # source stamp -> publish
    node_latency: Percentiles = field(default_factory=Percentiles)  # receive -> publish
    slot_wait: Percentiles = field(default_factory=Percentiles)  # receive -> worker takes the frame
    overhead: Percentiles = field(default_factory=Percentiles)  # worker time minus engine time
    _slot: tuple[Image | CompressedImage, float] | None = None
    # The newest valid frame and its receipt (monotonic), kept after the worker took it: a question
    # (AskScene) is answered about the frame that was newest when its goal was accepted.
    latest: tuple[Image | CompressedImage, float] | None = None


def describe_stream(msg: Image | CompressedImage) -> str:
    """'1920x1080 bgr8' for a raw frame, 'jpeg' for a compressed one (its header is not read twice)."""
    if isinstance(msg, CompressedImage):
        return msg.format.split(";")[0].strip() or "compressed"
    return f"{msg.width}x{msg.height} {msg.encoding}"


@contextmanager
def failures_counted(cameras: Iterable[Camera]) -> Iterator[None]:
    """Count one failed frame per camera in `cameras` when the block raises, and re-raise.

    Why: the worker logs a model error and goes on, so without this the frames it was working on
    would vanish from the counters (received = processed + dropped + bad + skipped + failed).
    """
    cams = list(cameras)
    try:
        yield
    except Exception:
        for cam in cams:
            cam.failed += 1
        raise


def is_compressed_topic(topic: str, input_type: str) -> bool:
    """image_transport naming: '<topic>/compressed' carries CompressedImage."""
    if input_type == "compressed":
        return True
    if input_type == "raw":
        return False
    return topic.rstrip("/").endswith("/compressed")


def check_input_qos(reliability: str, depth: int) -> None:
    """The subscription QoS parameters: a known reliability and a queue of at least one frame."""
    if reliability not in RELIABILITY:
        raise ValueError(f"input_reliability must be one of {sorted(RELIABILITY)}, got {reliability!r}")
    if depth < 1:
        raise ValueError(f"input_depth must be >= 1, got {depth}")


def resolve_camera_topic(topic: str, resolve: Callable[[str], str]) -> str:
    """The full name of a camera topic as the node subscribes to it (namespace, `-r` remapping).

    image_transport's rule for `/compressed`: the base topic is resolved and the suffix appended, so
    `-r image_raw:=/cam9/image_raw` also moves `image_raw/compressed` to `/cam9/image_raw/compressed`.
    """
    name = topic.strip()
    if name.rstrip("/").endswith("/compressed") and name.rstrip("/") != "/compressed":
        base = name.rstrip("/")[: -len("/compressed")]
        return resolve(base).rstrip("/") + "/compressed"
    return resolve(name)


def plan_cameras(
    topics: Sequence[str],
    namespaces: Sequence[str],
    input_type: str,
    resolve: Callable[[str], str] | None = None,
) -> list[Camera]:
    """Validate topics and output namespaces; two cameras sharing a namespace is an error.

    `resolve` (a node's `resolve_topic_name`) turns relative names and remappings into the topic
    actually subscribed, so results go beside it: `image_raw` remapped to `/cam9/image_raw` gives
    `/cam9/scene/...`. Without it (validation before a node exists) names are taken as written."""
    if not topics:
        raise ValueError("image_topics is empty: give at least one camera topic")
    if input_type not in INPUT_TYPES:
        raise ValueError(f"input_type must be one of {INPUT_TYPES}, got {input_type!r}")
    if namespaces and len(namespaces) != len(topics):
        raise ValueError(
            f"output_namespaces has {len(namespaces)} entries but image_topics has {len(topics)}; "
            "give one namespace per camera or none"
        )
    if len(set(topics)) != len(topics):
        raise ValueError(f"image_topics lists a topic twice: {list(topics)}")
    cameras = []
    for i, topic in enumerate(topics):
        if not topic or not isinstance(topic, str):
            raise ValueError(f"invalid image topic {topic!r}")
        if resolve is not None:
            try:
                topic = resolve_camera_topic(topic, resolve)
            except Exception as exc:  # rclpy: an invalid name (InvalidTopicNameException, RCLError)
                raise ValueError(f"invalid image topic {topic!r}: {exc}") from None
        ns = namespaces[i] if namespaces and namespaces[i] else output_namespace(topic)
        cameras.append(
            Camera(
                topic=topic,
                namespace=ns.rstrip("/") or "/",
                compressed=is_compressed_topic(topic, input_type),
            )
        )
    seen: dict[str, str] = {}
    for cam in cameras:
        if cam.namespace in seen:
            raise ValueError(
                f"cameras '{seen[cam.namespace]}' and '{cam.topic}' both publish under '{cam.namespace}'; "
                "set output_namespaces to tell them apart"
            )
        seen[cam.namespace] = cam.topic
    return cameras


def output_topic(camera: Camera, name: str) -> str:
    """`<namespace>/<name>`, e.g. /front/scene + classification."""
    return f"{camera.namespace.rstrip('/')}/{name}"


class CameraInputs:
    """Subscribes to every camera; keeps the newest frame per camera for a worker thread."""

    def __init__(
        self,
        node: Node,
        cameras: Sequence[Camera],
        *,
        reliability: str = "best_effort",
        depth: int = 1,
        max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
    ) -> None:
        check_input_qos(reliability, depth)
        self._node = node
        self.cameras = list(cameras)
        self.max_frame_pixels = max_frame_pixels
        self._logger = node.get_logger()
        self._bad_warned: dict[str, tuple[float, int]] = {}  # topic -> (time of last warning, bad then)
        self._cond = threading.Condition()
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=RELIABILITY[reliability])
        self.subscriptions = [
            node.create_subscription(
                CompressedImage if cam.compressed else Image,
                cam.topic,
                lambda msg, cam=cam: self._on_frame(cam, msg),
                qos,
            )
            for cam in self.cameras
        ]

    def _on_frame(self, cam: Camera, msg: Image | CompressedImage) -> None:
        now = time.monotonic()
        try:
            check_frame(msg, self.max_frame_pixels)
        except ImageDecodeError as exc:
            with self._cond:
                cam.received += 1
                cam.input_rate.tick(now)
                cam.stream.frame(now)
            self.reject(cam, exc)
            return
        with self._cond:
            cam.received += 1
            cam.input_rate.tick(now)
            cam.stream.frame(now)  # its stream is named once it decoded: see `decoded`
            if cam._slot is not None:
                cam.dropped += 1  # overwritten before the worker took it
            cam._slot = cam.latest = (msg, now)
            self._cond.notify()

    def decoded(self, cam: Camera, msg: Image | CompressedImage) -> None:
        """The worker decoded `msg`: its stream (size, encoding) is the camera's stream now.

        Why here and not on arrival: a malformed frame that passes the O(1) checks (an odd-width
        yuv422, rows shorter than the width) would otherwise count as a stream change, twice."""
        with self._cond:
            cam.stream.describe(describe_stream(msg))

    def reject(self, cam: Camera, reason: Exception | str) -> None:
        """Count a bad frame of `cam` (callback or worker thread) and warn at most once per
        BAD_FRAME_WARN_PERIOD_S per camera, saying how many were rejected since the last warning."""
        now = time.monotonic()
        with self._cond:
            cam.bad += 1
            bad = cam.bad
            last, bad_then = self._bad_warned.get(cam.topic, (-1e18, 0))
            if now - last < BAD_FRAME_WARN_PERIOD_S:
                return
            self._bad_warned[cam.topic] = (now, bad)
        since = "" if bad_then == 0 else f", {bad - bad_then} since the last warning"
        self._logger.warning(f"skipping bad frame on {cam.topic} ({bad} so far{since}): {reason}")

    def take(self, max_frames: int, timeout: float) -> list[tuple[Camera, Image | CompressedImage, float]]:
        """Wait up to `timeout` for frames; return the newest frame of up to `max_frames` cameras."""
        with self._cond:
            if not any(c._slot is not None for c in self.cameras):
                self._cond.wait(timeout)
            out = []
            for cam in self.cameras:
                if cam._slot is not None and len(out) < max_frames:
                    out.append((cam, *cam._slot))
                    cam._slot = None
            # Rotate so that with more cameras than max_frames every camera gets its turn.
            if out and len(self.cameras) > max_frames:
                taken = {id(c) for c, _, _ in out}
                self.cameras = [c for c in self.cameras if id(c) not in taken] + [c for c, _, _ in out]
            return out

    def wake(self) -> None:
        """Wake a waiting worker (shutdown)."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """Unsubscribe from every camera (deactivate), drop the frames waiting and wake the worker."""
        for sub in self.subscriptions:
            self._node.destroy_subscription(sub)
        self.subscriptions = []
        with self._cond:
            for cam in self.cameras:
                if cam._slot is not None:
                    cam.dropped += 1  # received, never to be processed
                    cam._slot = None
                cam.latest = None
            self._cond.notify_all()
