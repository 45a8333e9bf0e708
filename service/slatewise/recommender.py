"""One request's path after validation: candidates, strategy, decisions, outcome.

The model path commits items left to right and never takes one back; if it
stops early (engine error, deadline), the items it committed stay and the
pointwise scorer fills the rest under the same constraints, diversified
against what is already in the slate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from slatewise.candidates import CandidateSet, resolve
from slatewise.catalogue.store import CatalogueStore
from slatewise.config import Settings
from slatewise.domain import Decision, FallbackReason, SlateRequest, Source, Strategy
from slatewise.embeddings import Embedder
from slatewise.metrics import Metrics
from slatewise.model.composer import ContextTooLong, SlateComposer
from slatewise.model.engine import Engine, EngineRequestError, EngineState, EngineUnavailable
from slatewise.pointwise.select import select
from slatewise.slate_metrics import SlateDiversity, slate_diversity

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


class Recommender:
    def __init__(self, settings: Settings, store: CatalogueStore, embedder: Embedder,
                 engine: Engine, composer: SlateComposer, metrics: Metrics) -> None:
        self.settings = settings
        self.store = store
        self.embedder = embedder
        self.engine = engine
        self.composer = composer
        self.metrics = metrics

    async def candidates(self, request: SlateRequest) -> CandidateSet:
        return await asyncio.to_thread(
            resolve, request, self.store.snapshot, self.embedder, self.settings.retrieval_top_n
        )

    def _model_unavailable_reason(self) -> FallbackReason:
        if self.engine.state is EngineState.DEAD:
            return FallbackReason.ENGINE_DEAD
        return FallbackReason.ENGINE_NOT_READY

    async def run(self, request: SlateRequest, arrived: float,
                  deadline: float | None = None) -> AsyncIterator[Decision | SlateOutcome]:
        """Yield each Decision as it is made, then the SlateOutcome.

        ``arrived`` and ``deadline`` are time.monotonic() values.
        """
        cset = await self.candidates(request)
        decisions: list[Decision] = []
        reason = FallbackReason.NONE
        tokens = 0
        use_model = request.strategy is not Strategy.POINTWISE and self.settings.model_enabled
        if use_model and not self.engine.ready:
            reason = self._model_unavailable_reason()
            use_model = False
        if use_model:
            try:
                plan = self.composer.plan(cset)
            except ContextTooLong as exc:
                log.info("request %s: %s", request.request_id, exc)
                reason, use_model = FallbackReason.CONTEXT_TOO_LONG, False
        if use_model:
            try:
                # The loop's clock is time.monotonic(), like ``deadline``.
                async with asyncio.timeout_at(deadline):
                    async for index in self.composer.compose(
                        plan, request_id=request.request_id,
                        temperature=request.temperature, seed=request.seed,
                    ):
                        tokens += 1
                        decision = _decide(cset, index, Source.MODEL, arrived)
                        decisions.append(decision)
                        yield decision
                tokens += 1  # EOS
            except TimeoutError:
                reason = FallbackReason.DEADLINE
            except EngineUnavailable:
                reason = self._model_unavailable_reason()
            except EngineRequestError as exc:
                log.warning("request %s: engine error: %s", request.request_id, exc)
                reason = FallbackReason.ENGINE_DEAD if exc.dead else FallbackReason.ENGINE_ERROR
        if len(decisions) < request.k:
            picked = [d.candidate for d in decisions]
            fill = select(self.settings.diversify_method, cset.embeddings, cset.scores, request.k,
                          request.diversity, cset.limits, selected=picked)
            for index in fill[len(picked):]:
                decision = _decide(cset, index, Source.FALLBACK, arrived)
                decisions.append(decision)
                yield decision
        yield self._outcome(cset, decisions, request, reason, arrived, tokens)

    def _outcome(self, cset: CandidateSet, decisions: list[Decision], request: SlateRequest,
                 reason: FallbackReason, arrived: float, tokens: int) -> SlateOutcome:
        model_items = sum(d.source is Source.MODEL for d in decisions)
        if model_items == len(decisions):
            strategy = Strategy.MODEL
        elif model_items:
            strategy = Strategy.PARTIAL
        elif reason is FallbackReason.NONE:
            strategy = Strategy.POINTWISE
        else:
            strategy = Strategy.FALLBACK
        idx = [d.candidate for d in decisions]
        diversity = slate_diversity(
            cset.embeddings[idx], [cset.candidates[i].category for i in idx], cset.available_categories
        )
        total = time.monotonic() - arrived
        first = decisions[0].at if decisions else total
        label = strategy.value
        self.metrics.observe_slate(label, diversity, total, first)
        if reason is not FallbackReason.NONE:
            self.metrics.fallbacks.labels(reason.value).inc()
        if tokens:
            self.metrics.model_tokens.observe(tokens)
        return SlateOutcome(
            cset=cset, decisions=tuple(decisions), strategy=strategy, reason=reason,
            diversity=diversity, time_to_first_item=first, total=total,
            model_id=self.settings.model_id if model_items else "", generated_tokens=tokens,
        )

    async def warmup(self) -> None:
        """One real slate through the engine before we report SERVING.

        It also fills the prefix cache with the catalogue context, so the
        first caller does not pay for it.
        """
        self.composer.attach_tokenizer(self.engine.tokenizer)
        if not self.settings.warmup:
            return
        snap = self.store.snapshot
        request = SlateRequest(request_id="warmup", query="a casual outfit",
                               k=min(3, len(snap)), candidates=None)
        cset = await self.candidates(request)
        plan = self.composer.plan(cset)
        picks = [i async for i in self.composer.compose(
            plan, request_id="warmup", temperature=0.0, seed=None, allow_warming=True)]
        if len(picks) != request.k:
            raise RuntimeError(f"warm-up slate has {len(picks)} items, expected {request.k}")



def _decide(cset: CandidateSet, index: int, source: Source, arrived: float) -> Decision:
    return Decision(index, cset.candidates[index], float(cset.scores[index]), source,
                    time.monotonic() - arrived)
