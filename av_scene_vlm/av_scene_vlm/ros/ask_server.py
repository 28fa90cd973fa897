"""The AskScene action of caption_node (and scene_vlm): `<node>/ask_scene`.

A question about one camera's newest frame is answered by the node's own captioner on its own worker
thread, so one `generate` runs at a time on the device and questions go before periodic captions (the
worker takes a waiting question before each caption step; a question waits for at most the caption
in progress). The answer is streamed as feedback (the whole text so far, after each token) and, once
answered, published on `<ns>/answer` (SceneAnswer) so a recorded drive keeps it.

Threads: goal, cancel and execute callbacks run on the executor and stay O(1): `execute` snapshots the
camera's newest frame, queues the goal and awaits an rclpy Future that the worker completes (a guard
condition wakes the executor), then sets the goal's final state. Feedback is published from the
worker thread. ROS 2 goal responses carry no reason, so a rejected goal's reason goes to the log
(throttled) and to /diagnostics (`ask_last_rejection`); an aborted goal's is in its result.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.task import Future

from av_scene_vlm.core.ask_limits import check_question
from av_scene_vlm.ros.camera_input import Camera, Percentiles
from av_scene_vlm.ros.conversions import image_to_rgb
from av_scene_vlm_msgs.action import AskScene
from av_scene_vlm_msgs.msg import SceneAnswer

ACTION_NAME = "~/ask_scene"
SUCCEEDED, CANCELED, ABORTED = "succeeded", "canceled", "aborted"


@dataclass
class AskJob:
    """One accepted goal: what to answer, and how it ended (set once, by `AskServer._end`)."""

    goal: Any  # ServerGoalHandle
    camera: Camera | None
    question: str
    max_new_tokens: int
    frame: Any  # the camera's newest message when the goal was accepted
    accepted: float  # monotonic
    done: Future = field(default_factory=Future)
    cancel: threading.Event = field(default_factory=threading.Event)
    outcome: str = ""
    answer: str = ""
    num_tokens: int = 0
    reason: str = ""


@dataclass
class AskStats:
    """What /diagnostics says about questions (node lifetime)."""

    received: int = 0
    answered: int = 0
    rejected: int = 0
    cancelled: int = 0
    aborted: int = 0
    last_rejection: str = ""
    last_error: str = ""
    latency: Percentiles = field(default_factory=Percentiles)  # acceptance -> result
    first_token: Percentiles = field(default_factory=Percentiles)  # acceptance -> first feedback


def find_camera(cameras: list[Camera], name: str) -> Camera:
    """The camera a goal names by image topic or output namespace ('' = the only one); ValueError
    naming the node's cameras otherwise."""
    listed = ", ".join(f"{c.topic} ({c.namespace})" for c in cameras)
    want = (name or "").strip()
    if not want:
        if len(cameras) == 1:
            return cameras[0]
        raise ValueError(f"the goal names no camera and this node has {len(cameras)}: {listed}")
    want = "/" + want.strip("/")
    for cam in cameras:
        if want in ("/" + cam.topic.strip("/"), "/" + cam.namespace.strip("/")):
            return cam
    raise ValueError(f"unknown camera '{name}'; this node's cameras: {listed}")


class AskServer:
    """Queue, statistics and action server of a node's questions; see the module docstring.

    `node`: a WorkerNode with a captioner (`state`, `settings`, `cameras`, `inputs`, `_pubs`)."""

    def __init__(self) -> None:
        self.stats = AskStats()
        self._queue: deque[AskJob] = deque()
        self._reserved = 0  # accepted goals whose execute has not queued them yet
        self._open = 0  # execute callbacks not yet returned (results still to send)
        self._running: AskJob | None = None
        self._lock = threading.Lock()
        self._node: Any = None
        self._server: ActionServer | None = None
        self._wake: Any = None

    def serve(self, node: Any) -> None:
        """Create the action server (after the node is built; goals come from then on)."""
        self._node = node
        self._wake = node.create_guard_condition(lambda: None)
        self._server = ActionServer(
            node,
            AskScene,
            ACTION_NAME,
            execute_callback=self._execute,
            goal_callback=self._on_goal,
            cancel_callback=self._on_cancel,
        )

    def destroy(self) -> None:
        """Destroy the action server (before the node): it holds the node's handle, which would
        otherwise outlive destroy_node and keep the node's endpoints in the graph after exit."""
        if self._server is not None:
            self._server.destroy()
            self._server = None

    @property
    def depth(self) -> int:
        """Goals waiting for the model (not the one being answered)."""
        with self._lock:
            return len(self._queue) + self._reserved

    def replies_pending(self) -> bool:
        """Goals whose result the executor has yet to send (spin a little more before exiting)."""
        return self._open > 0

    # ---- executor callbacks ---------------------------------------------------------------------
    def _reject(self, reason: str) -> GoalResponse:
        self.stats.rejected += 1
        self.stats.last_rejection = reason
        self._node.get_logger().warning(f"ask_scene goal rejected: {reason}", throttle_duration_sec=1.0)
        return GoalResponse.REJECT

    def _on_goal(self, goal: AskScene.Goal) -> GoalResponse:
        self.stats.received += 1
        node, s = self._node, self._node.settings
        if node.state != "active" or s is None:
            return self._reject(f"the node is {node.state}, not active")
        try:
            question = check_question(goal.question, s.ask_max_question_chars)
            captioner = getattr(node, "captioner", None)
            if captioner is not None:  # the compiled decoder's prompt-token budget: never a recompile
                captioner.check_prompt(question)
        except ValueError as exc:
            return self._reject(str(exc))
        if goal.max_new_tokens > s.ask_max_new_tokens:
            return self._reject(
                f"max_new_tokens {goal.max_new_tokens} is over the node's ask_max_new_tokens "
                f"({s.ask_max_new_tokens})"
            )
        if not goal.max_frame_age >= 0:
            return self._reject(f"max_frame_age must be >= 0 s, got {goal.max_frame_age:g}")
        with self._lock:
            if len(self._queue) + self._reserved >= s.ask_queue_size:
                full = True
            else:
                full, self._reserved = False, self._reserved + 1
        if full:
            return self._reject(f"the question queue is full (ask_queue_size {s.ask_queue_size})")
        return GoalResponse.ACCEPT

    def _on_cancel(self, goal: Any) -> CancelResponse:
        with self._lock:
            job = next((j for j in self._queue if j.goal is goal), None)
            if job is not None:
                self._queue.remove(job)  # never runs
            elif self._running is not None and self._running.goal is goal:
                self._running.cancel.set()  # the worker stops within one token
        if job is not None:
            self._end(job, CANCELED)
        return CancelResponse.ACCEPT

    async def _execute(self, goal: Any) -> AskScene.Result:
        self._open += 1
        try:
            job = self._queued(goal)
            if not job.outcome:
                await job.done
            return self._finish(goal, job)
        finally:
            self._open -= 1

    def _queued(self, goal: Any) -> AskJob:
        """Snapshot the camera's newest frame and queue the goal, or end it at once (the job then
        has its outcome: aborted with the reason, or cancelled)."""
        node, req, now = self._node, goal.request, time.monotonic()
        with self._lock:
            self._reserved = max(0, self._reserved - 1)
        s = node.settings
        job = AskJob(goal, None, req.question.strip(), 0, None, now)  # type: ignore[arg-type]
        try:
            if s is None or node.state != "active":
                raise ValueError(f"the node is {node.state}, not active")
            cam = find_camera(node.cameras, req.camera)
            latest = cam.latest
            max_age = req.max_frame_age or s.ask_max_frame_age
            if latest is None:
                raise ValueError(f"no frame from camera {cam.topic} yet")
            if now - latest[1] > max_age:
                raise ValueError(
                    f"the newest frame of camera {cam.topic} is {now - latest[1]:.2f} s old, over "
                    f"max_frame_age {max_age:g} s"
                )
        except ValueError as exc:
            self._record(job, ABORTED, reason=str(exc))
            return job
        if goal.is_cancel_requested:
            self._record(job, CANCELED)
            return job
        job.camera, job.frame = cam, latest[0]
        job.max_new_tokens = req.max_new_tokens or s.ask_max_new_tokens
        with self._lock:
            self._queue.append(job)
        if node.inputs is not None:
            node.inputs.wake()  # the worker may be waiting for frames
        return job

    def _finish(self, goal: Any, job: AskJob) -> AskScene.Result:
        """Set the goal's final state (executor thread) and publish a successful answer."""
        result = AskScene.Result(
            answer=job.answer,
            num_tokens=job.num_tokens,
            latency=time.monotonic() - job.accepted,
            model_id=self._model_id(),
            reason=job.reason,
        )
        if job.frame is not None:
            result.header = job.frame.header
        if job.outcome == SUCCEEDED:
            self.stats.latency.add(result.latency)
            pubs = self._node._pubs.get(job.camera.topic, {}) if job.camera is not None else {}
            if "answer" in pubs:
                pubs["answer"].publish(
                    SceneAnswer(
                        header=result.header,
                        question=job.question,
                        answer=job.answer,
                        model_id=result.model_id,
                        latency=result.latency,
                        num_tokens=job.num_tokens,
                    )
                )
            goal.succeed()
        elif job.outcome == CANCELED and goal.is_cancel_requested:
            goal.canceled()
        else:
            goal.abort()
        return result

    def _model_id(self) -> str:
        captioner = getattr(self._node, "captioner", None)
        return captioner.model_id if captioner is not None else ""

    # ---- outcomes -------------------------------------------------------------------------------
    def _record(self, job: AskJob, outcome: str, reason: str = "") -> None:
        """Set and count a job's outcome."""
        job.outcome, job.reason = outcome, reason
        if outcome == CANCELED:
            self.stats.cancelled += 1
        elif outcome == ABORTED:
            self.stats.aborted += 1
            if reason:
                self._node.get_logger().warning(
                    f"ask_scene goal aborted: {reason}", throttle_duration_sec=1.0
                )
        else:
            self.stats.answered += 1

    def _end(self, job: AskJob, outcome: str, reason: str = "") -> None:
        """A queued or running job ended (any thread): count it and wake its execute callback."""
        self._record(job, outcome, reason)
        job.done.set_result(outcome)
        self._wake.trigger()

    def abort_all(self, reason: str) -> None:
        """End every waiting goal (deactivate, shutdown); a running one stops with the worker."""
        with self._lock:
            jobs, self._queue = list(self._queue), deque()
        for job in jobs:
            self._end(job, ABORTED, reason)

    # ---- worker thread --------------------------------------------------------------------------
    def next_job(self) -> AskJob | None:
        """The oldest waiting goal, now running; None when no question waits."""
        with self._lock:
            self._running = self._queue.popleft() if self._queue else None
            return self._running

    def answer(self, job: AskJob, captioner: Any, settings: Any, stopping: Callable[[], bool]) -> None:
        """Answer `job` on the worker thread, streaming feedback; every outcome ends the goal.
        `stopping()`: the node is stopping (deactivate, shutdown) — the goal is aborted."""
        try:
            rgb = image_to_rgb(
                job.frame, use_cv_bridge=settings.use_cv_bridge, max_pixels=settings.inputs.max_frame_pixels
            )

            def feedback(text: str, tokens: int) -> None:
                if job.num_tokens == 0:
                    self.stats.first_token.add(time.monotonic() - job.accepted)
                job.answer, job.num_tokens = text, tokens
                job.goal.publish_feedback(AskScene.Feedback(partial_answer=text, num_tokens=tokens))

            result = captioner.ask(
                rgb,
                job.question,
                max_new_tokens=job.max_new_tokens,
                on_text=feedback,
                should_stop=lambda: job.cancel.is_set() or stopping(),
                max_question_chars=settings.ask_max_question_chars,
            )
        except Exception as exc:
            line = (str(exc).strip().splitlines() or [""])[0]
            self.stats.last_error = f"{type(exc).__name__}: {line}"[:300]
            self._end(job, ABORTED, f"answering failed: {type(exc).__name__}: {line}")
            raise
        finally:
            with self._lock:
                self._running = None
        job.answer, job.num_tokens = result.answer, result.num_tokens
        if job.cancel.is_set():
            self._end(job, CANCELED)
        elif result.stopped:
            self._end(job, ABORTED, "the node stopped while answering (deactivate or shutdown)")
        else:
            self._end(job, SUCCEEDED)

    def values(self) -> dict[str, object]:
        """/diagnostics values."""
        st = self.stats
        return {
            "asks_received": st.received,
            "asks_answered": st.answered,
            "asks_rejected": st.rejected,
            "asks_cancelled": st.cancelled,
            "asks_aborted": st.aborted,
            "ask_queue_depth": self.depth,
            "ask_latency_p50_ms": f"{st.latency.get(0.5) * 1e3:.1f}",
            "ask_latency_p95_ms": f"{st.latency.get(0.95) * 1e3:.1f}",
            "ask_first_token_p50_ms": f"{st.first_token.get(0.5) * 1e3:.1f}",
            "ask_last_rejection": st.last_rejection,
            "ask_last_error": st.last_error,
        }
