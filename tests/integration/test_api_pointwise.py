"""The API through a real server on loopback (pointwise path, no model)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections import Counter

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from slatewise_client import SlateClient, build_request, field_violations
from slatewise_client.pb import slate_pb2 as pb

CATEGORIES = {"tops", "bottoms", "shoes", "outerwear", "accessories"}


@pytest.fixture(scope="module")
def client(pointwise_server):
    with SlateClient(pointwise_server.target) as c:
        yield c


def _check_slate(slate, k, allowed=None, cap=0, exclude=()):
    ids = [it.item_id for it in slate.items]
    assert len(ids) == k and len(set(ids)) == k
    assert [it.position for it in slate.items] == list(range(k))
    if allowed is not None:
        assert set(ids) <= set(allowed)
    assert not set(ids) & set(exclude)
    if cap:
        assert max(Counter(it.category for it in slate.items).values()) <= cap
    assert 0.0 <= slate.diversity.intra_list_diversity <= 2.0
    assert 0.0 < slate.diversity.category_coverage <= 1.0
    assert slate.timings.total_seconds >= slate.timings.time_to_first_item_seconds >= 0


def test_health_reflection_and_catalogue_info(client, pointwise_server):
    assert client.health() == "SERVING"
    assert client.health("liveness") == "SERVING"
    assert client.health("slatewise.v1.SlateService") == "SERVING"
    assert client.health("slatewise.v1.Model") == "NOT_SERVING"  # no model configured
    info = client.catalogue_info()
    assert info.size >= 150 and info.version >= 1
    assert set(info.categories) == CATEGORIES

    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"slatewise.v1.SlateService", "slatewise.v1.CatalogueService", "grpc.health.v1.Health"} <= names


def test_casual_outfit_pointwise_top_k_is_redundant_and_diversity_fixes_it(client):
    plain = client.recommend("casual outfit", k=3, strategy="pointwise")
    _check_slate(plain, 3)
    assert plain.strategy == pb.STRATEGY_POINTWISE
    assert plain.fallback_reason == pb.FALLBACK_REASON_UNSPECIFIED
    assert all(it.source == pb.ITEM_SOURCE_FALLBACK for it in plain.items)
    # The motivating failure: top-K of independent scores repeats one kind of item.
    assert len({it.category for it in plain.items}) == 1
    diverse = client.recommend("casual outfit", k=3, strategy="pointwise", diversity=0.8)
    _check_slate(diverse, 3)
    assert diverse.diversity.category_coverage > plain.diversity.category_coverage
    assert diverse.diversity.intra_list_diversity > plain.diversity.intra_list_diversity


def test_auto_without_model_serves_pointwise(client):
    slate = client.recommend("rainy autumn commute", k=5)
    _check_slate(slate, 5)
    assert slate.strategy == pb.STRATEGY_POINTWISE
    assert slate.model_id == ""


def test_constraints_and_candidates(client):
    info = client.catalogue_info()
    full = client.recommend("a wedding guest look", k=40, strategy="pointwise")
    pool = [it.item_id for it in full.items]
    exclude = pool[:5]
    for diversity in (0.0, 0.5, 1.0):
        slate = client.recommend("a wedding guest look", k=6, strategy="pointwise", candidates=pool,
                                 exclude_ids=exclude, max_per_category=2, diversity=diversity)
        _check_slate(slate, 6, allowed=pool, cap=2, exclude=exclude)
        assert slate.catalogue_version == info.version


def test_inline_items_with_upstream_scores(client):
    items = [{"id": f"x{i}", "title": f"Thing {i}", "category": "c" + str(i % 3), "score": float(i)}
             for i in range(10)]
    slate = client.recommend("", k=3, strategy="pointwise", candidates=items)
    assert [it.item_id for it in slate.items] == ["x9", "x8", "x7"]
    assert [it.score for it in slate.items] == [9.0, 8.0, 7.0]
    capped = client.recommend("", k=3, strategy="pointwise", candidates=items, max_per_category=1)
    assert {it.item_id for it in capped.items} == {"x9", "x8", "x7"}
    capped = client.recommend("", k=4, strategy="pointwise", candidates=items, max_per_category=2)
    assert len({it.item_id for it in capped.items}) == 4
    assert max(Counter(it.category for it in capped.items).values()) <= 2


def test_stream_sends_items_then_summary(client):
    events = list(client.recommend_stream("beach holiday", k=4, strategy="pointwise", diversity=0.5))
    assert [e.WhichOneof("event") for e in events] == ["item"] * 4 + ["slate"]
    summary = events[-1].slate
    assert [e.item.item_id for e in events[:4]] == [it.item_id for it in summary.items]
    _check_slate(summary, 4)


def _violations(client, request):
    with pytest.raises(grpc.RpcError) as err:
        client.recommend(request=request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return dict(field_violations(err.value))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(k=0), "k"),
        (dict(k=1000), "k"),
        (dict(k=3, diversity=1.5), "diversity"),
        (dict(k=3, temperature=-1), "temperature"),
        (dict(k=3, query="x" * 5000), "context.query"),
        (dict(k=3, candidates=["nope"]), "candidates[0].item_id"),
        (dict(k=2, candidates=["tp-001", "tp-001", "tp-002"]), "candidates[1]"),
        (dict(k=3, candidates=["tp-001", "tp-002"]), "k"),
        (dict(k=2, candidates=["tp-001", "tp-002"], exclude_ids=["tp-001"]), "k"),
        (dict(k=3, candidates=["tp-001", "tp-002", "tp-003", "sh-001"], max_per_category=1),
         "constraints.max_per_category"),
        (dict(k=3, history=["missing"]), "context.history_item_ids[0]"),
        (dict(k=3, candidates=[{"id": "", "title": "t", "category": "c"}]), "candidates[0].item.id"),
        (dict(k=3, candidates=[{"id": "a", "title": "t" * 1000, "category": "c"}]),
         "candidates[0].item.title"),
    ],
)
def test_bad_input_is_invalid_argument_with_field_violations(client, kwargs, field):
    query = kwargs.pop("query", "casual outfit")
    k = kwargs.pop("k")
    violations = _violations(client, build_request(query, k, **kwargs))
    assert field in violations, violations


def test_several_violations_are_reported_together(client):
    violations = _violations(client, build_request("x" * 5000, 0, diversity=2.0))
    assert {"k", "diversity", "context.query"} <= set(violations)


def test_catalogue_upsert_delete_and_versions(client):
    before = client.catalogue_info()
    new = pb.CatalogueItem(id="test-hat-1", title="Bright orange bucket hat", category="accessories",
                           attributes={"style": "casual", "colour": "orange", "price": "15.00"})
    after = client.catalogue.UpsertItems(pb.UpsertItemsRequest(items=[new]))
    assert after.version == before.version + 1 and after.size == before.size + 1
    slate = client.recommend("orange bucket hat", k=1, strategy="pointwise")
    assert slate.items[0].item_id == "test-hat-1"
    assert slate.catalogue_version == after.version
    gone = client.catalogue.DeleteItems(pb.DeleteItemsRequest(item_ids=["test-hat-1"]))
    assert gone.size == before.size and gone.version == after.version + 1
    with pytest.raises(grpc.RpcError) as err:
        client.catalogue.DeleteItems(pb.DeleteItemsRequest(item_ids=["test-hat-1"]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "item_ids" in dict(field_violations(err.value))
    with pytest.raises(grpc.RpcError) as err:
        client.catalogue.UpsertItems(pb.UpsertItemsRequest(items=[pb.CatalogueItem(id="x")]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert any(f.startswith("items[0].") for f, _ in field_violations(err.value))


def test_metrics_endpoint(client, pointwise_server):
    client.recommend("gym session", k=3, strategy="pointwise")
    body = urllib.request.urlopen(pointwise_server.metrics_url, timeout=5).read().decode()
    assert 'slatewise_requests_total{code="OK",method="Recommend",strategy="pointwise"}' in body
    assert "slatewise_slate_intra_list_diversity_bucket" in body
    assert "slatewise_catalogue_items" in body


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "slatewise_client.cli", *args],
                          capture_output=True, text=True, timeout=60)


def test_cli_recommend_health_and_json(pointwise_server):
    target = pointwise_server.target
    out = _cli("recommend", "--target", target, "--query", "casual outfit", "-k", "3")
    assert out.returncode == 0, out.stderr
    assert len([line for line in out.stdout.splitlines() if line.strip()[:2].rstrip(".").isdigit()]) == 3
    out = _cli("recommend", "--target", target, "--query", "casual outfit", "-k", "3", "--json",
               "--strategy", "pointwise", "--deadline", "10")
    slate = json.loads(out.stdout)
    assert len(slate["items"]) == 3 and slate["strategy"] == "STRATEGY_POINTWISE"
    out = _cli("recommend", "--target", target, "--query", "casual outfit", "-k", "2", "--stream", "--json")
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert [next(iter(e)) for e in events] == ["item", "item", "slate"]
    out = _cli("health", "--target", target)
    assert out.returncode == 0 and out.stdout.strip() == "SERVING"
    out = _cli("recommend", "--target", target, "--query", "x", "-k", "0")
    assert out.returncode == 2 and "INVALID_ARGUMENT" in out.stderr and "k:" in out.stderr


def test_client_accepts_dns_targets_with_round_robin(pointwise_server):
    with SlateClient(f"dns:///127.0.0.1:{pointwise_server.grpc_port}") as client:
        assert client.health() == "SERVING"
        assert len(client.recommend("casual outfit", k=2, strategy="pointwise").items) == 2
