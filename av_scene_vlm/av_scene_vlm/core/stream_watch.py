"""`StreamWatch`: what one camera is sending and the gaps in it, for /diagnostics.

Why: a camera driver that restarts disappears for a while and comes back, often with another
resolution or encoding; the node must carry on without a restart, and whoever watches /diagnostics
must see the silence, how long it lasted and what the new stream is. Monotonic time only: a clock
stepped by the system or a looping bag's /clock never makes a gap negative. ROS-free.
"""

from __future__ import annotations

import time


class StreamWatch:
    """One camera's stream (size, encoding), how often it changed, the age of its newest frame, its
    longest silence and how many silences it had. Fed with monotonic times by the subscription."""

    MIN_SILENCE_S = 1.0  # silent for longer than max(this, 5 usual intervals): WARN

    def __init__(self) -> None:
        self.description = ""  # e.g. "1280x720 yuv422"
        self.changes = 0  # times the description changed after the first frame
        self.longest_gap_s = 0.0
        self.gaps = 0  # silences longer than the WARN threshold that ended with a frame
        self._last: float | None = None
        self._interval = 0.0  # moving average of the time between frames

    def frame(self, now: float, description: str | None = None) -> None:
        """A frame arrived at `now` (monotonic); `description`: its stream, for a valid frame
        (or later, through `describe`, once it is known to be valid)."""
        if self._last is not None:
            gap = now - self._last
            if gap > self.silence_s():
                self.gaps += 1  # an outage: not part of the camera's usual interval
            elif self._interval == 0.0:
                self._interval = gap
            else:
                self._interval = 0.9 * self._interval + 0.1 * gap
            self.longest_gap_s = max(self.longest_gap_s, gap)
        self._last = now
        if description is not None:
            self.describe(description)

    def describe(self, description: str) -> None:
        """The stream a valid frame belongs to, e.g. "1280x720 yuv422"; a new one counts as a change."""
        if description != self.description:
            self.changes += int(bool(self.description))
            self.description = description

    def silence_s(self) -> float:
        """How long without a frame counts as the camera being gone."""
        return max(self.MIN_SILENCE_S, 5.0 * self._interval)

    def age(self, now: float | None = None) -> float | None:
        """Seconds since the newest frame; None before the first."""
        if self._last is None:
            return None
        return max(0.0, (time.monotonic() if now is None else now) - self._last)

    def silent(self, now: float | None = None) -> bool:
        age = self.age(now)
        return age is not None and age > self.silence_s()
