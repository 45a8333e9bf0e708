"""Constrained top-K, MMR and fast greedy DPP over scored candidates.

pyversity (the maintained library we looked at first) implements the same
MMR and greedy-DPP kernels but cannot honour per-category caps or continue a
slate from items already committed (the partial-fallback case), so selection
lives here; tests check that without constraints we pick what pyversity picks.
Caps form a partition matroid, so masking full categories at each greedy step
never strands the slate short of K when the request was feasible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

EPS = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class Limits:
    """Per-category caps: ``caps[c]`` for category index c, 0 = unlimited."""

    categories: np.ndarray  # int, one per candidate
    caps: Sequence[int] = ()

    def cap(self, category: int, k: int) -> int:
        return self.caps[category] if category < len(self.caps) and self.caps[category] > 0 else k


class _Picker:
    """Shared bookkeeping: what is taken, what each category still allows."""

    def __init__(self, n: int, k: int, limits: Limits | None, selected: Sequence[int]):
        self.k = k
        self.limits = limits
        self.available = np.ones(n, dtype=bool)
        self.counts: dict[int, int] = {}
        self.order: list[int] = []
        for i in selected:
            self.take(int(i))

    def take(self, i: int) -> None:
        self.order.append(i)
        self.available[i] = False
        if self.limits is not None:
            c = int(self.limits.categories[i])
            self.counts[c] = self.counts.get(c, 0) + 1
            if self.counts[c] >= self.limits.cap(c, self.k):
                self.available &= self.limits.categories != c

    @property
    def remaining(self) -> int:
        return self.k - len(self.order)


def top_k(scores: np.ndarray, k: int, limits: Limits | None = None,
          selected: Sequence[int] = ()) -> list[int]:
    picker = _Picker(len(scores), k, limits, selected)
    for i in np.argsort(-scores, kind="stable"):
        if picker.remaining == 0:
            break
        if picker.available[i]:
            picker.take(int(i))
    return picker.order


def mmr(embeddings: np.ndarray, scores: np.ndarray, k: int, diversity: float,
        limits: Limits | None = None, selected: Sequence[int] = ()) -> list[int]:
    """argmax (1-d)*score - d*max cosine to the slate so far (cosine clipped
    at 0: an unrelated item earns no bonus for being opposite)."""
    picker = _Picker(len(scores), k, limits, selected)
    max_sim = np.full(len(scores), -np.inf, dtype=np.float32)

    def sim(i: int) -> np.ndarray:
        return np.clip(embeddings @ embeddings[i], 0.0, 1.0)

    for i in picker.order:
        np.maximum(max_sim, sim(i), out=max_sim)
    while picker.remaining > 0 and picker.available.any():
        penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
        gain = (1 - diversity) * scores - diversity * penalty
        gain = np.where(picker.available, gain, -np.inf)
        best = int(np.argmax(gain))
        picker.take(best)
        np.maximum(max_sim, sim(best), out=max_sim)
    return picker.order


class GreedyDpp:
    """Fast greedy MAP inference for a DPP, one pick at a time (Chen et al., 2018).

    Kernel L = diag(w) S diag(w): ``weights`` w carry quality, ``kernel_row(j)``
    returns row j of the similarity S. ``residual[i]`` is item i's marginal
    gain in det(L) given the picks so far; incremental Cholesky keeps each
    pick O(n * k). Stepwise so that the engine's logits processor can choose
    item by item under the automaton (decoding.masking) with the same
    arithmetic as :func:`dpp`.
    """

    def __init__(self, weights: np.ndarray, kernel_row, k: int) -> None:
        self.weights = weights.astype(np.float32)
        self.kernel_row = kernel_row
        self.residual = self.weights * self.weights + EPS
        self.components = np.zeros((len(weights), max(k, 1)), dtype=np.float32)
        self.steps = 0

    def add(self, j: int) -> None:
        if self.steps >= self.components.shape[1]:
            return  # the K-th pick: nothing after it needs a residual
        w, step = self.weights, self.steps
        best_score = float(max(self.residual[j], EPS))
        sim = w * self.kernel_row(j) * w[j]
        proj = self.components[:, :step] @ self.components[j, :step] if step else 0.0
        update = (sim - proj) / (np.sqrt(best_score) + EPS)
        self.components[:, step] = update
        self.residual = np.maximum(self.residual - update * update, 0.0)
        self.steps += 1


def dpp_weights(quality: np.ndarray, beta: float) -> np.ndarray:
    """w = exp(beta * zscore(quality)): pyversity's kernel weights."""
    q = quality.astype(np.float32)
    return np.exp(beta * (q - q.mean()) / (q.std() + EPS)).astype(np.float32)


def dpp(embeddings: np.ndarray, scores: np.ndarray, k: int, diversity: float,
        limits: Limits | None = None, selected: Sequence[int] = (), scale: float = 1.0) -> list[int]:
    """Greedy DPP over cosine similarity with w = exp(beta * zscore(score)),
    beta = (1 - diversity) * scale: pyversity's kernel, so the two agree."""
    if diversity <= 0:
        return top_k(scores, k, limits, selected)
    state = GreedyDpp(dpp_weights(scores, (1 - diversity) * scale), lambda j: embeddings @ embeddings[j], k)
    pending = list(selected)
    picker = _Picker(len(scores), k, limits, ())
    while picker.remaining > 0:
        if pending:
            best = int(pending.pop(0))
        else:
            masked = np.where(picker.available, state.residual, -np.inf)
            best = int(np.argmax(masked))
            if not np.isfinite(masked[best]):
                break
        picker.take(best)
        if picker.remaining == 0:
            break
        state.add(best)
    return picker.order


def select(method: str, embeddings: np.ndarray, scores: np.ndarray, k: int, diversity: float,
           limits: Limits | None = None, selected: Sequence[int] = ()) -> list[int]:
    """Pick K candidate indices (continuing ``selected`` if given)."""
    if diversity <= 0:
        return top_k(scores, k, limits, selected)
    if method == "mmr":
        return mmr(embeddings, scores, k, diversity, limits, selected)
    return dpp(embeddings, scores, k, diversity, limits, selected)
