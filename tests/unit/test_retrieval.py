"""Retrieval: exact below the threshold, faiss IVF above it."""

from __future__ import annotations

import numpy as np

from slatewise.retrieval import Retriever


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_exact_matches_a_full_sort():
    rng = np.random.default_rng(1)
    emb = _unit(rng.normal(size=(500, 16)))
    q = _unit(rng.normal(size=(1, 16)))[0]
    idx, scores = Retriever(emb).top(q, 20)
    assert idx.tolist() == np.argsort(-(emb @ q), kind="stable")[:20].tolist()
    assert np.all(np.diff(scores) <= 0)
    assert len(Retriever(emb).top(q, 10_000)[0]) == 500


def test_ivf_finds_the_neighbours_of_clustered_data():
    rng = np.random.default_rng(2)
    centres = _unit(rng.normal(size=(40, 32)))
    emb = _unit(centres[rng.integers(0, 40, 8000)] + 0.15 * rng.normal(size=(8000, 32)))
    retriever = Retriever(emb, exact_max_items=1000, nprobe=8)
    assert retriever.kind.startswith("faiss IVF")
    recalls = []
    for q in _unit(centres + 0.1 * rng.normal(size=centres.shape))[:20]:
        exact = set(np.argsort(-(emb @ q))[:20].tolist())
        got = retriever.top(q, 20)[0].tolist()
        recalls.append(len(exact & set(got)) / 20)
    assert np.mean(recalls) > 0.9
