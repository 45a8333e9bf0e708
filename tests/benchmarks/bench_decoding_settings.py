"""Decoding settings compared on one server: relevance prior and diversity
pressure versus plain model decoding and the pointwise path.

Position bias: SmolLM2 tends to copy the listing (ten consecutive lines).
For each model slate we count consecutive picks that are adjacent, in order,
in the listed catalogue ("adjacency"); a slate copied from the listing scores
1.0, random picks from the catalogue about 1/180. "Mean listed position" is
where the picks sit in the listing (0 = top, 1 = bottom; 0.5 = no preference
for either end).

    python tests/benchmarks/bench_decoding_settings.py [--queries 24]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from common import machine, median, start_server, stop_server, table

QUERIES = ["casual outfit", "business meeting", "rainy autumn commute", "beach holiday",
           "gym session", "wedding guest", "winter hiking", "first date dinner",
           "weekend city break", "job interview", "music festival", "ski trip",
           "summer barbecue", "office party", "cold morning run", "art gallery opening",
           "camping weekend", "smart dinner", "airport travel day", "yoga class",
           "garden wedding", "snowy city walk", "tennis match", "graduation ceremony"]
SETTINGS = [
    ("model, no prior, diversity 0", dict(strategy="model", relevance_prior=0.0, diversity=0.0)),
    ("model, prior 1, diversity 0", dict(strategy="model", relevance_prior=1.0, diversity=0.0)),
    ("model, prior 2, diversity 0", dict(strategy="model", relevance_prior=2.0, diversity=0.0)),
    ("model, prior 2, diversity 0.5", dict(strategy="model", relevance_prior=2.0, diversity=0.5)),
    ("model, prior 2, diversity 1", dict(strategy="model", relevance_prior=2.0, diversity=1.0)),
    ("model, no prior, diversity 1", dict(strategy="model", relevance_prior=0.0, diversity=1.0)),
    ("pointwise top-K", dict(strategy="pointwise", diversity=0.0)),
    ("pointwise DPP, diversity 0.5", dict(strategy="pointwise", diversity=0.5)),
]


def listing_positions():
    """Listed line of each catalogue item, exactly as the server lays it out."""
    from transformers import AutoTokenizer

    from slatewise.catalogue.loader import embedded_catalogue_path, load_jsonl
    from slatewise.config import load_settings
    from slatewise.domain import Candidate
    from slatewise.model.handles import single_token_handles
    from slatewise.model.prepare import resolve_model
    from slatewise.model.prompt import PromptBuilder

    settings = load_settings([])
    tok = AutoTokenizer.from_pretrained(resolve_model(settings.model, settings.model_cache_dir))
    items = [Candidate(it.id, it.title, it.category, it.attributes, None, i)
             for i, it in enumerate(load_jsonl(embedded_catalogue_path()))]
    return PromptBuilder(tok, single_token_handles(tok)).context(items).position


def adjacency(ids, position) -> float:
    pairs = list(zip(ids, ids[1:]))
    return sum(position[b] == position[a] + 1 for a, b in pairs) / max(1, len(pairs))


def main(n_queries: int, k: int) -> None:
    from slatewise_client import SlateClient

    position = listing_positions()
    server = start_server(Path(tempfile.mkdtemp(prefix="slatewise-bench-")),
                          wait_for="slatewise.v1.Model", timeout=600)
    rows = []
    try:
        with SlateClient(server.target) as client:
            stats = {name: {"adj": [], "pos": [], "ild": [], "cov": [], "red": [], "score": [], "lat": []}
                     for name, _ in SETTINGS}
            for q in QUERIES[:n_queries]:
                for name, kw in SETTINGS:  # interleaved: every setting sees the same load
                    slate = client.recommend(q, k=k, deadline=120, **kw)
                    ids = [it.item_id for it in slate.items]
                    s = stats[name]
                    s["adj"].append(adjacency(ids, position))
                    s["pos"].append(float(np.mean([position[i] for i in ids])) / len(position))
                    s["ild"].append(slate.diversity.intra_list_diversity)
                    s["cov"].append(slate.diversity.category_coverage)
                    s["red"].append(slate.diversity.redundancy)
                    s["score"].append(float(np.mean([it.score for it in slate.items])))
                    s["lat"].append(slate.timings.total_seconds)
            for name, _ in SETTINGS:
                s = stats[name]
                rows.append([name, float(np.mean(s["adj"])), float(np.mean(s["pos"])), float(np.mean(s["ild"])),
                             float(np.mean(s["cov"])), float(np.mean(s["red"])),
                             float(np.mean(s["score"])), median(s["lat"])])
    finally:
        stop_server(server)
    print(f"# decoding settings: K={k}, {n_queries} queries, retrieval top-50 of the embedded catalogue")
    print(f"# machine: {machine()}")
    print(table(["setting", "listing adjacency", "mean listed position (0..1)", "ILD", "category coverage", "redundancy",
                 "mean pointwise score", "p50 latency s"], rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=24)
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args()
    main(args.queries, args.k)
