"""Counting what is in flight, so overload is a decision rather than a queue."""

from __future__ import annotations


class InflightLimit:
    """A non-blocking counter: acquire() says no instead of waiting."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inflight = 0

    def try_acquire(self) -> bool:
        if self.inflight >= self.limit:
            return False
        self.inflight += 1
        return True

    def release(self) -> None:
        self.inflight = max(0, self.inflight - 1)
