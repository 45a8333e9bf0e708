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
) -> pb.RecommendRequest:
    """Candidates are catalogue ids (str) or inline items (dicts with id, title,
    category, attributes and optional score)."""
    request = pb.RecommendRequest(
        request_id=request_id,
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
