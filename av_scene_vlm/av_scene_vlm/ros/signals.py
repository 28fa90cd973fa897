"""SIGINT and SIGTERM at any moment: the nodes' own policy, installed before anything heavy is imported.

Why: a supervisor or a person stops a node whenever it suits them — while Python imports torch, while
a multi-GB model loads, during a batch, a caption or the captioner's compilation. Python's default
turns SIGINT into a KeyboardInterrupt traceback wherever it lands, and rclpy's handler only acts once
the executor spins. So the console scripts (`ros2 run av_scene_vlm clip_node`, launch files) enter
here first and one policy holds from the first line on:

- while starting (imports, rclpy.init, configure with its model load): the first signal raises
  `Interrupted` in the main thread, which unwinds the start-up; the node entry returns 0;
- while running: the first signal only asks the spin loop to stop; it shuts the nodes down, waiting at
  most `WORKER_WAIT_S` for model work in progress, then ends the process (see `node_utils.run_nodes`);
- from the first signal on, further ones are ignored (`ros2 launch` sends SIGINT after the terminal's
  own, then SIGTERM): one clean shutdown, no second traceback.

Exit code 0 for both signals: rclpy's own convention for a node stopped by SIGINT or SIGTERM, which
`ros2 launch` reports as "process has finished cleanly" and systemd as a success. Imports only the
standard library.
"""

from __future__ import annotations

import importlib
import signal
import threading
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)
WORKER_WAIT_S = 2.0  # longest wait for model work in progress once a signal came


class Interrupted(BaseException):
    """A signal arrived while the node was starting (BaseException: no `except Exception` keeps it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class StopOnSignal:
    """The process's SIGINT/SIGTERM policy (see the module docstring); one per process."""

    def __init__(self) -> None:
        self.signum: int | None = None  # the first signal received
        self.stopping = threading.Event()
        self._raise = True  # starting: raise Interrupted; running: only set `stopping`
        self.installed = False

    def install(self) -> bool:
        """Take over SIGINT and SIGTERM (main thread only); False where it cannot (another thread)."""
        if self.installed:
            return True
        if threading.current_thread() is not threading.main_thread():
            return False
        for signum in SIGNALS:
            signal.signal(signum, self._handle)
        self.installed = True
        return True

    def running(self) -> None:
        """Start-up is over: from now on a signal asks the spin loop to stop instead of raising."""
        self._raise = False

    def ignore(self) -> None:
        """Shutting down: no signal may interrupt the clean-up."""
        if self.installed:
            for signum in SIGNALS:
                signal.signal(signum, signal.SIG_IGN)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            return  # the second signal of one stop (terminal, then launch)
        self.signum = signum
        self.stopping.set()
        if self._raise:
            raise Interrupted(signum)


POLICY = StopOnSignal()


def run_entry(module: str, function: str = "main") -> int:
    """Install the policy, then import `module` and call its `function` (a node's `main`)."""
    POLICY.install()
    try:
        return int(getattr(importlib.import_module(module), function)() or 0)
    except Interrupted:
        return 0


# Console script -> the node module it runs (setup.py points the scripts at the functions below).
NODE_MODULES = {name: f"av_scene_vlm.ros.{name}" for name in ("clip_node", "caption_node", "scene_vlm")}


def clip_node() -> int:
    """Console script `clip_node`."""
    return run_entry(NODE_MODULES["clip_node"])


def caption_node() -> int:
    """Console script `caption_node`."""
    return run_entry(NODE_MODULES["caption_node"])


def scene_vlm() -> int:
    """Console script `scene_vlm`."""
    return run_entry(NODE_MODULES["scene_vlm"])
