"""From a validated request to the scored candidate set both strategies share.

Scores are pointwise: the caller's upstream score when given, else the cosine
between the context embedding (query and attributes, nudged by the history)
and the item embedding. With no candidates in the request, the top-N
catalogue items by that score are retrieved.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slatewise.catalogue.items import item_text
from slatewise.catalogue.store import CatalogueSnapshot
from slatewise.decoding.automaton import is_feasible
from slatewise.domain import Candidate, SlateRequest
from slatewise.embeddings import Embedder
from slatewise.errors import InvalidRequest
from slatewise.pointwise.select import Limits
from slatewise.slate_metrics import DiversityTally, SlateDiversity, slate_diversity

HISTORY_WEIGHT = 0.5


@dataclass(frozen=True, eq=False)
class CandidateSet:
    request: SlateRequest
    snapshot: CatalogueSnapshot
    candidates: tuple[Candidate, ...]
    embeddings: np.ndarray  # (n, d) unit rows
    scores: np.ndarray  # (n,) pointwise relevance
    category_index: np.ndarray  # (n,) int
    category_names: tuple[str, ...]
    caps: tuple[int, ...]  # per category index, 0 = unlimited
    retrieved: bool
    # Unit text embedding of the query (and context attributes); None without text.
    query_vector: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.candidates)

    @property
    def limits(self) -> Limits:
        return Limits(self.category_index, self.caps)

    @property
    def available_categories(self) -> int:
        return len(self.category_names)

    def diversity_of(self, indices: list[int]) -> SlateDiversity:
        """Diversity metrics of a slate given as candidate indices."""
        return slate_diversity(self.embeddings[indices], [self.candidates[i].category for i in indices],
                               self.available_categories)

    def tally(self) -> DiversityTally:
        """diversity_of, kept up as a slate's items arrive (``add`` an index)."""
        return DiversityTally(self.embeddings, lambda i: self.candidates[i].category, self.available_categories)

    def compare(self, ours: list[int], theirs: list[int]) -> SlateComparison:
        """Two slates for this request (the model's and pointwise, or a
        hot-swap candidate's and the serving model's): how much of ours is in
        theirs, and our diversity minus theirs per metric."""
        a, b = self.diversity_of(ours), self.diversity_of(theirs)
        return SlateComparison(
            overlap=len(set(ours) & set(theirs)) / len(ours),
            diversity_delta={"intra_list_diversity": a.intra_list_diversity - b.intra_list_diversity,
                             "category_coverage": a.category_coverage - b.category_coverage,
                             "redundancy": a.redundancy - b.redundancy})


@dataclass(frozen=True)
class SlateComparison:
    overlap: float
    diversity_delta: dict[str, float]


def query_text(request: SlateRequest) -> str:
    """The request's text: its query, then its context attributes."""
    parts = [request.query.strip()] + [
        f"{k} {v}" for k, v in sorted(request.context_attributes.items())
    ]
    return " ".join(p for p in parts if p)


def context_vector(request: SlateRequest, snapshot: CatalogueSnapshot, embedder: Embedder) -> np.ndarray:
    text = query_text(request)
    vec = embedder.encode_query(text) if text else np.zeros(embedder.dim, dtype=np.float32)
    history = [snapshot.index[h] for h in request.history_ids if h in snapshot.index]
    if history:
        hist = snapshot.embeddings[history].mean(axis=0)
        vec = vec + HISTORY_WEIGHT * hist if text else hist
    norm = float(np.linalg.norm(vec))
    return (vec / norm).astype(np.float32) if norm > 0 else vec.astype(np.float32)


def _retrieve(request: SlateRequest, snapshot: CatalogueSnapshot, ctx: np.ndarray,
              top_n: int) -> tuple[list[int], np.ndarray]:
    excluded = {snapshot.index[e] for e in request.exclude_ids if e in snapshot.index}
    n = max(top_n, request.k)
    idx, scores = snapshot.retriever.top(ctx, n + len(excluded))
    chosen = [int(i) for i in idx if int(i) not in excluded][:n]
    # Caps can make the top-N unable to fill K although the catalogue can:
    # then add each category's best items up to its cap (a full scan, but
    # only for such requests).
    cats = [snapshot.items[i].category for i in chosen]
    if not is_feasible(request.k, *_cat_caps(request, cats)):
        all_scores = snapshot.embeddings @ ctx
        extra: dict[str, int] = {}
        taken = set(chosen) | excluded
        for i in np.argsort(-all_scores, kind="stable"):
            i = int(i)
            if i in taken:
                continue
            cat = snapshot.items[i].category
            if extra.get(cat, 0) < (request.cap(cat) or request.k):
                extra[cat] = extra.get(cat, 0) + 1
                chosen.append(i)
    return chosen, (snapshot.embeddings[chosen] @ ctx).astype(np.float32)


def _cat_caps(request: SlateRequest, categories: list[str]) -> tuple[list[int], list[int]]:
    names = list(dict.fromkeys(categories))
    pos = {c: i for i, c in enumerate(names)}
    return [pos[c] for c in categories], [request.cap(c) for c in names]


def resolve(request: SlateRequest, snapshot: CatalogueSnapshot, embedder: Embedder,
            top_n: int) -> CandidateSet:
    """CPU-bound (embeddings): off the event loop, unless nothing else
    would wait for it (``Recommender._prepared``)."""
    ctx = context_vector(request, snapshot, embedder)
    if request.candidates is None:
        idx, scores = _retrieve(request, snapshot, ctx, top_n)
        cands = tuple(snapshot.candidate(i) for i in idx)
        embs = snapshot.embeddings[idx]
        retrieved = True
    else:
        cands = tuple(c for c in request.candidates if c.id not in request.exclude_ids)
        embs = _candidate_embeddings(cands, snapshot, embedder)
        # One product for all rows, then the caller's scores over it: a
        # product per candidate cost ~0.1 ms of 50-candidate requests.
        scores = (embs @ ctx).astype(np.float32)
        for i, c in enumerate(cands):
            if c.upstream_score is not None:
                scores[i] = c.upstream_score
        retrieved = False
    categories = [c.category for c in cands]
    cat_idx, caps = _cat_caps(request, categories)
    if request.k > len(cands):
        raise InvalidRequest([("k", f"is {request.k} but only {len(cands)} candidates remain after exclusions")])
    if not is_feasible(request.k, cat_idx, caps):
        raise InvalidRequest([(
            "constraints.max_per_category",
            f"no slate of {request.k} items fits the category limits with these candidates",
        )])
    names = tuple(dict.fromkeys(categories))
    text = query_text(request)
    return CandidateSet(
        request=request, snapshot=snapshot, candidates=cands, embeddings=embs,
        scores=np.asarray(scores, dtype=np.float32), category_index=np.array(cat_idx, dtype=np.int64),
        category_names=names, caps=tuple(caps), retrieved=retrieved,
        query_vector=embedder.encode_query(text) if text else None,  # cached by context_vector
    )


def _candidate_embeddings(cands, snapshot: CatalogueSnapshot, embedder: Embedder) -> np.ndarray:
    inline = [(i, c) for i, c in enumerate(cands) if c.catalogue_index is None]
    if not inline:  # catalogue items only: one gather
        return snapshot.embeddings[[c.catalogue_index for c in cands]].astype(np.float32, copy=False)
    out = np.zeros((len(cands), embedder.dim), dtype=np.float32)
    known = [i for i, c in enumerate(cands) if c.catalogue_index is not None]
    if known:
        out[known] = snapshot.embeddings[[cands[i].catalogue_index for i in known]]
    # Inline items are the caller's, not ours to keep: cached in memory only.
    vecs = embedder.encode_inline([item_text(c.title, c.category, dict(c.attributes)) for _, c in inline])
    out[[i for i, _ in inline]] = vecs
    return out
