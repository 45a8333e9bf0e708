"""One request's path after validation: candidates, strategy, decisions, outcome.

The model path commits items left to right and never takes one back; if it
stops early (engine error, deadline), the items it committed stay and the
pointwise scorer fills the rest under the same constraints, diversified
against what is already in the slate.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from slatewise.candidates import CandidateSet, resolve
from slatewise.catalogue.store import CatalogueStore
from slatewise.config import Settings
from slatewise.domain import Decision, FallbackReason, SlateRequest, Source, Strategy
from slatewise.embeddings import Embedder
from slatewise.metrics import CIRCUIT_STATES, Metrics
from slatewise.model.composer import CannotPlan, ModelPlan, SlateComposer
from slatewise.model.engine import Engine, EngineRequestError, EngineState, EngineUnavailable
from slatewise.pointwise.select import select
from slatewise.resilience.admission import InflightLimit
from slatewise.resilience.circuit import CircuitBreaker
from slatewise.resilience.deadline import Deadline
from slatewise.slate_metrics import SlateDiversity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlateOutcome:
    cset: CandidateSet
    decisions: tuple[Decision, ...]
    strategy: Strategy
    reason: FallbackReason
    diversity: SlateDiversity
    time_to_first_item: float
    total: float
    model_id: str
    generated_tokens: int
    shadowed: bool = False  # sampled (shadow_rate) to be compared with the pointwise slate in record()


@dataclass(eq=False)
class ModelSlot:
    """One served model: its engine and the composer that plans for it. A
    request takes the slot once, at its start, and keeps it to the end, so a
    hot-swap (model/swap.py) can never mix two models in one slate or report
    the wrong model_id; ``active`` counts those requests, so that the old
    engine is shut down only once none of them can still reach it."""

    engine: Engine
    composer: SlateComposer
    active: int = 0


class Overloaded(RuntimeError):
    """The caller asked to be told (RESOURCE_EXHAUSTED) rather than served pointwise."""


class Recommender:
    def __init__(self, settings: Settings, store: CatalogueStore, embedder: Embedder,
                 engine: Engine, composer: SlateComposer, metrics: Metrics) -> None:
        self.settings = settings
        self.store = store
        self.embedder = embedder
        self.slot = ModelSlot(engine, composer)
        # The latest model-path requests: what a hot-swap candidate is shadowed on.
        self.recent: collections.deque[SlateRequest] = collections.deque(maxlen=256)
        self.metrics = metrics
        self.circuit = CircuitBreaker(
            settings.circuit_failure_threshold, settings.circuit_cooldown_seconds,
            on_change=lambda st: metrics.circuit_state.set(CIRCUIT_STATES[st.value]),
        )
        self.model_slots = InflightLimit(settings.max_model_inflight)
        self.running = 0  # slate requests between arrival and outcome, whichever slot

    def resolve(self, request: SlateRequest) -> CandidateSet:
        """CPU-bound (the query encoder): off the event loop unless the
        request is alone (``_prepared``)."""
        return resolve(request, self.store.snapshot, self.embedder, self.settings.retrieval_top_n)

    async def candidates(self, request: SlateRequest) -> CandidateSet:
        return await asyncio.to_thread(self.resolve, request)

    async def _prepared(self, slot: ModelSlot, request: SlateRequest,
                        plan: bool) -> tuple[CandidateSet, ModelPlan | CannotPlan | None]:
        """The candidates and the plan: on a worker thread while other
        requests are in flight, so that their tokens and deadlines are not
        held up by this one's query encoder (1-4 ms) or inline items; on the
        event loop when this request is alone, with nobody to hold up: the
        trip to the thread and back wakes two sleeping threads on the path
        of the slate. Measured in the server, a lone request reached the
        engine's thread 0.2-0.4 ms sooner on the loop (docs/BENCHMARKS.md)."""
        if self.running == 1:
            return self._prepare(slot, request, plan)
        return await asyncio.to_thread(self._prepare, slot, request, plan)

    def _prepare(self, slot: ModelSlot, request: SlateRequest,
                 plan: bool) -> tuple[CandidateSet, ModelPlan | CannotPlan | None]:
        """Both in one place, so that a trip to the worker thread is one trip."""
        cset = self.resolve(request)
        if not plan:
            return cset, None
        try:
            return cset, slot.composer.plan(cset)
        except CannotPlan as exc:  # context too long, no candidate the model knows
            return cset, exc

    @property
    def engine(self) -> Engine:
        return self.slot.engine

    @property
    def composer(self) -> SlateComposer:
        return self.slot.composer

    @staticmethod
    def _model_unavailable_reason(slot: ModelSlot) -> FallbackReason:
        if slot.engine.state is EngineState.DEAD:
            return FallbackReason.ENGINE_DEAD
        return FallbackReason.ENGINE_NOT_READY

    def budget_end(self, arrived: float, deadline: float | None) -> float:
        """When the model must stop: the caller's deadline (capped), minus the
        margin the pointwise fill needs."""
        end = arrived + self.settings.max_request_seconds
        if deadline is not None:
            end = min(end, deadline)
        return end - self.settings.deadline_margin_seconds

    def _gate(self, request: SlateRequest, slot: ModelSlot) -> FallbackReason:
        """Whether the model may take this request; NONE means go ahead."""
        if request.strategy is Strategy.POINTWISE or not self.settings.model_enabled:
            return FallbackReason.NONE
        if not slot.engine.ready:
            return self._model_unavailable_reason(slot)
        if not self.circuit.allow():
            return FallbackReason.CIRCUIT_OPEN
        if not self.model_slots.try_acquire():
            self.circuit.record_neutral()
            if request.reject_on_overload:
                raise Overloaded(f"{self.model_slots.inflight} requests on the model path")
            return FallbackReason.OVERLOAD
        return FallbackReason.NONE

    async def run(self, request: SlateRequest, arrived: float,
                  deadline: float | None = None) -> AsyncIterator[Decision | SlateOutcome]:
        """Yield each Decision as it is made, then the SlateOutcome.

        ``arrived`` and ``deadline`` are time.monotonic() values, the clock of
        the event loop, so they serve directly as asyncio deadlines (uvloop
        reads the same clock in whole milliseconds: a timeout fires up to
        1 ms late, well inside ``deadline_margin_seconds``).
        """
        slot = self.slot
        slot.active += 1
        self.running += 1
        try:
            async for event in self._run(slot, request, arrived, deadline):
                yield event
        finally:
            slot.active -= 1
            self.running -= 1

    async def _run(self, slot: ModelSlot, request: SlateRequest, arrived: float,
                   deadline: float | None) -> AsyncIterator[Decision | SlateOutcome]:
        budget_end = self.budget_end(arrived, deadline)
        wants_model = request.strategy is not Strategy.POINTWISE and self.settings.model_enabled
        # The gate comes first: a request the model will not take is not planned.
        reason = self._gate(request, slot) if wants_model else FallbackReason.NONE
        use_model = wants_model and reason is FallbackReason.NONE
        try:
            cset, plan = await self._prepared(slot, request, use_model)
        except BaseException:
            if use_model:  # the gate's model slot and circuit trial, not used
                self.circuit.record_neutral()
                self.model_slots.release()
            raise
        if wants_model:
            self.recent.append(request)
        decisions: list[Decision] = []
        tally = cset.tally()  # the outcome's diversity, kept up as items arrive
        tokens = 0
        hedge = None
        shadowed = False

        def start_hedge() -> None:
            nonlocal hedge
            if hedge is None:
                hedge = asyncio.create_task(asyncio.to_thread(self._pointwise, cset, request, ()))

        if use_model and isinstance(plan, CannotPlan):  # context too long, no candidate the model knows
            log.info("request %s: %s", request.request_id, plan)
            self.circuit.record_neutral()
            self.model_slots.release()
            reason, use_model = plan.reason, False
        try:
            if use_model:
                # The model's items are read by this task, the one that
                # answers the caller: one wake-up per engine output, as for
                # raw vLLM. (A task of its own fed them through a queue, a
                # second wake-up for each, and work in the server between
                # two engine steps slows the next one; docs/BENCHMARKS.md,
                # 2026-12-02.) The caller's budget bounds each wait for the
                # engine, never a yield to the caller; what the engine has
                # already delivered is taken as it is, timed out or not, and
                # aborting the engine request is left to the engine's loop.
                picks = slot.composer.compose(plan, request_id=request.request_id,
                                              temperature=request.temperature, seed=request.seed)
                # Hedge: the pointwise slate is computed while the model
                # decodes, so a fallback at the deadline costs nothing. It
                # starts once compose() first waits, when the engine has the
                # request, not before: computed beside the request's own
                # set-up, it held the GIL that set-up needs.
                asyncio.get_running_loop().call_soon(start_hedge)
                started = time.monotonic()
                deadline = Deadline(budget_end)
                try:
                    while True:
                        try:
                            index = await deadline.next(picks)
                        except StopAsyncIteration:
                            reason, tokens = self._model_finished(request, len(decisions))
                            break
                        except Exception as exc:  # noqa: BLE001 - classified for the outcome
                            reason = self._model_stopped(exc, slot, request, len(decisions),
                                                         generous=budget_end - started
                                                         >= self.settings.circuit_slow_seconds)
                            tokens = len(decisions)
                            break
                        decision = _decide(cset, index, Source.MODEL, arrived)
                        decisions.append(decision)
                        tally.add(index)
                        yield decision
                finally:
                    deadline.close()
                    self.model_slots.release()
                    await picks.aclose()  # a caller who cancels must not leave a request in the engine
                shadowed = len(decisions) == request.k and random.random() < self.settings.shadow_rate
            if len(decisions) < request.k:
                picked = [d.candidate for d in decisions]
                # Nothing committed: the hedged slate is the answer, ready-made.
                fill = await hedge if hedge is not None and not picked else \
                    self._pointwise(cset, request, picked)
                for index in fill[len(picked):]:
                    decision = _decide(cset, index, Source.FALLBACK, arrived)
                    decisions.append(decision)
                    tally.add(index)
                    yield decision
        finally:
            if hedge is not None:
                hedge.cancel()
        yield self._outcome(slot, cset, decisions, tally.result(), reason, arrived, tokens, shadowed)

    def _model_finished(self, request: SlateRequest, committed: int) -> tuple[FallbackReason, int]:
        """The engine ended the request: the reason and the tokens it generated."""
        self.circuit.record_success()
        if committed < request.k:
            # A trained model offered only the candidates it has tokens for
            # wrote all it could (and its EOS); the pointwise fill completes the slate.
            return FallbackReason.UNKNOWN_CANDIDATES, committed + 1
        return FallbackReason.NONE, committed  # one token per item; EOS is not generated

    def _model_stopped(self, exc: Exception, slot: ModelSlot, request: SlateRequest, committed: int,
                       generous: bool) -> FallbackReason:
        """Why the model stopped short, told to the circuit breaker."""
        if isinstance(exc, TimeoutError):
            # Nothing at all within a generous budget looks like a sick
            # engine; a slate cut short by a tight deadline does not.
            if committed == 0 and generous:
                self.circuit.record_failure()
            else:
                self.circuit.record_neutral()
            return FallbackReason.DEADLINE
        if isinstance(exc, EngineUnavailable):
            self.circuit.record_neutral()
            return self._model_unavailable_reason(slot)
        self.circuit.record_failure()
        if isinstance(exc, EngineRequestError):
            log.warning("request %s: engine error: %s", request.request_id, exc)
            return FallbackReason.ENGINE_DEAD if exc.dead else FallbackReason.ENGINE_ERROR
        # A bug here must not fail the caller.
        log.error("request %s: model path failed", request.request_id, exc_info=exc)
        return FallbackReason.ENGINE_ERROR

    def _shadow(self, cset: CandidateSet, decisions, pointwise: list[int]) -> None:
        """What the model bought over the pointwise slate for this very request."""
        comparison = cset.compare([d.candidate for d in decisions], pointwise)
        m = self.metrics
        m.shadow_comparisons.inc()
        for metric, delta in comparison.diversity_delta.items():
            m.shadow_diversity_delta.labels(metric).observe(delta)
        m.shadow_overlap.observe(comparison.overlap)

    def _pointwise(self, cset: CandidateSet, request: SlateRequest, picked) -> list[int]:
        return select(self.settings.diversify_method, cset.embeddings, cset.scores, request.k,
                      request.diversity, cset.limits, selected=list(picked))

    def _outcome(self, slot: ModelSlot, cset: CandidateSet, decisions: list[Decision], diversity: SlateDiversity,
                 reason: FallbackReason, arrived: float, tokens: int, shadowed: bool = False) -> SlateOutcome:
        model_items = sum(d.source is Source.MODEL for d in decisions)
        if model_items == len(decisions):
            strategy = Strategy.MODEL
        elif model_items:
            strategy = Strategy.PARTIAL
        elif reason is FallbackReason.NONE:
            strategy = Strategy.POINTWISE
        else:
            strategy = Strategy.FALLBACK
        total = time.monotonic() - arrived
        return SlateOutcome(
            cset=cset, decisions=tuple(decisions), strategy=strategy, reason=reason,
            diversity=diversity, time_to_first_item=decisions[0].at if decisions else total, total=total,
            model_id=slot.engine.model_id if model_items else "", generated_tokens=tokens, shadowed=shadowed,
        )

    def record(self, outcome: SlateOutcome) -> None:
        """Export a served slate's metrics. Nothing here changes the answer,
        so the servicer calls it once the answer has left (SlateService):
        on these machines code that has sat idle for a second runs several
        times slower than warm, and this ran at 0.05-0.1 ms on every
        slate's way out."""
        m = self.metrics
        if outcome.shadowed:  # here, not before the answer: the caller waited ~0.8 ms for it (a thread hop, a DPP)
            cset = outcome.cset  # (before the slate counts: a scrape that sees the slate sees its comparison)
            self._shadow(cset, outcome.decisions, self._pointwise(cset, cset.request, ()))
        m.observe_slate(outcome.strategy.value, outcome.diversity, outcome.total, outcome.time_to_first_item)
        if outcome.reason is not FallbackReason.NONE:
            m.fallbacks.labels(outcome.reason.value).inc()
        if outcome.generated_tokens:
            m.model_tokens.observe(outcome.generated_tokens)
        if outcome.model_id:
            m.model_slates.labels(outcome.model_id).inc()

    async def model_slate(self, slot: ModelSlot, cset: CandidateSet, request_id: str) -> tuple[ModelPlan, list[int]]:
        """The slate ``slot``'s model writes for ``cset`` alone, without
        deadline, fallback or metrics: the warm-up, and comparing two models."""
        plan = await asyncio.to_thread(slot.composer.plan, cset)
        picks = [i async for i in slot.composer.compose(
            plan, request_id=request_id, temperature=cset.request.temperature,
            seed=cset.request.seed, allow_warming=True)]
        return plan, picks

    async def warmup(self, slot: ModelSlot | None = None, force: bool = False) -> None:
        """One real slate through the engine before we report SERVING (or a
        hot-swapped model takes traffic).

        It also fills the prefix cache with the catalogue context, so the
        first caller does not pay for it.
        """
        slot = slot or self.slot
        slot.composer.prepare()
        if not self.settings.warmup and not force:
            return
        snap = self.store.snapshot
        request = SlateRequest(request_id="warmup", query="a casual outfit",
                               k=min(3, len(snap)), candidates=None)
        plan, picks = await self.model_slate(slot, await self.candidates(request), "warmup")
        if len(picks) != plan.spec.k:
            raise RuntimeError(f"warm-up slate has {len(picks)} items, expected {plan.spec.k}")



def _decide(cset: CandidateSet, index: int, source: Source, arrived: float) -> Decision:
    return Decision(index, cset.candidates[index], float(cset.scores[index]), source,
                    time.monotonic() - arrived)
