"""Top-N catalogue items by inner product with the context vector.

Up to ``exact_max_items`` the scan is exact (one matrix-vector product). Past
that, scanning every vector per request costs too much (1M x 384 floats is
1.5 GB of memory traffic), so faiss's IVF index scans only the ``nprobe``
clusters nearest to the query: approximate, with recall measured by
tests/benchmarks/bench_pointwise.py.
"""

from __future__ import annotations

import math

import numpy as np


class Retriever:
    def __init__(self, embeddings: np.ndarray, exact_max_items: int = 50_000, nprobe: int = 64,
                 seed: int = 0) -> None:
        self.embeddings = embeddings
        n, d = embeddings.shape
        if n <= exact_max_items:
            self.kind = "exact"
            self.index = None
            return
        import faiss

        nlist = max(64, int(math.sqrt(n)))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = embeddings[rng.choice(n, size=min(n, 64 * nlist), replace=False)]
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
        index.nprobe = min(nprobe, nlist)
        self.index = index
        self.kind = f"faiss IVF, {nlist} lists, nprobe {index.nprobe}"

    def top(self, query: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices, scores), best first; at most n."""
        n = min(n, len(self.embeddings))
        if self.index is None:
            scores = self.embeddings @ query
            if n < len(scores):
                part = np.argpartition(-scores, n - 1)[:n]
            else:
                part = np.arange(len(scores))
            order = part[np.argsort(-scores[part], kind="stable")]
            return order, scores[order]
        scores, idx = self.index.search(query.reshape(1, -1).astype(np.float32), n)
        keep = idx[0] >= 0
        return idx[0][keep], scores[0][keep]
