"""Diversity of a finished slate, reported with every response and exported."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SlateDiversity:
    intra_list_diversity: float
    category_coverage: float
    redundancy: float


def slate_diversity(embeddings: np.ndarray, categories: Sequence[str],
                    available_categories: int) -> SlateDiversity:
    """ILD = mean pairwise (1 - cosine); coverage = distinct categories over
    the most the slate could have covered; redundancy = share of the most
    common category."""
    k = len(categories)
    if k == 0:
        return SlateDiversity(0.0, 0.0, 0.0)
    if k > 1:
        # The sum of pairwise cosines from two sums (|sum|^2 - sum of |x|^2,
        # halved), not the k x k matrix: computed before every answer leaves.
        total = embeddings.sum(axis=0, dtype=np.float64)
        pairs = (float(total @ total) - float(np.einsum("ij,ij->", embeddings, embeddings, dtype=np.float64))) / 2
        ild = 1.0 - pairs / (k * (k - 1) / 2)
    else:
        ild = 0.0
    counts = Counter(categories)
    coverage = len(counts) / max(1, min(k, available_categories))
    redundancy = max(counts.values()) / k
    return SlateDiversity(ild, min(1.0, coverage), redundancy)
