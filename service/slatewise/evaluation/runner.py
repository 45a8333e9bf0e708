"""Run evaluation cases through a running service and score the slates.

Every case is sent once per *service strategy* (one request each, in turn, so
latencies are those of an otherwise idle client) and re-ranked once per
*local strategy* in this process with the server's own MMR / fast greedy DPP
functions. All slates are scored by :mod:`slatewise.evaluation.metrics`
against the case, never against what the server reports, so every strategy
is measured with the same ruler.

Requests carry the case's candidates inline, with their upstream scores.
History items are passed as ``history_item_ids`` when the server knows them
(catalogue ids); when it rejects them (INVALID_ARGUMENT on
``context.history_item_ids``) the case is resent, and from then on sent, with
their titles appended to the query ("Recently viewed: a; b"), the only other
way the API lets history reach the model and the pointwise scorer.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from slatewise.catalogue.items import item_text
from slatewise.evaluation.cases import CaseItem, EvalCase
from slatewise.evaluation.metrics import (
    METRIC_NAMES,
    SlateQuality,
    nanmean,
    percentile,
    slate_quality,
)
from slatewise.pointwise.select import dpp, mmr

# The server's context vector: query embedding + HISTORY_WEIGHT * mean history
# embedding (slatewise.candidates.HISTORY_WEIGHT), re-normalised.
HISTORY_WEIGHT = 0.5
MAX_QUERY_CHARS = 1000  # the server's default max_query_chars


# ---- strategies -------------------------------------------------------------

@dataclass(frozen=True)
class ServiceStrategy:
    """One request per case to the service."""

    name: str
    strategy: str  # "pointwise" | "model" | "auto"
    diversity: float = 0.0
    relevance_prior: float | None = None
    key: str = ""  # a short name --strategies accepts beside the row name

    kind = "service"

    def describe(self) -> str:
        prior = "" if self.relevance_prior is None else f", relevance_prior={self.relevance_prior:g}"
        return f"service: strategy={self.strategy.upper()}, diversity={self.diversity:g}{prior}"


@dataclass(frozen=True)
class LocalStrategy:
    """A re-ranking of the case's candidates computed in this process."""

    name: str
    method: str  # "mmr" | "dpp"
    diversity: float
    key: str = ""

    kind = "local"

    def describe(self) -> str:
        how = ("slatewise.pointwise.select.mmr on relevance min-max scaled to [0, 1] per case"
               if self.method == "mmr" else "slatewise.pointwise.select.dpp (fast greedy MAP)")
        return f"local: {how}, diversity={self.diversity:g}"


Strategy = ServiceStrategy | LocalStrategy


def default_strategies(diversity: float = 0.5, prior: float = 2.0) -> list[Strategy]:
    """The rows of the report. The model rows are whatever model the server
    serves (the text LLM or a trained slate model from ``slatewise serve
    --model DIR``): the report names it by the responses' ``model_id``."""
    d = f"d={diversity:g}"
    return [
        ServiceStrategy("pointwise", "pointwise", 0.0, key="pointwise"),
        ServiceStrategy(f"pointwise+DPP ({d})", "pointwise", diversity, key="pointwise+dpp"),
        ServiceStrategy(f"model (prior 0, {d})", "model", diversity, 0.0, key="model"),
        ServiceStrategy(f"model + prior (relevance_prior={prior:g}, {d})", "model", diversity, prior,
                        key="model+prior"),
        LocalStrategy(f"local MMR ({d})", "mmr", diversity, key="mmr"),
        LocalStrategy(f"local DPP ({d})", "dpp", diversity, key="dpp"),
    ]


def pick_strategies(strategies: Sequence[Strategy], wanted: Sequence[str]) -> list[Strategy]:
    """The strategies named in ``wanted`` (row names as in the table, or their
    short keys, case-insensitive), in table order. Raises ValueError naming
    the unknown ones and listing the valid names."""
    def norm(text: str) -> str:
        return " ".join(text.split()).lower()

    by_name: dict[str, Strategy] = {}
    for s in strategies:
        by_name[norm(s.name)] = s
        if s.key:
            by_name[norm(s.key)] = s
    unknown = [w for w in wanted if norm(w) not in by_name]
    if unknown:
        valid = "; ".join(f"{s.name!r}" + (f" ({s.key})" if s.key else "") for s in strategies)
        raise ValueError(f"unknown strateg{'ies' if len(unknown) > 1 else 'y'} "
                         f"{', '.join(repr(u) for u in unknown)}; valid: {valid}")
    chosen = {id(by_name[norm(w)]) for w in wanted}
    return [s for s in strategies if id(s) in chosen]


# ---- results ------------------------------------------------------------------

@dataclass
class SlateResult:
    case_id: str
    strategy: str
    slate: list[str] = field(default_factory=list)
    quality: SlateQuality | None = None
    served: str = ""  # "model", "partial", "fallback", "pointwise", "local" or "error"
    fallback_reason: str = ""
    latency_s: float | None = None  # client round trip
    server_s: float | None = None  # Slate.timings.total_seconds
    error: str = ""
    model_id: str = ""  # Slate.model_id: set when the model wrote items of the slate

    def as_dict(self) -> dict:
        out = {
            "case": self.case_id, "strategy": self.strategy, "slate": self.slate,
            "served": self.served, "fallback_reason": self.fallback_reason or None,
            "latency_s": self.latency_s, "server_s": self.server_s, "error": self.error or None,
            "model_id": self.model_id or None,
        }
        for name in METRIC_NAMES:
            out[name] = _json_float(getattr(self.quality, name)) if self.quality else None
        return out


@dataclass
class StrategySummary:
    name: str
    kind: str
    description: str
    cases: int  # slates scored
    served: Counter
    fallback_reasons: Counter
    means: dict[str, float]
    p50_latency_s: float
    p50_server_s: float
    model_ids: Counter = field(default_factory=Counter)  # slates per responding model_id

    def as_dict(self) -> dict:
        return {
            "name": self.name, "kind": self.kind, "description": self.description,
            "cases": self.cases, "served": dict(self.served),
            "fallback_reasons": dict(self.fallback_reasons), "model_ids": dict(self.model_ids),
            **{name: _json_float(v) for name, v in self.means.items()},
            "p50_latency_s": _json_float(self.p50_latency_s),
            "p50_server_s": _json_float(self.p50_server_s),
        }


def _json_float(v: float | None) -> float | None:
    return None if v is None or math.isnan(v) else round(float(v), 6)


# ---- per-case preparation --------------------------------------------------------

def text_of(item: CaseItem) -> str:
    return item_text(item.title, item.category, dict(item.attributes))


@dataclass
class PreparedCase:
    case: EvalCase
    embeddings: dict[str, np.ndarray]  # candidate id -> unit vector
    matrix: np.ndarray  # (n, d) in candidate order
    history_matrix: np.ndarray  # (h, d)
    history_as_ids: bool = True  # until the server rejects the ids

    @property
    def categories(self) -> dict[str, str]:
        return {c.id: c.category for c in self.case.candidates}

    @property
    def scores(self) -> dict[str, float | None]:
        return {c.id: c.score for c in self.case.candidates}

    def query(self) -> str:
        """The query as sent: with history titles appended when history
        cannot travel as catalogue ids."""
        query = self.case.context.query.strip()
        history = self.case.context.history
        if not history or self.history_as_ids:
            return query
        head = f"{query}. Recently viewed: " if query else "Recently viewed: "
        titles: list[str] = []
        for item in reversed(history):  # most recent last: keep the newest when cutting
            title = " ".join(item.title.split())
            if len(head) + len("; ".join([title, *titles])) > MAX_QUERY_CHARS:
                break
            titles.insert(0, title)
        return head + "; ".join(titles) if titles else query

    def history_ids(self) -> list[str]:
        return [h.id for h in self.case.context.history] if self.history_as_ids else []

    def quality(self, slate: Sequence[str]) -> SlateQuality:
        return slate_quality(slate, k=self.case.k, relevant=self.case.relevant,
                             categories=self.categories, scores=self.scores,
                             embeddings=self.embeddings)


def prepare_cases(cases: Sequence[EvalCase], embedder) -> list[PreparedCase]:
    """Embed every candidate and history item (each distinct text once)."""
    texts: list[str] = []
    for case in cases:
        texts += [text_of(c) for c in case.candidates] + [text_of(h) for h in case.context.history]
    unique = list(dict.fromkeys(texts))
    vectors = dict(zip(unique, embedder.encode(unique))) if unique else {}
    dim = int(getattr(embedder, "dim", 0) or (len(next(iter(vectors.values()))) if vectors else 1))
    out = []
    for case in cases:
        emb = {c.id: vectors[text_of(c)] for c in case.candidates}
        matrix = np.stack([emb[c.id] for c in case.candidates]).astype(np.float32)
        hist = (np.stack([vectors[text_of(h)] for h in case.context.history]).astype(np.float32)
                if case.context.history else np.zeros((0, dim), dtype=np.float32))
        out.append(PreparedCase(case, emb, matrix, hist))
    return out


# ---- local re-rankings --------------------------------------------------------

def context_vector(prepared: PreparedCase, embedder) -> np.ndarray:
    """What the server would score inline candidates without scores against."""
    query = prepared.query()
    dim = prepared.matrix.shape[1]
    vec = embedder.encode([query])[0].astype(np.float64) if query else np.zeros(dim)
    if prepared.history_as_ids and len(prepared.history_matrix):
        hist = prepared.history_matrix.mean(axis=0)
        vec = vec + HISTORY_WEIGHT * hist if query else hist
    norm = float(np.linalg.norm(vec))
    return (vec / norm).astype(np.float32) if norm > 0 else vec.astype(np.float32)


def local_relevance(prepared: PreparedCase, embedder) -> np.ndarray:
    """The server's pointwise score: the upstream score when a candidate has
    one, else cosine to the context vector."""
    cands = prepared.case.candidates
    if all(c.score is not None for c in cands):
        return np.array([c.score for c in cands], dtype=np.float32)
    cos = prepared.matrix @ context_vector(prepared, embedder)
    return np.array([c.score if c.score is not None else float(s) for c, s in zip(cands, cos)],
                    dtype=np.float32)


def minmax(scores: np.ndarray) -> np.ndarray:
    lo, hi = float(scores.min()), float(scores.max())
    if hi - lo <= 0:
        return np.zeros_like(scores, dtype=np.float32)
    return ((scores - lo) / (hi - lo)).astype(np.float32)


def rerank_local(strategy: LocalStrategy, matrix: np.ndarray, relevance: np.ndarray, k: int) -> list[int]:
    if strategy.method == "mmr":
        # MMR adds relevance and similarity linearly, so it is scale-sensitive:
        # on [0, 1] the same d means the same trade-off for CTRs and cosines.
        return mmr(matrix, minmax(relevance), k, strategy.diversity)
    if strategy.method == "dpp":
        return dpp(matrix, relevance.astype(np.float32), k, strategy.diversity)
    raise ValueError(f"unknown local method {strategy.method!r}")


# ---- service requests -------------------------------------------------------------

def _rejects_history(error: grpc.RpcError) -> bool:
    from slatewise_client import field_violations

    if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
        return False
    fields = [f for f, _ in field_violations(error)]
    if fields:
        return any(f.startswith("context.history_item_ids") for f in fields)
    return "history_item_ids" in (error.details() or "")


def _enum_name(enum, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix).lower()


def call_service(client, prepared: PreparedCase, strategy: ServiceStrategy, *,
                 deadline: float, request_id: str) -> SlateResult:
    from slatewise_client import build_request
    from slatewise_client.pb import slate_pb2 as pb

    case = prepared.case
    result = SlateResult(case.id, strategy.name)
    for _attempt in range(2):
        request = build_request(
            prepared.query(), case.k,
            candidates=[c.as_request_item() for c in case.candidates],
            strategy=strategy.strategy, diversity=strategy.diversity,
            relevance_prior=strategy.relevance_prior, history=prepared.history_ids(),
            temperature=0.0, seed=0, request_id=request_id[:200],
        )
        start = time.perf_counter()
        try:
            slate = client.recommend(request=request, deadline=deadline)
        except grpc.RpcError as exc:
            if prepared.history_as_ids and prepared.case.context.history and _rejects_history(exc):
                prepared.history_as_ids = False  # not catalogue ids: send titles instead
                continue
            result.served = "error"
            result.error = f"{exc.code().name}: {exc.details()}"
            return result
        result.latency_s = time.perf_counter() - start
        result.slate = [it.item_id for it in slate.items]
        result.server_s = slate.timings.total_seconds
        result.served = _enum_name(pb.Strategy, slate.strategy, "STRATEGY_")
        result.model_id = slate.model_id
        if slate.fallback_reason:
            result.fallback_reason = _enum_name(pb.FallbackReason, slate.fallback_reason,
                                                "FALLBACK_REASON_")
        unknown = [i for i in result.slate if i not in prepared.embeddings]
        if unknown:
            result.served, result.error = "error", f"slate has ids that are not candidates: {unknown}"
            return result
        result.quality = prepared.quality(result.slate)
        return result
    raise AssertionError("unreachable")


def run_local(prepared: PreparedCase, strategy: LocalStrategy, embedder) -> SlateResult:
    case = prepared.case
    relevance = local_relevance(prepared, embedder)
    order = rerank_local(strategy, prepared.matrix, relevance, case.k)
    slate = [case.candidates[i].id for i in order]
    return SlateResult(case.id, strategy.name, slate, prepared.quality(slate), served="local")


# ---- the run ---------------------------------------------------------------

@dataclass
class EvalReport:
    cases_name: str
    cases: list[EvalCase]
    strategies: list[Strategy]
    results: list[SlateResult]
    summaries: list[StrategySummary]

    @property
    def has_relevance(self) -> bool:
        return any(c.has_relevance for c in self.cases)

    @property
    def relevant_total(self) -> int:
        return sum(len(c.relevant) for c in self.cases)

    @property
    def relevant_in_candidates(self) -> int:
        return sum(c.relevant_in_candidates for c in self.cases)

    @property
    def candidate_recall(self) -> float:
        """Share of the relevant items that are among their case's candidates:
        no re-ranking of the candidates can find the rest (NaN without labels)."""
        total = self.relevant_total
        return self.relevant_in_candidates / total if total else math.nan

    def as_dict(self) -> dict:
        return {
            "cases_file": self.cases_name,
            "cases": len(self.cases),
            "k": sorted({c.k for c in self.cases}),
            "with_relevance": sum(c.has_relevance for c in self.cases),
            "relevant": self.relevant_total,
            "relevant_in_candidates": self.relevant_in_candidates,
            "candidate_recall": _json_float(self.candidate_recall),
            "strategies": [s.as_dict() for s in self.summaries],
            "per_case": [r.as_dict() for r in self.results],
        }


def run_eval(cases: Sequence[EvalCase], client, embedder, *,
             strategies: Sequence[Strategy] | None = None, deadline: float = 120.0,
             cases_name: str = "cases",
             progress: Callable[[int, int, EvalCase, list[SlateResult]], None] | None = None,
             ) -> EvalReport:
    strategies = list(strategies or default_strategies())
    prepared = prepare_cases(cases, embedder)
    results: list[SlateResult] = []
    # Service strategies first: they settle how history travels, which the
    # local relevance (for candidates without scores) must mirror.
    ordered = ([s for s in strategies if s.kind == "service"]
               + [s for s in strategies if s.kind == "local"])
    for n, prep in enumerate(prepared, start=1):
        case_results = []
        for j, strategy in enumerate(ordered):
            if isinstance(strategy, ServiceStrategy):
                res = call_service(client, prep, strategy, deadline=deadline,
                                   request_id=f"eval-{prep.case.id}-{j}")
            else:
                res = run_local(prep, strategy, embedder)
            case_results.append(res)
        results += case_results
        if progress is not None:
            progress(n, len(prepared), prep.case, case_results)
    return EvalReport(cases_name, list(cases), strategies, results, summarize(strategies, results))


def summarize(strategies: Sequence[Strategy], results: Sequence[SlateResult]) -> list[StrategySummary]:
    out = []
    for strategy in strategies:
        mine = [r for r in results if r.strategy == strategy.name]
        scored = [r for r in mine if r.quality is not None]
        means = {name: nanmean([getattr(r.quality, name) for r in scored]) for name in METRIC_NAMES}
        latencies = [r.latency_s for r in scored if r.latency_s is not None]
        server = [r.server_s for r in scored if r.server_s is not None]
        out.append(StrategySummary(
            name=strategy.name, kind=strategy.kind, description=strategy.describe(),
            cases=len(scored), served=Counter(r.served for r in mine),
            fallback_reasons=Counter(r.fallback_reason for r in mine if r.fallback_reason),
            means=means, p50_latency_s=percentile(latencies, 50), p50_server_s=percentile(server, 50),
            model_ids=Counter(r.model_id for r in scored if r.model_id),
        ))
    return out


# ---- presentation --------------------------------------------------------------

SERVED_ORDER = ("model", "partial", "fallback", "pointwise", "auto", "local", "error")


def _fmt(v: float, spec: str = ".3f") -> str:
    return "n/a" if v is None or math.isnan(v) else format(v, spec)


def served_text(served: Counter) -> str:
    keys = sorted(served, key=lambda k: (SERVED_ORDER.index(k) if k in SERVED_ORDER else 99, k))
    return ", ".join(f"{k} {served[k]}" for k in keys)


def markdown_table(report: EvalReport) -> str:
    cases = report.cases
    ks = sorted({c.k for c in cases})
    k_text = str(ks[0]) if len(ks) == 1 else f"{ks[0]}-{ks[-1]}"
    n_cand = sum(len(c.candidates) for c in cases) / len(cases) if cases else 0
    lines = [
        f"Cases: {len(cases)} from {report.cases_name}; K = {k_text}; "
        f"{n_cand:.0f} candidates per case on average; "
        f"{sum(c.has_relevance for c in cases)} list relevant items.",
    ]
    if report.relevant_total:
        lines.append(
            f"Relevant items among the candidates: {report.relevant_in_candidates} of "
            f"{report.relevant_total} ({report.candidate_recall:.1%}, the ceiling of any re-ranking)"
            + ("; the others count as misses for every strategy." if report.candidate_recall < 1 else "."))
    model_ids = Counter()
    for s in report.summaries:
        model_ids.update(s.model_ids)
    if model_ids:
        lines.append("Model rows written by: " + ", ".join(
            f"model_id {m!r} ({n} slates)" for m, n in sorted(model_ids.items())) + ".")
    lines += [
        "",
        "| strategy | served | nDCG@K | hit rate | ILD | coverage | redundancy | mean score | p50 latency |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in report.summaries:
        m = s.means
        latency = "local" if s.kind == "local" else (
            "n/a" if math.isnan(s.p50_latency_s) else f"{s.p50_latency_s * 1000:.0f} ms")
        lines.append(
            f"| {s.name} | {served_text(s.served)} | {_fmt(m['ndcg'])} | {_fmt(m['hit'])} | "
            f"{_fmt(m['ild'])} | {_fmt(m['coverage'])} | {_fmt(m['redundancy'])} | "
            f"{_fmt(m['mean_score'], '.4g')} | {latency} |"
        )
    lines += ["", "Strategies:"]
    lines += [f"- {s.name}: {s.description}"
              + (f"; model_id {', '.join(sorted(s.model_ids))}" if s.model_ids else "")
              for s in report.summaries]
    reasons = [(s.name, s.fallback_reasons) for s in report.summaries if s.fallback_reasons]
    if reasons:
        lines += ["", "Fallback reasons:"]
        lines += [f"- {name}: {', '.join(f'{k} {v}' for k, v in sorted(c.items()))}" for name, c in reasons]
    errors = [r for r in report.results if r.error]
    if errors:
        lines += ["", f"Errors ({len(errors)}):"]
        lines += [f"- {r.case_id} / {r.strategy}: {r.error}" for r in errors[:10]]
        if len(errors) > 10:
            lines.append(f"- ... and {len(errors) - 10} more")
    return "\n".join(lines)


def write_plot(report: EvalReport, path: Path | str) -> Path:
    """Relevance (nDCG@K, or mean upstream score without relevance labels)
    against intra-list diversity, one labelled point per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    path = Path(path)
    metric, ylabel = (("ndcg", "nDCG@K (binary relevance)") if report.has_relevance
                      else ("mean_score", "mean upstream score of the slate"))
    points = [(n, s, s.means["ild"], s.means[metric]) for n, s in enumerate(report.summaries, start=1)
              if not (math.isnan(s.means["ild"]) or math.isnan(s.means[metric]))]
    fig = Figure(figsize=(8.0, 6.0), dpi=120)
    ax = fig.subplots()
    colours = matplotlib.colormaps["tab10"]
    for n, s, x, y in points:
        ax.scatter([x], [y], marker="o" if s.kind == "service" else "s", s=70, zorder=3,
                   color=colours((n - 1) % 10), edgecolors="black", linewidths=0.5,
                   label=f"{n}  {s.name}" + (f" [{', '.join(sorted(s.model_ids))}]" if s.model_ids else ""))
    # Strategies that land on the same spot (e.g. every row served pointwise)
    # share one annotation instead of overprinting each other.
    spots: dict[tuple[float, float], list[int]] = {}
    for n, _s, x, y in points:
        spots.setdefault((round(x, 4), round(y, 4)), []).append(n)
    for (x, y), numbers in spots.items():
        ax.annotate(",".join(map(str, numbers)), (x, y), textcoords="offset points",
                    xytext=(7, 6), fontsize=9, fontweight="bold")
    ax.set_xlabel("intra-list diversity (mean pairwise 1 - cosine)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{report.cases_name}: relevance vs diversity ({len(report.cases)} cases)", fontsize=10)
    ax.grid(True, alpha=0.3)
    if points:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "no strategy produced a scored slate", ha="center", va="center",
                transform=ax.transAxes)
    ax.margins(x=0.2, y=0.2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path
