"""Pointwise selection: caps honoured, slates continued, and the same picks as
pyversity's reference MMR and greedy DPP when there are no constraints."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyversity
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slatewise.decoding.automaton import is_feasible
from slatewise.pointwise.select import Limits, dpp, mmr, select, top_k


def _data(seed: int, n: int = 60, d: int = 16):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, d)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    scores = rng.random(n).astype(np.float32)
    return emb, scores


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("diversity", [0.3, 0.7])
def test_mmr_matches_pyversity(seed, diversity):
    emb, scores = _data(seed)
    ours = mmr(emb, scores, 10, diversity)
    ref = pyversity.mmr(emb, scores, 10, diversity=diversity).indices.tolist()
    assert ours == ref


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("diversity", [0.3, 0.7])
def test_dpp_matches_pyversity(seed, diversity):
    emb, scores = _data(seed)
    ours = dpp(emb, scores, 10, diversity)
    ref = pyversity.dpp(emb, scores, 10, diversity=diversity).indices.tolist()
    assert ours == ref


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 12), cap=st.integers(1, 4),
       method=st.sampled_from(["top", "mmr", "dpp"]), diversity=st.floats(0.0, 1.0),
       preselect=st.integers(0, 3))
def test_constrained_selection_is_always_a_valid_slate(seed, k, cap, method, diversity, preselect):
    emb, scores = _data(seed, n=30)
    categories = np.random.default_rng(seed).integers(0, 5, size=30)
    caps = [cap] * 5
    if not is_feasible(k, categories.tolist(), caps):
        return
    limits = Limits(categories, caps)
    # Continue from a valid prefix, like a partial model slate.
    prefix = top_k(scores, min(preselect, k), limits)
    picks = (top_k(scores, k, limits, prefix) if method == "top"
             else select(method, emb, scores, k, diversity, limits, prefix))
    assert picks[: len(prefix)] == prefix
    assert len(picks) == k and len(set(picks)) == k
    assert max(Counter(categories[picks].tolist()).values()) <= cap


def test_diversity_spreads_near_duplicates():
    # Three near-identical high scorers and three distinct lower ones.
    base = np.eye(4, dtype=np.float32)
    emb = np.stack([base[0], base[0] * 0.99 + base[1] * 0.01, base[0] * 0.98 + base[1] * 0.02,
                    base[1], base[2], base[3]])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    scores = np.array([0.9, 0.89, 0.88, 0.6, 0.55, 0.5], dtype=np.float32)
    assert top_k(scores, 3) == [0, 1, 2]
    for method in ("mmr", "dpp"):
        picks = select(method, emb, scores, 3, 0.7)
        assert picks[0] == 0
        assert len({1, 2} & set(picks)) == 0, method
