"""`slatewise eval` end to end against a pointwise-only server (no model path):
both shipped case sets, the table, the JSON and the plot. Without a model the
model strategies must come back served by the pointwise scorer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import free_port, start_server, stop_server

from slatewise.evaluation.cli import main

EVAL_DATA = Path(__file__).resolve().parents[1] / "eval_data"
PNG = b"\x89PNG\r\n\x1a\n"
MODEL_ROWS = ("model (prior 0, d=0.5)", "model + prior (relevance_prior=2, d=0.5)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("eval"), "--model", "")
    yield server
    stop_server(server)


def _row(table: str, name: str) -> list[str]:
    for line in table.splitlines():
        if line.startswith(f"| {name} |"):
            return [cell.strip() for cell in line.strip("|").split("|")]
    raise AssertionError(f"no row {name!r} in:\n{table}")


def test_outfit_cases_table_and_plot(server, tmp_path, capsys):
    plot = tmp_path / "outfit.png"
    rc = main(["--cases", str(EVAL_DATA / "outfit_cases.jsonl"), "--target", server.target,
               "--limit", "3", "--plot", str(plot)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "| strategy | served | nDCG@K | hit rate | ILD | coverage | redundancy | mean score | p50 latency |" in out.out
    assert "Cases: 3 from outfit_cases.jsonl; K = 5" in out.out
    for name in ("pointwise", "pointwise+DPP (d=0.5)", *MODEL_ROWS):
        row = _row(out.out, name)
        assert row[1] == "pointwise 3", row  # no model: served by the pointwise scorer
        assert row[2] != "n/a" and row[8].endswith(" ms"), row
    for name in ("local MMR (d=0.5)", "local DPP (d=0.5)"):
        assert _row(out.out, name)[1] == "local 3"
    assert "Errors" not in out.out
    assert "model path is not serving" in out.err
    assert plot.read_bytes()[:8] == PNG


def test_obp_cases_json(server, tmp_path, capsys):
    plot = tmp_path / "obp.png"
    rc = main(["--cases", str(EVAL_DATA / "obp_cases.jsonl"), "--target", server.target,
               "--limit", "3", "--plot", str(plot), "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    data = json.loads(out.out)
    assert data["cases"] == 3 and data["k"] == [3] and data["with_relevance"] == 3
    by_name = {s["name"]: s for s in data["strategies"]}
    assert len(by_name) == 6
    for name in MODEL_ROWS:
        assert by_name[name]["served"] == {"pointwise": 3}
        assert by_name[name]["p50_latency_s"] > 0
    for s in data["strategies"]:
        assert s["cases"] == 3
        assert 0 <= s["ndcg"] <= 1 and 0 <= s["coverage"] <= 1 and s["mean_score"] > 0
    assert all(r["error"] is None and len(r["slate"]) == 3 for r in data["per_case"])
    # With upstream scores on every candidate, the server's pointwise DPP and
    # the local one rank the same numbers with the same embeddings.
    slates = {(r["case"], r["strategy"]): r["slate"] for r in data["per_case"]}
    for case in {r["case"] for r in data["per_case"]}:
        assert slates[(case, "pointwise+DPP (d=0.5)")] == slates[(case, "local DPP (d=0.5)")]
    assert plot.read_bytes()[:8] == PNG


def test_history_unknown_to_the_catalogue_goes_into_the_query(server, tmp_path, capsys):
    cand = [{"id": f"x{i}", "title": f"Item {i}", "category": c, "attributes": {"style": "casual"}}
            for i, c in enumerate(["tops", "bottoms", "shoes", "tops"])]
    case = {"id": "h", "context": {"query": "casual day", "history": [cand[0] | {"id": "not-in-catalogue"}]},
            "candidates": cand, "k": 2, "relevant": ["x1"]}
    path = tmp_path / "cases.jsonl"
    path.write_text(json.dumps(case) + "\n")
    rc = main(["--cases", str(path), "--target", server.target, "--plot", str(tmp_path / "h.png"), "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    data = json.loads(out.out)
    assert all(r["error"] is None for r in data["per_case"])
    # no scores in the case: local strategies rank by cosine to the query
    assert data["strategies"][0]["mean_score"] is None


def test_bad_case_file_and_unreachable_target(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a"}\n')
    assert main(["--cases", str(bad), "--target", "127.0.0.1:1"]) == 2
    assert f"{bad}:1:" in capsys.readouterr().err
    rc = main(["--cases", str(EVAL_DATA / "outfit_cases.jsonl"), "--limit", "1",
               "--target", f"127.0.0.1:{free_port()}"])
    assert rc == 1
    assert "cannot reach" in capsys.readouterr().err


def test_strategies_select_rows_and_relevant_outside_the_candidates(server, tmp_path, capsys):
    cand = [{"id": f"x{i}", "title": f"Item {i}", "category": c, "attributes": {"style": "casual"},
             "score": s} for i, (c, s) in enumerate([("tops", 0.9), ("bottoms", 0.5), ("shoes", 0.4),
                                                     ("tops", 0.8)])]
    case = {"id": "r", "context": {"query": "casual day"}, "candidates": cand, "k": 2,
            "relevant": ["x0", "not-a-candidate"]}
    path = tmp_path / "cases.jsonl"
    path.write_text(json.dumps(case) + "\n")
    rc = main(["--cases", str(path), "--target", server.target, "--plot", str(tmp_path / "r.png"),
               "--strategies", "pointwise", "local DPP (d=0.5)"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "Relevant items among the candidates: 1 of 2 (50.0%" in out.out
    assert _row(out.out, "pointwise")[1] == "pointwise 1"
    assert _row(out.out, "local DPP (d=0.5)")[1] == "local 1"
    rows = [line for line in out.out.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 3  # header + the two selected rows
    assert "model path is not serving" not in out.err  # no model row was asked for
    rc = main(["--cases", str(path), "--target", server.target, "--plot", str(tmp_path / "r.png"),
               "--json", "--strategies", "pointwise"])
    data = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in data["strategies"]] == ["pointwise"]
    assert data["candidate_recall"] == 0.5
    # x0 (relevant) is the best-scored candidate: a hit, but nDCG < 1 because
    # the ideal slate would also hold the item retrieval missed
    (summary,) = data["strategies"]
    assert summary["hit"] == 1.0 and 0 < summary["ndcg"] < 1


def test_unknown_strategy_is_a_usage_error_listing_the_valid_ones(capsys):
    rc = main(["--cases", str(EVAL_DATA / "outfit_cases.jsonl"), "--target", "127.0.0.1:1",
               "--strategies", "pointwise", "beam search"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "unknown strategy 'beam search'" in err
    for name in ("'pointwise'", "'pointwise+DPP (d=0.5)'", *(repr(n) for n in MODEL_ROWS),
                 "'local MMR (d=0.5)'", "'local DPP (d=0.5)'"):
        assert name in err
