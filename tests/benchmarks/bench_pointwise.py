"""Pointwise path: scoring + DPP/MMR for K=10 of 1k candidates, and retrieval
over large synthetic catalogues (100k and 1M items, 384-d unit vectors).

    python tests/benchmarks/bench_pointwise.py [--repeats 300]

The functions timed are the server's own (slatewise.pointwise.select and
slatewise.retrieval.Retriever), in-process, single request at a time.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from common import machine, median, pct, table

D = 384


def unit(rng, n):
    x = rng.standard_normal((n, D), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def clustered(rng, n, centres):
    """Unit vectors around topic centres, like real item embeddings (cosine to
    the centre about 0.78); uniform random vectors have no neighbourhoods at
    all and are the worst case for any index."""
    x = centres[rng.integers(0, len(centres), n)] + 0.8 * rng.standard_normal((n, D), dtype=np.float32) / np.sqrt(D)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def timed(fn, repeats):
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main(repeats: int, sizes: list[int]) -> None:
    print(f"# machine: {machine()}")
    from slatewise.retrieval import Retriever
    from slatewise.pointwise.select import Limits, dpp, mmr, top_k

    rng = np.random.default_rng(0)
    rows = []
    cands = unit(rng, 1000)
    cats = rng.integers(0, 5, 1000)
    queries = unit(rng, repeats)
    it = iter(range(10**9))

    def score_and(select):
        def run():
            q = queries[next(it) % repeats]
            scores = cands @ q
            select(scores)
        return run

    for name, sel in [
        ("top-K", lambda s: top_k(s, 10)),
        ("top-K, max 2 per category", lambda s: top_k(s, 10, Limits(cats, [2] * 5))),
        ("MMR d=0.5", lambda s: mmr(cands, s, 10, 0.5)),
        ("fast greedy DPP d=0.5", lambda s: dpp(cands, s, 10, 0.5)),
        ("fast greedy DPP d=0.5, max 2 per category", lambda s: dpp(cands, s, 10, 0.5, Limits(cats, [2] * 5))),
    ]:
        ms = timed(score_and(sel), repeats)
        rows.append([f"score 1k candidates + {name} (K=10)", median(ms), pct(ms, 99)])

    centres = unit(rng, 2000)
    for n, kind in [(n, kind) for n in sizes for kind in ("clustered", "uniform")]:
        emb = clustered(rng, n, centres) if kind == "clustered" else unit(rng, n)
        t0 = time.perf_counter()
        retriever = Retriever(emb)
        build = time.perf_counter() - t0
        qs = clustered(rng, repeats, centres) if kind == "clustered" else unit(rng, repeats)
        j = iter(range(10**9))
        ms = timed(lambda: retriever.top(qs[next(j) % repeats], 50), repeats)
        # Recall of the approximate index against exact search, on 50 queries.
        recall = []
        for q in qs[:50]:
            exact = set(np.argsort(-(emb @ q))[:50].tolist())
            recall.append(len(exact & set(retriever.top(q, 50)[0].tolist())) / 50)
        rows.append([f"retrieve top-50 of {n:,} {kind} items ({retriever.kind}, built in {build:.1f} s, "
                     f"recall@50 {np.mean(recall):.3f})", median(ms), pct(ms, 99)])
    print(table(["operation", "p50 ms", "p99 ms"], rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    args = parser.parse_args()
    main(args.repeats, args.sizes)
