"""Which frames get a caption: one per camera every `period` seconds of bag time (the node's rule)."""

from __future__ import annotations


class CaptionSchedule:
    """Per-camera caption clock on bag time; `period <= 0` captions every frame."""

    def __init__(self, period: float) -> None:
        self.period_ns = round(max(0.0, float(period)) * 1e9)
        self._last: dict[str, int] = {}

    def due(self, camera: str, bag_time: int) -> bool:
        """True (and the clock restarts) when `camera`'s frame at `bag_time` is to be captioned."""
        last = self._last.get(camera)
        if last is None or bag_time - last >= self.period_ns:
            self._last[camera] = bag_time
            return True
        return False
