"""Protobuf request -> SlateRequest, or every reason it is not acceptable.

Checks that need only the message and the limits happen here, before any work
is spent; checks that need the candidate set (caps feasible, K not above the
candidates left after exclusions) happen in candidates.py, with the same error.
"""

from __future__ import annotations

import math
import uuid

from slatewise.catalogue.store import CatalogueSnapshot
from slatewise.config import Settings
from slatewise.domain import Candidate, SlateRequest, Strategy
from slatewise.errors import InvalidRequest
from slatewise.proto import pb

_STRATEGIES = {
    pb.STRATEGY_UNSPECIFIED: Strategy.AUTO,
    pb.STRATEGY_AUTO: Strategy.AUTO,
    pb.STRATEGY_MODEL: Strategy.MODEL,
    pb.STRATEGY_POINTWISE: Strategy.POINTWISE,
}


class _Checker:
    def __init__(self, limits: Settings) -> None:
        self.limits = limits
        self.violations: list[tuple[str, str]] = []

    def add(self, field: str, description: str) -> None:
        self.violations.append((field, description))

    def text(self, field: str, value: str, *, required: bool = False, limit: int | None = None) -> None:
        limit = limit or self.limits.max_text_chars
        if required and not value.strip():
            self.add(field, "must not be empty")
        if len(value) > limit:
            self.add(field, f"is {len(value)} characters, the limit is {limit}")

    def attributes(self, field: str, attrs) -> None:
        if len(attrs) > self.limits.max_attributes:
            self.add(field, f"has {len(attrs)} entries, the limit is {self.limits.max_attributes}")
            return
        for key, value in attrs.items():
            self.text(f"{field}[{key[:32]}]", key, required=True)
            self.text(f"{field}[{key[:32]}]", value)


def validate(request: pb.RecommendRequest, snapshot: CatalogueSnapshot,
             limits: Settings) -> SlateRequest:
    check = _Checker(limits)
    size = request.ByteSize()
    if size > limits.max_request_bytes:
        raise InvalidRequest([("request", f"is {size} bytes, the limit is {limits.max_request_bytes}")])
    ctx = request.context
    check.text("context.query", ctx.query, limit=limits.max_query_chars)
    check.text("context.user_id", ctx.user_id)
    check.text("request_id", request.request_id)
    check.text("slate_id", request.slate_id)
    check.attributes("context.attributes", ctx.attributes)
    if len(ctx.history_item_ids) > limits.max_history:
        check.add("context.history_item_ids",
                  f"has {len(ctx.history_item_ids)} ids, the limit is {limits.max_history}")
    else:
        for i, hid in enumerate(ctx.history_item_ids):
            if hid not in snapshot.index:
                check.add(f"context.history_item_ids[{i}]", f"unknown catalogue id {hid[:64]!r}")

    if request.k <= 0:
        check.add("k", "must be at least 1")
    elif request.k > limits.max_k:
        check.add("k", f"is {request.k}, the limit is {limits.max_k}")
    if not (0.0 <= request.diversity <= 1.0) or math.isnan(request.diversity):
        check.add("diversity", "must be between 0 and 1")
    if not (0.0 <= request.temperature <= 2.0) or math.isnan(request.temperature):
        check.add("temperature", "must be between 0 and 2")
    if request.HasField("relevance_prior") and (
        not math.isfinite(request.relevance_prior) or not 0.0 <= request.relevance_prior <= 10.0
    ):
        check.add("relevance_prior", "must be between 0 and 10")
    if request.strategy not in _STRATEGIES:
        check.add("strategy", "must be AUTO, MODEL or POINTWISE")
    if request.overload_policy not in (pb.OVERLOAD_POLICY_UNSPECIFIED, pb.OVERLOAD_POLICY_FALLBACK,
                                       pb.OVERLOAD_POLICY_REJECT):
        check.add("overload_policy", "must be FALLBACK or REJECT")

    cons = request.constraints
    if len(cons.exclude_ids) > limits.max_exclude:
        check.add("constraints.exclude_ids",
                  f"has {len(cons.exclude_ids)} ids, the limit is {limits.max_exclude}")
    if len(cons.category_limits) > limits.max_candidates:
        check.add("constraints.category_limits", "has too many entries")
    for cat in cons.category_limits:
        check.text(f"constraints.category_limits[{cat[:32]}]", cat, required=True)

    candidates = _candidates(request, snapshot, check)
    if check.violations:
        raise InvalidRequest(check.violations)
    return SlateRequest(
        request_id=request.request_id or uuid.uuid4().hex,
        slate_id=request.slate_id or uuid.uuid4().hex,
        query=ctx.query,
        k=request.k,
        candidates=candidates,
        user_id=ctx.user_id,
        history_ids=tuple(ctx.history_item_ids),
        context_attributes=dict(ctx.attributes),
        max_per_category=cons.max_per_category,
        category_limits=dict(cons.category_limits),
        exclude_ids=frozenset(cons.exclude_ids),
        diversity=float(request.diversity),
        strategy=_STRATEGIES.get(request.strategy, Strategy.AUTO),
        temperature=float(request.temperature),
        seed=request.seed if request.HasField("seed") else None,
        relevance_prior=request.relevance_prior if request.HasField("relevance_prior") else None,
        reject_on_overload=request.overload_policy == pb.OVERLOAD_POLICY_REJECT,
    )


def _candidates(request: pb.RecommendRequest, snapshot: CatalogueSnapshot,
                check: _Checker) -> tuple[Candidate, ...] | None:
    limits = check.limits
    if not request.candidates:
        return None
    if len(request.candidates) > limits.max_candidates:
        check.add("candidates", f"has {len(request.candidates)} entries, the limit is {limits.max_candidates}")
        return None
    out: list[Candidate] = []
    seen: dict[str, int] = {}
    index, items = snapshot.index, snapshot.items
    for i, cand in enumerate(request.candidates):
        kind = cand.WhichOneof("kind")
        if kind == "item_id":
            cid = cand.item_id
            idx = index.get(cid)
            if idx is None:
                check.add(f"candidates[{i}].item_id", f"unknown catalogue id {cid[:64]!r}")
                continue
            if cand.HasField("score"):
                it = items[idx]
                new = Candidate(it.id, it.title, it.category, it.attributes, cand.score, idx)
            else:
                new = snapshot.candidate(idx)
        elif kind is None:
            check.add(f"candidates[{i}]", "must set item_id or item")
            continue
        else:
            field = f"candidates[{i}]"
            item = cand.item
            check.text(f"{field}.item.id", item.id, required=True)
            check.text(f"{field}.item.title", item.title, required=True)
            check.text(f"{field}.item.category", item.category, required=True)
            check.attributes(f"{field}.item.attributes", item.attributes)
            cid = item.id
            score = item.score if item.HasField("score") else None
            new = Candidate(cid, item.title, item.category, dict(item.attributes), score, None)
        if new.upstream_score is not None and not math.isfinite(new.upstream_score):
            check.add(f"candidates[{i}].score", "must be a finite number")
        if cid in seen:
            check.add(f"candidates[{i}]", f"duplicate candidate id {cid[:64]!r} (also candidates[{seen[cid]}])")
            continue
        seen[cid] = i
        out.append(new)
    return tuple(out)
