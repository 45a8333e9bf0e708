"""Orchestration of one request with a scripted stand-in for the engine:
partial fill, fallback reasons, the circuit breaker and overload policy.
(The real engine is exercised by the integration and fault tests.)"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import numpy as np
import pytest

from slatewise.candidates import CandidateSet
from slatewise.config import load_settings
from slatewise.domain import Candidate, FallbackReason, SlateRequest, Source, Strategy
from slatewise.errors import InvalidRequest
from slatewise.metrics import Metrics
from slatewise.model.composer import ContextTooLong
from slatewise.model.engine import EngineRequestError, EngineState
from slatewise.model.plan import UnknownCandidates
from slatewise.recommender import Overloaded, Recommender, SlateOutcome

N = 12


class FakeEngine:
    model_id = "fake-model"

    def __init__(self):
        self.state = EngineState.READY

    @property
    def ready(self):
        return self.state is EngineState.READY


class ScriptedComposer:
    """Yields the scripted picks with a delay each, then fails if told to."""

    def __init__(self, picks, delay=0.0, error=None, too_long=False):
        self.picks, self.delay, self.error, self.too_long = picks, delay, error, too_long
        self.cancelled = False

    def plan(self, cset):
        if self.too_long:
            raise ContextTooLong("scripted")
        return object()

    async def compose(self, plan, **kw):
        try:
            for p in self.picks:
                await asyncio.sleep(self.delay)
                yield p
            if self.error:
                raise self.error
        except asyncio.CancelledError:
            self.cancelled = True
            raise


def _cset(request):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(N, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    cats = [i % 3 for i in range(N)]
    cands = tuple(Candidate(f"c{i}", f"t{i}", f"cat{c}", {}) for i, c in enumerate(cats))
    return CandidateSet(request=request, snapshot=None, candidates=cands, embeddings=emb,
                        scores=np.linspace(1, 0, N).astype(np.float32),
                        category_index=np.array(cats), category_names=("cat0", "cat1", "cat2"),
                        caps=(request.max_per_category,) * 3, retrieved=False)


def _recommender(composer, engine=None, **settings):
    s = load_settings([f"--{k.replace('_', '-')}={v}" for k, v in settings.items()])
    rec = Recommender(s, store=None, embedder=None, engine=engine or FakeEngine(), composer=composer,
                      metrics=Metrics())

    rec.resolve = _cset
    return rec


async def _run(rec, request, deadline=None):
    arrived = time.monotonic()
    events = [e async for e in rec.run(request, arrived, deadline)]
    outcome = events[-1]
    assert isinstance(outcome, SlateOutcome)
    assert list(events[:-1]) == list(outcome.decisions)
    ids = [d.item.id for d in outcome.decisions]
    assert len(ids) == request.k == len(set(ids))
    if request.max_per_category:
        assert max(Counter(d.item.category for d in outcome.decisions).values()) <= request.max_per_category
    return outcome


def _req(k=4, cap=0, **kw):
    return SlateRequest("r", "q", k, None, max_per_category=cap, **kw)


async def test_model_slate():
    out = await _run(_recommender(ScriptedComposer([3, 1, 4, 0])), _req())
    assert out.strategy is Strategy.MODEL and out.reason is FallbackReason.NONE
    assert [d.candidate for d in out.decisions] == [3, 1, 4, 0]
    assert out.generated_tokens == 4


async def test_engine_error_after_two_items_keeps_them_and_fills_the_rest():
    composer = ScriptedComposer([5, 2], error=EngineRequestError("boom"))
    out = await _run(_recommender(composer), _req(k=5, cap=2))
    assert out.strategy is Strategy.PARTIAL and out.reason is FallbackReason.ENGINE_ERROR
    assert [d.candidate for d in out.decisions[:2]] == [5, 2]
    assert [d.source for d in out.decisions] == [Source.MODEL] * 2 + [Source.FALLBACK] * 3


async def test_deadline_cuts_the_model_and_aborts_it():
    # The margin (50 ms) leaves a busy machine room to finish the fallback
    # before the caller's deadline, which is what is asserted.
    composer = ScriptedComposer(list(range(N)), delay=0.05)
    rec = _recommender(composer, deadline_margin_seconds=0.05)
    t0 = time.monotonic()
    out = await _run(rec, _req(k=10), deadline=t0 + 0.3)
    assert time.monotonic() - t0 < 0.3
    assert out.reason is FallbackReason.DEADLINE and out.strategy is Strategy.PARTIAL
    assert 1 <= sum(d.source is Source.MODEL for d in out.decisions) < 10
    await asyncio.sleep(0)
    assert composer.cancelled


async def test_nothing_committed_is_a_fallback_and_opens_the_circuit():
    rec = _recommender(ScriptedComposer([], error=EngineRequestError("dead", dead=True)),
                       circuit_failure_threshold=2)
    for _ in range(2):
        out = await _run(rec, _req())
        assert out.strategy is Strategy.FALLBACK and out.reason is FallbackReason.ENGINE_DEAD
    out = await _run(rec, _req())
    assert out.reason is FallbackReason.CIRCUIT_OPEN


@pytest.mark.parametrize(("state", "reason"), [(EngineState.STARTING, FallbackReason.ENGINE_NOT_READY),
                                                (EngineState.DEAD, FallbackReason.ENGINE_DEAD)])
async def test_engine_not_ready_or_dead(state, reason):
    engine = FakeEngine()
    engine.state = state
    out = await _run(_recommender(ScriptedComposer([1]), engine=engine), _req())
    assert out.strategy is Strategy.FALLBACK and out.reason is reason


async def test_context_too_long_and_pointwise_strategy():
    out = await _run(_recommender(ScriptedComposer([], too_long=True)), _req())
    assert out.reason is FallbackReason.CONTEXT_TOO_LONG
    out = await _run(_recommender(ScriptedComposer([1, 2])), _req(strategy=Strategy.POINTWISE))
    assert out.strategy is Strategy.POINTWISE and out.reason is FallbackReason.NONE


async def test_overload_policy():
    rec = _recommender(ScriptedComposer([0, 1, 2, 3], delay=0.05), max_model_inflight=1)
    first = asyncio.create_task(_run(rec, _req()))
    await asyncio.sleep(0.01)
    out = await _run(rec, _req())
    assert out.reason is FallbackReason.OVERLOAD
    with pytest.raises(Overloaded):
        await _run(rec, _req(reject_on_overload=True))
    assert (await first).strategy is Strategy.MODEL
    assert rec.model_slots.inflight == 0


async def test_a_trained_model_short_of_known_candidates_is_filled_pointwise():
    # The planner offered the model only the candidates it has tokens for (2 < K).
    out = await _run(_recommender(ScriptedComposer([3, 1])), _req(k=4))
    assert out.strategy is Strategy.PARTIAL and out.reason is FallbackReason.UNKNOWN_CANDIDATES
    assert [d.source for d in out.decisions] == [Source.MODEL] * 2 + [Source.FALLBACK] * 2
    assert out.generated_tokens == 3 and out.model_id == "fake-model"
    # None known: the planner refuses, the slate is pointwise with the reason.
    class NoneKnown(ScriptedComposer):
        def plan(self, cset):
            raise UnknownCandidates("scripted")

    out = await _run(_recommender(NoneKnown([])), _req())
    assert out.strategy is Strategy.FALLBACK and out.reason is FallbackReason.UNKNOWN_CANDIDATES
    assert out.model_id == ""


async def test_a_request_whose_candidates_fail_gives_back_its_model_slot():
    # The gate runs before the candidates are resolved: a request that then
    # turns out invalid must not keep the model slot (or a circuit trial).
    rec = _recommender(ScriptedComposer([0, 1, 2, 3]), max_model_inflight=1)

    def invalid(request):
        raise InvalidRequest([("k", "scripted")])

    rec.resolve = invalid
    with pytest.raises(InvalidRequest):
        await _run(rec, _req())
    assert rec.model_slots.inflight == 0
    rec.resolve = _cset
    out = await _run(rec, _req())
    assert out.strategy is Strategy.MODEL


async def test_the_hedge_waits_for_the_engine_to_have_the_request():
    # It used to start before planning and hold the GIL that planning and the
    # request's set-up need; now it starts once compose() has been entered.
    order = []

    class Recording(ScriptedComposer):
        def plan(self, cset):
            order.append("plan")
            return super().plan(cset)

        async def compose(self, plan, **kw):
            order.append("compose")
            async for p in super().compose(plan, **kw):
                yield p

    rec = _recommender(Recording([3, 1, 4, 0], delay=0.01))
    pointwise = rec._pointwise

    def recorded(*args):
        order.append("hedge")
        return pointwise(*args)

    rec._pointwise = recorded
    out = await _run(rec, _req())
    assert out.strategy is Strategy.MODEL
    assert order == ["plan", "compose", "hedge"]


async def test_a_lone_request_is_planned_on_the_loop_and_concurrent_ones_on_a_worker():
    # A worker thread keeps the loop free for other requests' tokens while a
    # query is encoded; alone, a request has nobody to hold up and skips the
    # two thread hand-overs.
    threads = []

    def recording(request):
        threads.append(threading.get_ident())
        return _cset(request)

    rec = _recommender(ScriptedComposer([3, 1, 4, 0], delay=0.01))
    rec.resolve = recording
    await _run(rec, _req())
    assert threads == [threading.get_ident()]
    threads.clear()
    await asyncio.gather(_run(rec, _req()), _run(rec, _req()))
    assert len(threads) == 2 and threading.get_ident() in threads and len(set(threads)) == 2
    assert rec.running == 0


async def test_the_shadow_comparison_waits_for_record_not_the_answer():
    """A sampled model slate is compared with the pointwise one after the
    answer has left (record(), which SlateService runs then), not before the
    outcome: the caller has nothing to wait for in a metric."""
    rec = _recommender(ScriptedComposer([3, 1, 4, 0]), shadow_rate=1)
    comparisons = rec.metrics.shadow_comparisons
    out = await _run(rec, _req(diversity=0.5))
    assert out.strategy is Strategy.MODEL and out.shadowed
    assert comparisons._value.get() == 0
    rec.record(out)
    assert comparisons._value.get() == 1
    overlap = rec.metrics.registry.get_sample_value("slatewise_shadow_overlap_sum")
    pointwise = rec._pointwise(out.cset, out.cset.request, ())
    assert overlap == pytest.approx(len({3, 1, 4, 0} & set(pointwise)) / 4)

    unsampled = await _run(_recommender(ScriptedComposer([3, 1, 4, 0]), shadow_rate=0), _req())
    assert not unsampled.shadowed
