"""slatewise.v1.SlateService: Recommend and RecommendStream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import grpc

from slatewise.api import convert
from slatewise.config import Settings
from slatewise.domain import Decision
from slatewise.errors import InvalidRequest, abort_invalid
from slatewise.feedback.records import ServedSlate
from slatewise.feedback.store import FeedbackStore
from slatewise.metrics import Metrics
from slatewise.proto import pb, pb_grpc
from slatewise.recommender import Overloaded, Recommender, SlateOutcome
from slatewise.resilience.admission import InflightLimit
from slatewise.validation import validate

log = logging.getLogger("slatewise.requests")

# How long after a slate's RPC ends its metrics and log line are written (_after_answer).
BOOKKEEPING_DELAY_S = 0.005


class SlateService(pb_grpc.SlateServiceServicer):
    def __init__(self, settings: Settings, recommender: Recommender, metrics: Metrics,
                 feedback: FeedbackStore | None = None) -> None:
        self.settings = settings
        self.recommender = recommender
        self.metrics = metrics
        self.feedback = feedback
        self.admission = InflightLimit(settings.max_inflight_requests)
        self._pending: set[Callable[[], None]] = set()  # bookkeeping scheduled, not yet run

    def _deadline(self, context: grpc.aio.ServicerContext, arrived: float) -> float | None:
        remaining = context.time_remaining()
        return arrived + remaining if remaining is not None else None

    async def _events(self, request: pb.RecommendRequest, context, method: str):
        """Shared body: validate, run, count. Yields (item or slate) protos."""
        arrived = time.monotonic()
        strategy, code = "none", grpc.StatusCode.OK
        if not self.admission.try_acquire():
            self.metrics.requests.labels(method, strategy, "RESOURCE_EXHAUSTED").inc()
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"{self.admission.inflight} requests in flight")
        self.metrics.inflight.inc()
        try:
            try:
                req = validate(request, self.recommender.store.snapshot, self.settings)
                if self.feedback is not None and self.feedback.slate_id_taken(req.slate_id):
                    raise InvalidRequest([("slate_id", f"{req.slate_id[:64]!r} was already served")])
                position = 0
                async for event in self.recommender.run(req, arrived, self._deadline(context, arrived)):
                    if isinstance(event, Decision):
                        yield "item", event, position
                        position += 1
                    else:
                        strategy = event.strategy.value
                        if self.feedback is not None:  # durable before the caller can report on it
                            await self.feedback.record_slate(served(req, event))
                        self._after_answer(context, req.request_id, method, event)
                        yield "slate", event, req
            except InvalidRequest as exc:
                code = grpc.StatusCode.INVALID_ARGUMENT
                await abort_invalid(context, exc)
            except Overloaded as exc:
                code = grpc.StatusCode.RESOURCE_EXHAUSTED
                await context.abort(code, f"model path saturated: {exc}")
        except Exception:
            if code is grpc.StatusCode.OK:
                code = context.code() or grpc.StatusCode.UNKNOWN
                if code is grpc.StatusCode.OK:
                    code = grpc.StatusCode.UNKNOWN
            raise
        finally:
            self.admission.release()
            self.metrics.inflight.dec()
            self.metrics.requests.labels(method, strategy, code.name).inc()

    def _after_answer(self, context, request_id: str, method: str, outcome: SlateOutcome) -> None:
        """The slate's metrics and its log line, a moment after the RPC has ended.

        Neither changes the answer, and the caller should not wait for
        them: code that has sat idle runs several times slower than warm on
        these machines (a log line took 0.25-0.3 ms a second after the last
        one, 0.02 ms in a loop). Run as the RPC ended, they still sat in
        the way of the caller's next request, sent the moment the answer
        arrived. BOOKKEEPING_DELAY_S later, that request is with the engine,
        whose steps leave the server idle. Side by side, each slate timed
        right after another, two runs: query-only slates 3-5 % faster,
        history-only ones -2 to +3 % (docs/BENCHMARKS.md, 2026-12-02, fourth
        session). gRPC runs done-callbacks when the RPC ends, answer sent or
        not, so nothing is skipped for a caller who went away; flush() runs
        what is still waiting at shutdown."""
        remaining = context.time_remaining()  # the deadline left as the slate leaves us
        loop = asyncio.get_running_loop()

        def work() -> None:
            if work not in self._pending:  # flush() ran it already
                return
            self._pending.discard(work)
            self.recommender.record(outcome)
            self._log(request_id, method, outcome, remaining)

        def done(_context) -> None:
            self._pending.add(work)
            loop.call_later(BOOKKEEPING_DELAY_S, work)

        context.add_done_callback(done)

    def flush(self) -> None:
        """Run the bookkeeping still waiting (at shutdown, once no RPC is left)."""
        for work in list(self._pending):
            work()  # its timer, if it still fires, finds it done

    def _log(self, request_id: str, method: str, outcome: SlateOutcome, remaining: float | None) -> None:
        extra = {
            "request_id": request_id, "method": method, "strategy": outcome.strategy.value,
            "reason": outcome.reason.value, "latency_s": round(outcome.total, 4),
            "k": len(outcome.decisions),
        }
        if remaining is not None:
            # How much of the caller's deadline was left as the slate left us.
            extra["deadline_slack_s"] = round(remaining, 4)
        log.info("slate served", extra=extra)

    async def Recommend(self, request, context):
        # Closed before the answer leaves: the request's bookkeeping (in-flight
        # count, request metrics) is done by then, not whenever the abandoned
        # generator happens to be finalized.
        # Each item is converted as it is decided, while the engine writes
        # the next; after the last one only the slate around them is left.
        items = []
        async with contextlib.aclosing(self._events(request, context, "Recommend")) as events:
            async for kind, event, extra in events:
                if kind == "item":
                    items.append(convert.slate_item(event, extra))
                else:
                    return convert.slate(event, extra, items)
        raise AssertionError("the recommender always ends with an outcome")  # pragma: no cover

    async def RecommendStream(self, request, context):
        items = []
        async for kind, event, extra in self._events(request, context, "RecommendStream"):
            if kind == "item":
                items.append(convert.slate_item(event, extra))
                yield pb.SlateEvent(item=items[-1])
            else:
                yield pb.SlateEvent(slate=convert.slate(event, extra, items))


def served(req, outcome: SlateOutcome) -> ServedSlate:
    """What the feedback log keeps of a slate: enough to train on what was shown."""
    return ServedSlate(slate_id=req.slate_id, time=time.time(), items=[d.item.id for d in outcome.decisions],
                       user_id=req.user_id, query=req.query, history=list(req.history_ids),
                       model_id=outcome.model_id, strategy=outcome.strategy.value.upper())
