"""The evaluation's metrics, case loader, local re-rankings and report on
small hand-made inputs (no server, no embedding model)."""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from slatewise.evaluation.cases import CaseFileError, EvalCase, load_cases
from slatewise.evaluation.metrics import (
    category_coverage,
    hit_rate,
    intra_list_diversity,
    mean_score,
    nanmean,
    ndcg_at_k,
    redundancy,
    slate_quality,
)
from slatewise.evaluation.runner import (
    EvalReport,
    LocalStrategy,
    PreparedCase,
    SlateResult,
    default_strategies,
    local_relevance,
    pick_strategies,
    markdown_table,
    minmax,
    prepare_cases,
    rerank_local,
    summarize,
    write_plot,
)
from slatewise.pointwise.select import dpp, mmr

EVAL_DATA = Path(__file__).resolve().parents[1] / "eval_data"


def _item(id, category="tops", score=None, title=None):
    out = {"id": id, "title": title or f"item {id}", "category": category, "attributes": {"colour": "red"}}
    if score is not None:
        out["score"] = score
    return out


def _case(**over):
    case = {"id": "c1", "context": {"query": "q"}, "candidates": [_item("a"), _item("b"), _item("c")],
            "k": 2, "relevant": ["a"]}
    case.update(over)
    return case


# ---- nDCG and hit rate ------------------------------------------------------------

def test_ndcg_perfect_and_empty():
    assert ndcg_at_k(["a", "b"], {"a", "b"}) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "y"], {"a"}) == 0.0
    assert math.isnan(ndcg_at_k(["a"], set()))


def test_ndcg_discounts_by_position():
    # one relevant item at position 2 (0-based 1): 1/log2(3) over ideal 1
    assert ndcg_at_k(["x", "a", "y"], {"a"}) == pytest.approx(1 / math.log2(3))
    # two relevant, K=3, hits at 0 and 2: (1 + 1/2) / (1 + 1/log2 3)
    assert ndcg_at_k(["a", "x", "b"], {"a", "b"}) == pytest.approx(1.5 / (1 + 1 / math.log2(3)))


def test_ndcg_ideal_is_capped_at_k():
    # five relevant items but K=2: a slate of two relevant ones is perfect
    assert ndcg_at_k(["a", "b"], {"a", "b", "c", "d", "e"}, k=2) == pytest.approx(1.0)
    # items beyond K do not count
    assert ndcg_at_k(["x", "y", "a"], {"a"}, k=2) == 0.0


def test_hit_rate():
    assert hit_rate(["x", "a"], {"a"}) == 1.0
    assert hit_rate(["x", "y"], {"a"}) == 0.0
    assert hit_rate(["x", "a"], {"a"}, k=1) == 0.0
    assert math.isnan(hit_rate(["a"], []))


# ---- diversity ---------------------------------------------------------------

def test_intra_list_diversity():
    e = np.eye(3, dtype=np.float32)
    assert intra_list_diversity(e) == pytest.approx(1.0)  # orthogonal
    assert intra_list_diversity(np.stack([e[0], e[0]])) == pytest.approx(0.0)  # identical
    assert intra_list_diversity(e[:1]) == 0.0
    v = np.array([[1, 0], [np.sqrt(0.5), np.sqrt(0.5)]], dtype=np.float32)
    assert intra_list_diversity(v) == pytest.approx(1 - np.sqrt(0.5), abs=1e-6)


def test_category_coverage_and_redundancy():
    cands = ["tops", "bottoms", "shoes", "tops"]
    assert category_coverage(["tops", "bottoms", "shoes"], cands) == pytest.approx(1.0)
    assert category_coverage(["tops", "tops", "shoes"], cands) == pytest.approx(2 / 3)
    # K larger than the categories available: covering all of them is full coverage
    assert category_coverage(["tops", "bottoms", "shoes", "tops", "tops"], cands) == pytest.approx(1.0)
    # only one category among the candidates
    assert category_coverage(["tops", "tops"], ["tops"]) == pytest.approx(1.0)
    assert redundancy(["tops", "tops", "shoes", "bottoms"]) == pytest.approx(0.5)
    assert redundancy(["tops", "shoes"]) == pytest.approx(0.5)
    assert redundancy(["tops"] * 3) == 1.0


def test_mean_score_and_nanmean():
    assert mean_score([0.5, None, 1.5]) == pytest.approx(1.0)
    assert math.isnan(mean_score([None, None]))
    assert nanmean([1.0, math.nan, 3.0]) == 2.0
    assert math.isnan(nanmean([math.nan]))


def test_slate_quality_combines_everything():
    e = np.eye(3, dtype=np.float32)
    q = slate_quality(["a", "c"], k=2, relevant={"c"},
                      categories={"a": "tops", "b": "tops", "c": "shoes"},
                      scores={"a": 1.0, "b": None, "c": 0.0},
                      embeddings={"a": e[0], "b": e[1], "c": e[2]})
    assert q.ndcg == pytest.approx(1 / math.log2(3))
    assert q.hit == 1.0
    assert q.ild == pytest.approx(1.0)
    assert q.coverage == 1.0 and q.redundancy == 0.5
    assert q.mean_score == pytest.approx(0.5)


# ---- cases ---------------------------------------------------------------------

def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "cases.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_loader_reads_cases_and_skips_blank_lines(tmp_path):
    path = _write(tmp_path, [json.dumps(_case()), "", json.dumps(_case(id="c2", relevant=[]))])
    cases = load_cases(path)
    assert [c.id for c in cases] == ["c1", "c2"]
    assert cases[0].has_relevance and not cases[1].has_relevance
    assert cases[0].context.history == []
    assert load_cases(path, limit=1)[0].id == "c1"


@pytest.mark.parametrize("bad, message", [
    ("{not json", "not valid JSON"),
    (json.dumps(_case(k=4)), "k is 4 but there are only 3 candidates"),
    (json.dumps(_case(relevant=["a", "a"])), "relevant lists an id twice"),
    (json.dumps(_case(candidates=[_item("a"), _item("a")])), "duplicate candidate id 'a'"),
    (json.dumps(_case(candidates=[_item("a", score=float("inf"))], k=1, relevant=[])), "score"),
    (json.dumps({**_case(), "extra": 1}), "extra"),
    (json.dumps(_case(k=0)), "k"),
    (json.dumps({"id": "x", "candidates": [{"id": "a", "title": "t"}], "k": 1}), "candidates.0.category"),
    ("[1, 2]", "valid dictionary"),
])
def test_loader_names_the_bad_line(tmp_path, bad, message):
    path = _write(tmp_path, [json.dumps(_case()), bad])
    with pytest.raises(CaseFileError) as err:
        load_cases(path)
    assert f"{path}:2:" in str(err.value)
    assert message in str(err.value)


def test_loader_rejects_duplicate_case_ids_and_empty_files(tmp_path):
    path = _write(tmp_path, [json.dumps(_case()), json.dumps(_case())])
    with pytest.raises(CaseFileError, match=r":2: duplicate case id 'c1' \(first on line 1\)"):
        load_cases(path)
    with pytest.raises(CaseFileError, match="no cases"):
        load_cases(_write(tmp_path, [""]))
    with pytest.raises(CaseFileError, match="cannot read"):
        load_cases(tmp_path / "missing.jsonl")


def test_relevant_ids_outside_the_candidates_are_allowed_and_count_as_misses(tmp_path):
    path = _write(tmp_path, [json.dumps(_case(relevant=["a", "zz", "yy"]))])
    (case,) = load_cases(path)
    assert case.relevant_in_candidates == 1 and len(case.relevant) == 3
    (prep,) = prepare_cases([case], FakeEmbedder())
    q = prep.quality(["a", "b"])
    # the ideal slate (K=2) puts two relevant items on top; only one is reachable
    assert q.ndcg == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert q.hit == 1.0
    miss = prep.quality(["b", "c"])
    assert miss.ndcg == 0.0 and miss.hit == 0.0


@pytest.mark.parametrize("name, count, k", [("outfit_cases.jsonl", 30, 5), ("obp_cases.jsonl", 50, 3)])
def test_shipped_case_sets_load(name, count, k):
    cases = load_cases(EVAL_DATA / name)
    assert len(cases) == count
    assert {c.k for c in cases} == {k}
    assert all(c.has_relevance and c.has_scores for c in cases)


def test_request_items_carry_scores_only_when_present():
    case = EvalCase.model_validate(_case(candidates=[_item("a", score=0.3), _item("b"), _item("c")]))
    assert case.candidates[0].as_request_item()["score"] == 0.3
    assert "score" not in case.candidates[1].as_request_item()


# ---- local re-rankings and history -------------------------------------------------

class FakeEmbedder:
    """Deterministic unit vectors per text; the query 'q' points along axis 0."""

    dim = 4

    def encode(self, texts):
        out = []
        for t in texts:
            rng = np.random.default_rng(int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "big"))
            v = rng.normal(size=self.dim)
            if t == "q":
                v = np.array([1.0, 0, 0, 0])
            out.append(v / np.linalg.norm(v))
        return np.array(out, dtype=np.float32)


def test_minmax():
    assert minmax(np.array([0.002, 0.004, 0.003])).tolist() == pytest.approx([0, 1, 0.5])
    assert minmax(np.array([1.0, 1.0])).tolist() == [0.0, 0.0]


def test_local_rerankings_are_the_server_functions():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(20, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    scores = (rng.random(20) * 0.01).astype(np.float32)  # CTR-like scale
    assert rerank_local(LocalStrategy("d", "dpp", 0.5), emb, scores, 5) == dpp(emb, scores, 5, 0.5)
    assert rerank_local(LocalStrategy("m", "mmr", 0.5), emb, scores, 5) == mmr(emb, minmax(scores), 5, 0.5)
    with pytest.raises(ValueError):
        rerank_local(LocalStrategy("x", "nope", 0.5), emb, scores, 5)


def test_local_relevance_uses_scores_else_cosine_to_the_query():
    case = EvalCase.model_validate(_case(candidates=[_item("a", score=0.9), _item("b"), _item("c")]))
    (prep,) = prepare_cases([case], FakeEmbedder())
    rel = local_relevance(prep, FakeEmbedder())
    assert rel[0] == pytest.approx(0.9)
    assert rel[1] == pytest.approx(prep.matrix[1][0])  # cosine with the axis-0 query


def test_history_goes_into_the_query_once_the_server_rejects_ids():
    hist = [_item("h1", title="Red scarf"), _item("h2", title="Blue  hat")]
    case = EvalCase.model_validate(_case(context={"query": "winter walk", "history": hist}))
    prep = PreparedCase(case, {}, np.zeros((3, 4)), np.zeros((2, 4)))
    assert prep.query() == "winter walk" and prep.history_ids() == ["h1", "h2"]
    prep.history_as_ids = False
    assert prep.query() == "winter walk. Recently viewed: Red scarf; Blue hat"
    assert prep.history_ids() == []


def test_long_history_is_cut_to_the_query_limit_keeping_the_newest():
    hist = [_item(f"h{i}", title=f"title {i} " + "x" * 80) for i in range(30)]
    case = EvalCase.model_validate(_case(context={"query": "q", "history": hist}))
    prep = PreparedCase(case, {}, np.zeros((3, 4)), np.zeros((30, 4)), history_as_ids=False)
    query = prep.query()
    assert len(query) <= 1000
    assert query.endswith("title 29 " + "x" * 80) and "title 0 " not in query


# ---- report ---------------------------------------------------------------------

def _report(tmp_path=None):
    case = EvalCase.model_validate(_case(candidates=[_item("a", score=1.0), _item("b", "shoes", 0.5),
                                                     _item("c", "shoes", 0.2)]))
    (prep,) = prepare_cases([case], FakeEmbedder())
    strategies = default_strategies()
    results = []
    for s in strategies:
        if s.kind == "service":
            served = "pointwise" if s.name.startswith("pointwise") else "fallback"
            results.append(SlateResult(case.id, s.name, ["a", "b"], prep.quality(["a", "b"]), served,
                                       "engine_not_ready" if served == "fallback" else "", 0.012, 0.01))
        else:
            results.append(SlateResult(case.id, s.name, ["b", "c"], prep.quality(["b", "c"]), "local"))
    results.append(SlateResult(case.id, strategies[0].name, served="error", error="UNAVAILABLE: down"))
    return EvalReport("cases.jsonl", [case], strategies, results, summarize(strategies, results))


def test_summary_and_table():
    report = _report()
    first = report.summaries[0]
    assert first.cases == 1 and first.served == Counter({"pointwise": 1, "error": 1})
    assert first.means["ndcg"] == 1.0 and first.p50_latency_s == pytest.approx(0.012)
    table = markdown_table(report)
    assert "| strategy | served | nDCG@K | hit rate | ILD | coverage | redundancy | mean score | p50 latency |" in table
    assert "| pointwise | pointwise 1, error 1 | 1.000 | 1.000 |" in table
    assert "| local DPP (d=0.5) | local 1 | 0.000 | 0.000 |" in table
    assert "12 ms" in table and "engine_not_ready 1" in table and "UNAVAILABLE: down" in table
    data = report.as_dict()
    assert data["strategies"][0]["ndcg"] == 1.0 and data["per_case"][-1]["ndcg"] is None
    json.dumps(data)  # serialisable: NaN became null


def test_report_shows_the_share_of_relevant_items_among_the_candidates():
    cases = [EvalCase.model_validate(_case(id="c1", relevant=["a", "zz"])),
             EvalCase.model_validate(_case(id="c2", relevant=["b", "c"])),
             EvalCase.model_validate(_case(id="c3", relevant=[]))]
    strategies = [LocalStrategy("local DPP (d=0.5)", "dpp", 0.5)]
    report = EvalReport("cases.jsonl", cases, strategies, [], summarize(strategies, []))
    assert report.relevant_total == 4 and report.relevant_in_candidates == 3
    assert report.candidate_recall == pytest.approx(0.75)
    table = markdown_table(report)
    assert "Relevant items among the candidates: 3 of 4 (75.0%, the ceiling of any re-ranking)" in table
    assert "count as misses" in table
    data = report.as_dict()
    assert data["relevant"] == 4 and data["relevant_in_candidates"] == 3 and data["candidate_recall"] == 0.75
    full = EvalReport("x", cases[1:], strategies, [], summarize(strategies, []))
    assert "2 of 2 (100.0%" in markdown_table(full) and "misses" not in markdown_table(full)


def test_pick_strategies_by_row_name_or_key_in_table_order():
    strategies = default_strategies()
    names = [s.name for s in strategies]
    picked = pick_strategies(strategies, ["local DPP (d=0.5)", "POINTWISE", "model+prior"])
    assert [s.name for s in picked] == [names[0], names[3], names[5]]
    assert pick_strategies(strategies, ["mmr", "local  mmr (d=0.5)"]) == [strategies[4]]
    with pytest.raises(ValueError) as err:
        pick_strategies(strategies, ["pointwise", "nope", "DPP!"])
    message = str(err.value)
    assert "unknown strategies 'nope', 'DPP!'" in message
    for name in names:
        assert repr(name) in message
    assert "(model+prior)" in message


def test_model_rows_are_labelled_by_the_responses_model_id():
    case = EvalCase.model_validate(_case())
    (prep,) = prepare_cases([case], FakeEmbedder())
    strategies = default_strategies()[:3]
    results = [
        SlateResult(case.id, strategies[0].name, ["a", "b"], prep.quality(["a", "b"]), "pointwise"),
        SlateResult(case.id, strategies[1].name, ["a", "b"], prep.quality(["a", "b"]), "pointwise"),
        SlateResult(case.id, strategies[2].name, ["b", "a"], prep.quality(["b", "a"]), "model",
                    model_id="slates-ml100k"),
    ]
    report = EvalReport("cases.jsonl", [case], strategies, results, summarize(strategies, results))
    assert report.summaries[2].model_ids == Counter({"slates-ml100k": 1})
    assert not report.summaries[0].model_ids
    table = markdown_table(report)
    assert "Model rows written by: model_id 'slates-ml100k' (1 slates)." in table
    assert f"- {strategies[2].name}: service: strategy=MODEL, diversity=0.5, relevance_prior=0; " \
           "model_id slates-ml100k" in table
    data = report.as_dict()
    assert data["strategies"][2]["model_ids"] == {"slates-ml100k": 1}
    assert data["per_case"][2]["model_id"] == "slates-ml100k" and data["per_case"][0]["model_id"] is None


def test_plot_is_a_png(tmp_path):
    path = write_plot(_report(), tmp_path / "sub" / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("k", [0, 1, 2, 7])
def test_diversity_tally_matches_the_whole_slate(k):
    """The served slate's diversity, kept up item by item while the slate is
    written, is the one computed from the finished slate."""
    from slatewise.slate_metrics import DiversityTally, slate_diversity

    rng = np.random.default_rng(k)
    emb = rng.normal(size=(9, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    cats = ["tops", "shoes", "tops", "bags", "tops", "shoes", "hats", "tops", "bags"]
    picked = rng.permutation(9)[:k].tolist()
    tally = DiversityTally(emb, cats.__getitem__, available_categories=4)
    for i in picked:
        tally.add(i)
    whole = slate_diversity(emb[picked], [cats[i] for i in picked], 4)
    got = tally.result()
    assert got.intra_list_diversity == pytest.approx(whole.intra_list_diversity, abs=1e-9)
    assert (got.category_coverage, got.redundancy) == (whole.category_coverage, whole.redundancy)
    if k > 1:  # and both are the mean pairwise 1 - cosine
        sims = emb[picked] @ emb[picked].T
        pairs = [1 - sims[a, b] for a in range(k) for b in range(a + 1, k)]
        assert got.intra_list_diversity == pytest.approx(float(np.mean(pairs)), abs=1e-5)
