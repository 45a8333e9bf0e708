"""Domain results -> protobuf messages."""

from __future__ import annotations

from slatewise.catalogue.store import CatalogueSnapshot
from slatewise.domain import Decision, FallbackReason, SlateRequest, Source, Strategy
from slatewise.proto import pb
from slatewise.recommender import SlateOutcome

STRATEGY = {
    Strategy.MODEL: pb.STRATEGY_MODEL,
    Strategy.POINTWISE: pb.STRATEGY_POINTWISE,
    Strategy.PARTIAL: pb.STRATEGY_PARTIAL,
    Strategy.FALLBACK: pb.STRATEGY_FALLBACK,
    Strategy.AUTO: pb.STRATEGY_AUTO,
}
REASON = {r: getattr(pb, f"FALLBACK_REASON_{r.name}") for r in FallbackReason if r is not FallbackReason.NONE}
REASON[FallbackReason.NONE] = pb.FALLBACK_REASON_UNSPECIFIED
SOURCE = {Source.MODEL: pb.ITEM_SOURCE_MODEL, Source.FALLBACK: pb.ITEM_SOURCE_FALLBACK}


def slate_item(decision: Decision, position: int) -> pb.SlateItem:
    cand = decision.item
    return pb.SlateItem(
        item_id=cand.id, position=position, source=SOURCE[decision.source],
        score=decision.score, category=cand.category, title=cand.title,
    )


def slate(outcome: SlateOutcome, request: SlateRequest, items: list[pb.SlateItem] | None = None) -> pb.Slate:
    """``items``: the decisions already converted, in order (as they were
    streamed); the rest are converted here."""
    items = list(items or ())
    items += [slate_item(d, i) for i, d in enumerate(outcome.decisions[len(items):], len(items))]
    return pb.Slate(
        request_id=request.request_id,
        slate_id=request.slate_id,
        items=items,
        strategy=STRATEGY[outcome.strategy],
        fallback_reason=REASON[outcome.reason],
        diversity=pb.DiversityMetrics(
            intra_list_diversity=outcome.diversity.intra_list_diversity,
            category_coverage=outcome.diversity.category_coverage,
            redundancy=outcome.diversity.redundancy,
        ),
        timings=pb.Timings(time_to_first_item_seconds=outcome.time_to_first_item,
                           total_seconds=outcome.total),
        model_id=outcome.model_id,
        catalogue_version=outcome.cset.snapshot.version,
        generated_tokens=outcome.generated_tokens,
    )


def catalogue_info(snap: CatalogueSnapshot) -> pb.CatalogueInfo:
    return pb.CatalogueInfo(size=len(snap), version=snap.version, categories=dict(snap.categories))
