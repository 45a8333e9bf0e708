"""Building RecommendRequest messages from plain Python values."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from slatewise_client.pb import slate_pb2 as pb

OVERLOAD_POLICIES = {
    "fallback": pb.OVERLOAD_POLICY_FALLBACK,
    "reject": pb.OVERLOAD_POLICY_REJECT,
}
STRATEGIES = {
    "auto": pb.STRATEGY_AUTO,
    "model": pb.STRATEGY_MODEL,
    "pointwise": pb.STRATEGY_POINTWISE,
}


def build_request(
    query: str = "",
    k: int = 10,
    *,
    candidates: Iterable[str | Mapping] = (),
    strategy: str = "auto",
    diversity: float = 0.0,
    max_per_category: int = 0,
    exclude_ids: Iterable[str] = (),
    history: Iterable[str] = (),
    attributes: Mapping[str, str] | None = None,
    user_id: str = "",
    temperature: float = 0.0,
    seed: int | None = None,
    relevance_prior: float | None = None,
    request_id: str = "",
    overload_policy: str = "fallback",
    slate_id: str = "",
) -> pb.RecommendRequest:
    """Candidates are catalogue ids (str) or inline items (dicts with id, title,
    category, attributes and optional score)."""
    request = pb.RecommendRequest(
        request_id=request_id,
        slate_id=slate_id,
        context=pb.Context(
            query=query,
            user_id=user_id,
            history_item_ids=list(history),
            attributes=dict(attributes or {}),
        ),
        k=k,
        constraints=pb.Constraints(
            max_per_category=max_per_category, exclude_ids=list(exclude_ids)
        ),
        diversity=diversity,
        strategy=STRATEGIES[strategy],
        temperature=temperature,
        overload_policy=OVERLOAD_POLICIES[overload_policy],
    )
    if seed is not None:
        request.seed = seed
    if relevance_prior is not None:
        request.relevance_prior = relevance_prior
    for cand in candidates:
        if isinstance(cand, str):
            request.candidates.add(item_id=cand)
            continue
        item = pb.Item(
            id=str(cand["id"]),
            title=str(cand.get("title", "")),
            category=str(cand.get("category", "")),
            attributes={str(k): str(v) for k, v in (cand.get("attributes") or {}).items()},
        )
        if cand.get("score") is not None:
            item.score = float(cand["score"])
        request.candidates.add(item=item)
    return request


FEEDBACK_TYPES = {
    "impression": pb.FEEDBACK_TYPE_IMPRESSION,
    "click": pb.FEEDBACK_TYPE_CLICK,
    "add_to_cart": pb.FEEDBACK_TYPE_ADD_TO_CART,
    "purchase": pb.FEEDBACK_TYPE_PURCHASE,
    "dismiss": pb.FEEDBACK_TYPE_DISMISS,
}


def build_event(event_id: str, slate_id: str, type: str, item_ids: Iterable[str] = (), *,
                positions: Iterable[int] = (), timestamp: float = 0.0, user_id: str = "") -> pb.FeedbackEvent:
    """A feedback event about a served slate; ``type`` is one of FEEDBACK_TYPES."""
    if type not in FEEDBACK_TYPES:
        raise ValueError(f"type must be one of {', '.join(FEEDBACK_TYPES)}, not {type!r}")
    return pb.FeedbackEvent(event_id=event_id, slate_id=slate_id, type=FEEDBACK_TYPES[type],
                            item_ids=list(item_ids), positions=list(positions), timestamp=timestamp,
                            user_id=user_id)
