"""A small AskScene client for programs that ask from a thread of their own (tests, benchmarks, tools).

Why: rclpy's ActionClient hands back futures whose callbacks run on the executor; a caller that waits
on another thread needs the goal's whole story in one place — accepted or not, each feedback with the
time it came, the final status and result — without spinning the node itself.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from action_msgs.msg import GoalStatus
from rclpy.action import ActionClient
from rclpy.node import Node

from av_scene_vlm_msgs.action import AskScene

STATUS_NAMES = {
    GoalStatus.STATUS_SUCCEEDED: "SUCCEEDED",
    GoalStatus.STATUS_CANCELED: "CANCELED",
    GoalStatus.STATUS_ABORTED: "ABORTED",
}


@dataclass
class PendingAsk:
    """One goal sent: filled in by the executor's callbacks; wait with `wait_accepted`/`wait`."""

    sent: float  # monotonic
    accepted: bool | None = None  # None until the server answered
    status: int = GoalStatus.STATUS_UNKNOWN
    result: Any = None  # AskScene.Result
    feedback: list[tuple[float, str, int]] = field(default_factory=list)  # (s after sending, text, tokens)
    done_at: float | None = None  # monotonic, result (or rejection) received
    goal_handle: Any = None
    _responded: threading.Event = field(default_factory=threading.Event)
    _done: threading.Event = field(default_factory=threading.Event)

    @property
    def status_name(self) -> str:
        if self.accepted is False:
            return "REJECTED"
        return STATUS_NAMES.get(self.status, str(self.status))

    def wait_accepted(self, timeout: float = 30.0) -> bool | None:
        """True/False once the server accepted/rejected the goal; None on timeout."""
        self._responded.wait(timeout)
        return self.accepted

    def wait(self, timeout: float = 60.0) -> bool:
        """True once the goal ended (result received, or rejected)."""
        return self._done.wait(timeout)

    def cancel(self) -> None:
        """Ask the server to cancel the goal (after it was accepted)."""
        if self.goal_handle is not None:
            self.goal_handle.cancel_goal_async()

    # executor callbacks
    def _on_feedback(self, msg: Any) -> None:
        fb = msg.feedback
        self.feedback.append((time.monotonic() - self.sent, fb.partial_answer, fb.num_tokens))

    def _on_response(self, future: Any) -> None:
        handle = future.result()
        self.goal_handle, self.accepted = handle, bool(handle.accepted)
        self._responded.set()
        if not handle.accepted:
            self.done_at = time.monotonic()
            self._done.set()
            return
        handle.get_result_async().add_done_callback(self._on_result)

    def _on_result(self, future: Any) -> None:
        response = future.result()
        self.status, self.result = response.status, response.result
        self.done_at = time.monotonic()
        self._done.set()


class AskClient:
    """Sends AskScene goals to `action` (e.g. '/caption_node/ask_scene') from any thread while
    `node` is spun elsewhere."""

    def __init__(self, node: Node, action: str = "/caption_node/ask_scene") -> None:
        self.client = ActionClient(node, AskScene, action)

    def wait_for_server(self, timeout: float = 30.0) -> bool:
        return self.client.wait_for_server(timeout_sec=timeout)

    def send(
        self, question: str, camera: str = "", max_new_tokens: int = 0, max_frame_age: float = 0.0
    ) -> PendingAsk:
        """Send one goal; returns at once."""
        pending = PendingAsk(sent=time.monotonic())
        goal = AskScene.Goal(
            camera=camera, question=question, max_new_tokens=max_new_tokens, max_frame_age=max_frame_age
        )
        future = self.client.send_goal_async(goal, feedback_callback=pending._on_feedback)
        future.add_done_callback(pending._on_response)
        return pending
