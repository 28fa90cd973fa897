"""How many frames a worker's next batch may take, after failures.

Why: a batch that ran the GPU out of memory (or failed any other way) would fail again at the same
size, and a vehicle needs its frames classified one at a time rather than not at all. So a failed
batch halves the size of the next ones; as memory pressure from other processes is often
transient, the size doubles back after a run of clean batches, up to the configured maximum.
"""

from __future__ import annotations


class BatchLimit:
    """`size(maximum)` for the next batch; `failed(attempted)` / `succeeded(maximum)` after one."""

    def __init__(self, recover_after: int = 50) -> None:
        if recover_after < 1:
            raise ValueError(f"recover_after must be >= 1, got {recover_after}")
        self.recover_after = recover_after
        self.limit: int | None = None  # None: the configured maximum
        self.failures = 0  # batches that failed, in all
        self._streak = 0

    def size(self, maximum: int) -> int:
        """Frames the next batch may take (1..maximum)."""
        return max(1, maximum if self.limit is None else min(self.limit, maximum))

    @property
    def reduced(self) -> bool:
        """True while batches are held below the configured maximum."""
        return self.limit is not None

    def failed(self, attempted: int) -> None:
        """A batch of `attempted` frames failed: the next ones take at most half as many (a failed
        single frame sets no limit of its own: there is nothing to halve)."""
        self.failures += 1
        self._streak = 0
        if attempted > 1 or self.limit is not None:
            self.limit = max(1, attempted // 2)

    def succeeded(self, maximum: int) -> None:
        """A batch went through: after `recover_after` in a row the limit doubles (gone at `maximum`)."""
        if self.limit is None:
            return
        self._streak += 1
        if self._streak >= self.recover_after:
            self._streak = 0
            self.limit *= 2
            if self.limit >= maximum:
                self.limit = None
