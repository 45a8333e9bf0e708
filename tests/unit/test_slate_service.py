"""SlateService's bookkeeping after the answer: later than the answer, never lost."""

from __future__ import annotations

import asyncio
import logging

from slatewise.api import slate_service
from slatewise.api.slate_service import SlateService
from slatewise.config import load_settings
from slatewise.domain import FallbackReason, Strategy
from slatewise.metrics import Metrics
from slatewise.recommender import SlateOutcome
from slatewise.slate_metrics import SlateDiversity


class FakeContext:
    def __init__(self):
        self.callbacks = []

    def time_remaining(self):
        return 1.5

    def add_done_callback(self, callback):
        self.callbacks.append(callback)

    def end(self):  # what gRPC does when the RPC ends
        for callback in self.callbacks:
            callback(self)


class Recorder:
    def __init__(self):
        self.recorded = []

    def record(self, outcome):
        self.recorded.append(outcome)


def _service():
    recorder = Recorder()
    return SlateService(load_settings([]), recorder, Metrics()), recorder


def _outcome():
    return SlateOutcome(cset=None, decisions=(), strategy=Strategy.MODEL, reason=FallbackReason.NONE,
                        diversity=SlateDiversity(0.5, 1.0, 0.5), time_to_first_item=0.01, total=0.05,
                        model_id="m", generated_tokens=10)


async def test_metrics_and_log_line_come_after_the_rpc_ends(caplog):
    service, recorder = _service()
    context = FakeContext()
    with caplog.at_level(logging.INFO, logger="slatewise.requests"):
        service._after_answer(context, "req-1", "Recommend", _outcome())
        await asyncio.sleep(slate_service.BOOKKEEPING_DELAY_S * 3)
        assert recorder.recorded == []  # the RPC has not ended: nothing yet
        context.end()
        assert recorder.recorded == []  # ended: still not in the way of the caller's next request
        await asyncio.sleep(slate_service.BOOKKEEPING_DELAY_S * 3)
    assert len(recorder.recorded) == 1
    [line] = [r for r in caplog.records if r.getMessage() == "slate served"]
    assert line.request_id == "req-1" and line.deadline_slack_s == 1.5 and line.k == 0
    assert service._pending == set()


async def test_flush_runs_what_is_still_waiting_once(caplog):
    service, recorder = _service()
    contexts = [FakeContext(), FakeContext()]
    with caplog.at_level(logging.INFO, logger="slatewise.requests"):
        for context in contexts:
            service._after_answer(context, "same-id", "Recommend", _outcome())  # ids may repeat
            context.end()
        service.flush()  # at shutdown: nothing dropped with the loop
        assert len(recorder.recorded) == 2
        await asyncio.sleep(slate_service.BOOKKEEPING_DELAY_S * 3)
    assert len(recorder.recorded) == 2  # the timers, firing later, did not run it again
    assert sum(r.getMessage() == "slate served" for r in caplog.records) == 2
    assert service._pending == set()
