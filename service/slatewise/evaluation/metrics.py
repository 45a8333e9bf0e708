"""Per-slate quality metrics, computed the same way for every strategy.

Everything is recomputed here from the case (categories, scores) and from
item embeddings made locally with the server's embedding model on the
server's item text, so a strategy served by the model, by the pointwise path
or re-ranked locally is measured with one ruler.

Relevance is binary: an item is relevant iff the case lists it. Metrics that
need relevance (nDCG, hit rate) are NaN for cases that list none, and so is
the mean upstream score of a slate none of whose items carries a score;
aggregates skip NaNs.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass

import numpy as np

NAN = math.nan


def _discount(position: int) -> float:
    return 1.0 / math.log2(position + 2)


def ndcg_at_k(slate: Sequence[str], relevant: Collection[str], k: int | None = None) -> float:
    """Binary-relevance nDCG@K: DCG of the slate's first K items over the DCG
    of an ideal slate (min(K, |relevant|) relevant items on top). K defaults
    to the slate's length. NaN when nothing is relevant."""
    if not relevant:
        return NAN
    k = len(slate) if k is None else k
    rel = set(relevant)
    dcg = sum(_discount(i) for i, item in enumerate(slate[:k]) if item in rel)
    ideal = sum(_discount(i) for i in range(min(k, len(rel))))
    return dcg / ideal if ideal > 0 else NAN


def hit_rate(slate: Sequence[str], relevant: Collection[str], k: int | None = None) -> float:
    """1 if any of the slate's first K items is relevant, else 0 (NaN when
    nothing is relevant). Averaged over cases it is the share of cases hit."""
    if not relevant:
        return NAN
    k = len(slate) if k is None else k
    rel = set(relevant)
    return 1.0 if any(item in rel for item in slate[:k]) else 0.0


def intra_list_diversity(embeddings: np.ndarray) -> float:
    """Mean pairwise (1 - cosine) over unit-norm rows; 0 for fewer than two."""
    emb = np.asarray(embeddings, dtype=np.float64)
    n = len(emb)
    if n < 2:
        return 0.0
    sims = emb @ emb.T
    iu = np.triu_indices(n, 1)
    return float(np.mean(1.0 - sims[iu]))


def category_coverage(slate_categories: Sequence[str], candidate_categories: Collection[str],
                      k: int | None = None) -> float:
    """Distinct categories in the slate over the most it could have covered:
    min(K, distinct categories among the candidates)."""
    if not slate_categories:
        return 0.0
    k = len(slate_categories) if k is None else k
    possible = min(k, len(set(candidate_categories)))
    return min(1.0, len(set(slate_categories)) / max(1, possible))


def redundancy(slate_categories: Sequence[str]) -> float:
    """Share of the slate taken by its most common category (1/K best, 1 worst)."""
    if not slate_categories:
        return 0.0
    return max(Counter(slate_categories).values()) / len(slate_categories)


def mean_score(scores: Sequence[float | None]) -> float:
    """Mean of the upstream scores that are present; NaN if none is."""
    present = [float(s) for s in scores if s is not None]
    return sum(present) / len(present) if present else NAN


@dataclass(frozen=True)
class SlateQuality:
    ndcg: float
    hit: float
    ild: float
    coverage: float
    redundancy: float
    mean_score: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


METRIC_NAMES = tuple(SlateQuality.__dataclass_fields__)


def slate_quality(slate_ids: Sequence[str], *, k: int, relevant: Collection[str],
                  categories: dict[str, str], scores: dict[str, float | None],
                  embeddings: dict[str, np.ndarray]) -> SlateQuality:
    """All metrics of one slate. ``categories``, ``scores`` and ``embeddings``
    map every candidate id of the case to its category, upstream score (or
    None) and unit-norm embedding."""
    slate = list(slate_ids)
    slate_cats = [categories[i] for i in slate]
    emb = (np.stack([embeddings[i] for i in slate]) if slate
           else np.zeros((0, 1), dtype=np.float32))
    return SlateQuality(
        ndcg=ndcg_at_k(slate, relevant, k),
        hit=hit_rate(slate, relevant, k),
        ild=intra_list_diversity(emb),
        coverage=category_coverage(slate_cats, categories.values(), k),
        redundancy=redundancy(slate_cats),
        mean_score=mean_score([scores[i] for i in slate]),
    )


def nanmean(values: Sequence[float]) -> float:
    """Mean ignoring NaNs; NaN if nothing is left."""
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else NAN


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else NAN
