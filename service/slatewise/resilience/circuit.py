"""Circuit breaker for the model path.

After ``threshold`` consecutive failures (engine errors, or timeouts where the
model committed nothing) the circuit opens and requests skip the model for
``cooldown`` seconds, so a sick engine costs callers nothing. Then one probe
request is let through (half-open): success closes the circuit, failure
opens it again.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class CircuitState(enum.Enum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


class CircuitBreaker:
    def __init__(self, threshold: int, cooldown: float,
                 clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[CircuitState], None] | None = None) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self.on_change = on_change
        self.state = CircuitState.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.probing = False

    def _set(self, state: CircuitState) -> None:
        if state is not self.state:
            self.state = state
            if self.on_change:
                self.on_change(state)

    def allow(self) -> bool:
        """Whether this request may use the model (claims the probe if half-open)."""
        if self.state is CircuitState.OPEN and self.clock() - self.opened_at >= self.cooldown:
            self._set(CircuitState.HALF_OPEN)
            self.probing = False
        if self.state is CircuitState.CLOSED:
            return True
        if self.state is CircuitState.HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def record_success(self) -> None:
        self.failures = 0
        self.probing = False
        self._set(CircuitState.CLOSED)

    def record_failure(self) -> None:
        self.failures += 1
        if self.state is CircuitState.HALF_OPEN or self.failures >= self.threshold:
            self.opened_at = self.clock()
            self.probing = False
            self._set(CircuitState.OPEN)

    def record_neutral(self) -> None:
        """A probe that proved nothing (e.g. cut short by its own deadline)."""
        self.probing = False

    def reset(self) -> None:
        """A rebuilt engine starts with a clean record."""
        self.failures = 0
        self.probing = False
        self._set(CircuitState.CLOSED)
