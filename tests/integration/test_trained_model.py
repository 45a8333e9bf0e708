"""Train -> serve, end to end and CI-sized: `slatewise train` on the generated log
of the embedded catalogue (seconds), then the real server with `--model DIR`
and the real vLLM engine (item tokens, prompt embeddings for the query).

Checks: K distinct valid items written by the model for a query-only and a
history-only request (and slates that follow the query / the history);
streaming equals unary; a short deadline still gets K items; candidates the
model has no token for get the documented PARTIAL / FALLBACK with
UNKNOWN_CANDIDATES; the engine core killed -> the pointwise path serves
meanwhile (ENGINE_DEAD). Kept last: the kill.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from conftest import REPO, start_server, stop_server
from fault_scenarios import kill_engine_core, scrape_when, wait_health
from slatewise.catalogue.loader import embedded_catalogue_path, load_jsonl
from slatewise.training.manifest import detect
from slatewise_client import SlateClient, build_request
from slatewise_client.pb import slate_pb2 as pb

pytestmark = pytest.mark.model
MODEL = "slatewise.v1.Model"
CATALOGUE = {it.id: it for it in load_jsonl(embedded_catalogue_path())}
# Small and quick: ~20 s on one busy core; what is checked is the serving, not the quality.
TRAIN_ARGS = ["--epochs", "3", "--threads", "1", "--max-valid-users", "100", "--patience", "2",
              "--max-history", "10", "--seed", "0"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    log, out = root / "interactions.jsonl", root / "slates-ci"
    subprocess.run([sys.executable, "-m", "slatewise.training.synthetic", "--out", str(log)],
                   check=True, cwd=REPO, capture_output=True)
    done = subprocess.run([sys.executable, "-m", "slatewise", "train", "--interactions", str(log),
                           "--catalogue", str(embedded_catalogue_path()), "--out", str(out), "--json",
                           *TRAIN_ARGS], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert detect(out)
    return out


@pytest.fixture(scope="module")
def trained_server(model_dir, tmp_path_factory):
    # No rebuild after the kill: the test watches the pointwise path serve a dead engine's
    # requests.
    server = start_server(tmp_path_factory.mktemp("trained-server"), "--model", str(model_dir),
                          "--engine-health-interval-seconds", "0.5", "--no-engine-restart",
                          wait_for=MODEL, timeout=400)
    yield server
    stop_server(server)


def _ids(slate) -> list[str]:
    return [it.item_id for it in slate.items]


def _valid(slate, k: int, allowed=None, cap: int = 0) -> list[str]:
    ids = _ids(slate)
    assert len(ids) == k == len(set(ids)), ids
    assert set(ids) <= (allowed if allowed is not None else set(CATALOGUE)), ids
    if cap:
        assert max(Counter(CATALOGUE[i].category for i in ids).values()) <= cap
    return ids


def _model_written(slate, k: int) -> None:
    assert slate.strategy == pb.STRATEGY_MODEL, pb.FallbackReason.Name(slate.fallback_reason)
    assert all(it.source == pb.ITEM_SOURCE_MODEL for it in slate.items)
    assert slate.generated_tokens == k


def test_query_only_and_history_only_requests_get_model_slates(trained_server, model_dir):
    with SlateClient(trained_server.target) as client:
        by_query = {}
        for query in ("winter hiking", "business meeting"):
            slate = client.recommend(request=build_request(query, 5, strategy="model"))
            by_query[query] = _valid(slate, 5)
            _model_written(slate, 5)
            assert slate.model_id == model_dir.name
        assert by_query["winter hiking"] != by_query["business meeting"]

        by_history = {}
        for history in (["tp-005", "bt-001"], ["sh-010"]):
            slate = client.recommend(request=build_request("", 5, history=history, exclude_ids=history,
                                                           strategy="model"))
            by_history[tuple(history)] = _valid(slate, 5, allowed=set(CATALOGUE) - set(history))
            _model_written(slate, 5)
        assert len(set(map(tuple, by_history.values()))) == 2

        # Caps and diversity, as on the LLM path.
        slate = client.recommend(request=build_request("casual outfit", 5, strategy="model",
                                                       max_per_category=1, diversity=1.0))
        _valid(slate, 5, cap=1)
        _model_written(slate, 5)


def test_diversity_is_a_dpp_over_the_models_first_step(trained_server, model_dir):
    """The served slate is the greedy DPP over the model's own first-step
    logits (computed here in torch from the model directory) with the
    category-aware kernel over the server's item embeddings; with diversity 0
    it is the model's own slate, whose first pick is the same favourite."""
    import numpy as np
    import torch

    from slatewise.catalogue.store import CatalogueStore
    from slatewise.config import load_settings
    from slatewise.embeddings import Embedder
    from slatewise.pointwise.select import Limits, dpp
    from slatewise.training.manifest import Manifest
    from slatewise.training.model import load_model

    settings = load_settings([])
    snapshot = CatalogueStore(list(CATALOGUE.values()),
                              Embedder(settings.embedding_model, settings.embedding_cache_dir)).snapshot
    manifest = Manifest.load(model_dir)
    llama = load_model(model_dir).llama.eval()
    special = manifest.special_tokens
    a, beta = settings.trained_dpp_category_weight, settings.trained_dpp_scale * 0.5
    spread = {0.0: 0, 0.5: 0}
    with SlateClient(trained_server.target) as client:
        for n, category in enumerate(("tp", "bt", "sh", "ac")):
            history = [f"{category}-{i:03d}" for i in range(n + 1, n + 4)]
            candidates = [i for i in CATALOGUE if i not in history][n::3][:40]
            tokens = [manifest.item_tokens[c] for c in candidates]
            prompt = [special["bos"], *(manifest.item_tokens[h] for h in history), special["sep"]]
            with torch.no_grad():
                logits = llama(torch.tensor([prompt])).logits[0, -1][tokens].numpy()
            e = snapshot.embeddings[[snapshot.index[c] for c in candidates]]
            cats = np.array([CATALOGUE[c].category for c in candidates])
            kernel = (1 - a) * (e @ e.T) + a * (cats[:, None] == cats[None, :])
            rows = np.linalg.cholesky(kernel + 1e-5 * np.eye(len(candidates))).astype(np.float32)
            # select.dpp's weights are exp(beta' z(score)) with beta' = 1 - d: d = 1 - beta.
            expected = [candidates[j] for j in dpp(rows, logits, 6, diversity=1 - beta)]
            served = {}
            for diversity in spread:
                slate = client.recommend(request=build_request(
                    "", 6, history=history, candidates=candidates, strategy="model", diversity=diversity))
                served[diversity] = _valid(slate, 6, allowed=set(candidates))
                _model_written(slate, 6)
                spread[diversity] += len({CATALOGUE[i].category for i in served[diversity]})
            assert served[0.5] == expected, (served[0.5], expected)
            assert served[0.0][0] == expected[0]  # both start from the model's favourite
    assert spread[0.5] >= spread[0.0], spread


def test_streamed_slate_equals_unary(trained_server):
    with SlateClient(trained_server.target) as client:
        for request in (build_request("casual outfit", 4, strategy="model"),
                        build_request("", 6, history=["tp-003"], strategy="model", diversity=0.5)):
            unary = client.recommend(request=request)
            events = list(client.recommend_stream(request=request))
            streamed = [e.item for e in events if e.WhichOneof("event") == "item"]
            assert [e.WhichOneof("event") for e in events] == ["item"] * request.k + ["slate"]
            assert [it.item_id for it in streamed] == _ids(unary) == _ids(events[-1].slate)
            assert all(it.source == pb.ITEM_SOURCE_MODEL for it in streamed)
            assert events[-1].slate.strategy == pb.STRATEGY_MODEL


def test_a_short_deadline_still_gets_a_full_slate(trained_server):
    with SlateClient(trained_server.target) as client:
        slate = client.recommend(request=build_request("casual outfit", 10, strategy="model"), deadline=0.1)
        _valid(slate, 10)
        if slate.strategy != pb.STRATEGY_MODEL:
            assert slate.fallback_reason == pb.FALLBACK_REASON_DEADLINE


def test_candidates_the_model_does_not_know(trained_server):
    new = [{"id": f"new-{j}", "title": f"Linen summer shirt {j}", "category": "tops",
            "attributes": {"style": "casual"}} for j in range(4)]
    known = ["tp-001", "bt-002", "sh-003"]
    with SlateClient(trained_server.target) as client:
        # Three known candidates, K = 5: the model writes those three, the pointwise scorer the rest.
        slate = client.recommend(request=build_request("casual", 5, candidates=new + known, strategy="model"))
        assert len(set(_ids(slate))) == 5 and set(_ids(slate)) <= {c["id"] for c in new} | set(known)
        assert slate.strategy == pb.STRATEGY_PARTIAL
        assert slate.fallback_reason == pb.FALLBACK_REASON_UNKNOWN_CANDIDATES
        assert [it.source for it in slate.items] == [pb.ITEM_SOURCE_MODEL] * 3 + [pb.ITEM_SOURCE_FALLBACK] * 2
        assert set(_ids(slate)[:3]) == set(known)
        # Enough known candidates: the unknown ones are simply never offered to the model.
        slate = client.recommend(request=build_request("casual", 2, candidates=new + known, strategy="model"))
        assert slate.strategy == pb.STRATEGY_MODEL and set(_ids(slate)) <= set(known)
        # None known: pointwise, with the reason.
        slate = client.recommend(request=build_request("casual", 3, candidates=new, strategy="model"))
        assert len(set(_ids(slate))) == 3
        assert slate.strategy == pb.STRATEGY_FALLBACK
        assert slate.fallback_reason == pb.FALLBACK_REASON_UNKNOWN_CANDIDATES
        assert slate.model_id == ""
    key = 'slatewise_fallbacks_total{reason="unknown_candidates"}'
    assert scrape_when(trained_server.metrics_url, lambda m: m.get(key) == 2.0).get(key) == 2.0


def test_engine_death_is_served_pointwise(trained_server):
    kill_engine_core(trained_server.process.pid)
    wait_health(trained_server.target, MODEL, "NOT_SERVING", timeout=30)
    with SlateClient(trained_server.target) as client:
        assert client.health() == "SERVING"
        for query, k in (("casual outfit", 4), ("", 3)):
            slate = client.recommend(request=build_request(query, k, history=["tp-005"]), deadline=10)
            _valid(slate, k)
            assert slate.strategy == pb.STRATEGY_FALLBACK
            assert slate.fallback_reason == pb.FALLBACK_REASON_ENGINE_DEAD
            assert all(it.source == pb.ITEM_SOURCE_FALLBACK for it in slate.items)
    assert trained_server.process.poll() is None
