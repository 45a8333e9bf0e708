"""One deadline for a run of waits, with one timer.

The model path waits for the engine once per item, and each wait must end
at the slate's budget. ``asyncio.timeout_at`` around each wait arms and
disarms a timer per item, between two engine steps, where the server's
work slows the engine's next step. ``Deadline`` arms its timer once; a wait
costs two attribute writes. Measured in the server, its work on a K=10
slate's engine outputs went from 855 to 650 us (docs/BENCHMARKS.md,
2026-12-03, ninth session).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeVar

T = TypeVar("T")


class Deadline:
    """``await deadline.next(iterator)`` is ``anext(iterator)`` bounded by
    ``when`` (a loop time): TimeoutError once it has passed, as
    ``asyncio.timeout_at`` raises, and only while a wait is under way, so
    the caller's own awaits between waits are never cancelled by it.

    Use it from one task; ``close()`` disarms the timer."""

    def __init__(self, when: float) -> None:
        self._task = asyncio.current_task()
        self._waiting = False
        self.expired = False
        self._handle = asyncio.get_running_loop().call_at(when, self._expire)

    def _expire(self) -> None:
        self.expired = True
        if self._waiting:
            self._task.cancel()

    async def next(self, iterator: AsyncIterator[T]) -> T:
        if self.expired:
            raise TimeoutError
        cancelling = self._task.cancelling()
        self._waiting = True
        try:
            return await anext(iterator)
        except asyncio.CancelledError:
            # Our cancel, not the caller's: become a timeout (as
            # asyncio.Timeout decides, by the task's cancel count).
            if self.expired and self._task.uncancel() <= cancelling:
                raise TimeoutError from None
            raise
        finally:
            self._waiting = False

    def close(self) -> None:
        self._handle.cancel()
