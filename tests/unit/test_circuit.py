"""Circuit breaker state machine, on a fake clock."""

from __future__ import annotations

from slatewise.resilience.circuit import CircuitBreaker, CircuitState


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_opens_after_threshold_then_probes_once_and_closes_on_success():
    clock, changes = Clock(), []
    cb = CircuitBreaker(3, 10.0, clock=clock, on_change=changes.append)
    for _ in range(2):
        assert cb.allow()
        cb.record_failure()
    assert cb.state is CircuitState.CLOSED
    cb.record_failure()
    assert cb.state is CircuitState.OPEN and not cb.allow()
    clock.t = 9.9
    assert not cb.allow()
    clock.t = 10.0
    assert cb.allow()  # the probe
    assert cb.state is CircuitState.HALF_OPEN
    assert not cb.allow()  # only one probe at a time
    cb.record_success()
    assert cb.state is CircuitState.CLOSED and cb.allow()
    assert changes == [CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED]


def test_failed_probe_reopens_and_success_resets_the_count():
    clock = Clock()
    cb = CircuitBreaker(2, 5.0, clock=clock)
    cb.record_failure()
    cb.record_success()
    cb.record_failure()
    assert cb.state is CircuitState.CLOSED  # not consecutive
    cb.record_failure()
    assert cb.state is CircuitState.OPEN
    clock.t = 5.0
    assert cb.allow()
    cb.record_failure()
    assert cb.state is CircuitState.OPEN and not cb.allow()
    clock.t = 10.0
    assert cb.allow()
    cb.record_neutral()  # the probe proved nothing: another may try
    assert cb.allow()
