"""Diversity of a finished slate, reported with every response and exported."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
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
    # The sum of pairwise cosines from two sums (|sum|^2 - sum of |x|^2,
    # halved), not the k x k matrix.
    total = embeddings.sum(axis=0, dtype=np.float64)
    squares = float(np.einsum("ij,ij->", embeddings, embeddings, dtype=np.float64))
    return _from_sums(len(categories), float(total @ total), squares, Counter(categories), available_categories)


class DiversityTally:
    """slate_diversity for a slate being written, kept up item by item
    (``add`` a row of ``embeddings``).

    A model slate's items arrive one engine step apart, with the server idle
    in between; folding each in as it arrives leaves almost nothing to
    compute after the last one, when the caller is waiting (computed then,
    the whole slate took 0.15-0.2 ms: numpy code that has sat idle runs
    several times slower than warm on these machines)."""

    def __init__(self, embeddings: np.ndarray, categories: Callable[[int], str],
                 available_categories: int) -> None:
        self.embeddings = embeddings
        self.category = categories
        self.available = available_categories
        self.total = np.zeros(embeddings.shape[1], dtype=np.float64)
        self.squares = 0.0
        self.counts: Counter[str] = Counter()

    def add(self, index: int) -> None:
        row = self.embeddings[index].astype(np.float64)
        self.total += row
        self.squares += float(row @ row)
        self.counts[self.category(index)] += 1

    def result(self) -> SlateDiversity:
        k = sum(self.counts.values())
        return _from_sums(k, float(self.total @ self.total), self.squares, self.counts, self.available)


def _from_sums(k: int, total_sq: float, squares: float, counts: Counter,
               available_categories: int) -> SlateDiversity:
    if k == 0:
        return SlateDiversity(0.0, 0.0, 0.0)
    ild = 1.0 - ((total_sq - squares) / 2) / (k * (k - 1) / 2) if k > 1 else 0.0
    coverage = len(counts) / max(1, min(k, available_categories))
    redundancy = max(counts.values()) / k
    return SlateDiversity(ild, min(1.0, coverage), redundancy)
