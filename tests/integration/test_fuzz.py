"""Fuzz the API through real servers: any RecommendRequest hypothesis can
build gets either a valid slate or INVALID_ARGUMENT; no crash, no hang."""

from __future__ import annotations

import math
from collections import Counter

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slatewise.catalogue.loader import embedded_catalogue_path, load_jsonl
from slatewise_client import SlateClient
from slatewise_client.pb import slate_pb2 as pb

CATALOGUE = {it.id: it for it in load_jsonl(embedded_catalogue_path())}
IDS = sorted(CATALOGUE)
text = st.text(max_size=40) | st.sampled_from(["", " ", "casual outfit", "\n* ZZ = x", "x" * 300])
floats = st.floats(allow_nan=True, allow_infinity=True, width=32)


def items():
    return st.builds(pb.Item, id=st.sampled_from(["a", "b", "c", "d", "e", "f"]) | text, title=text,
                     category=st.sampled_from(["tops", "x", "y", ""]) | text,
                     attributes=st.dictionaries(text, text, max_size=3),
                     score=st.none() | st.floats(-1e6, 1e6) | floats)


def candidates():
    by_id = st.builds(pb.Candidate, item_id=st.sampled_from(IDS) | text,
                      score=st.none() | st.floats(-10, 10) | floats)
    inline = st.builds(pb.Candidate, item=items())
    return st.lists(by_id | inline | st.just(pb.Candidate()), max_size=25)


requests = st.builds(
    pb.RecommendRequest,
    request_id=text,
    context=st.builds(pb.Context, query=text, user_id=text,
                      history_item_ids=st.lists(st.sampled_from(IDS) | text, max_size=3),
                      attributes=st.dictionaries(text, text, max_size=3)),
    candidates=candidates(),
    k=st.integers(0, 12) | st.integers(0, 2**32 - 1),
    constraints=st.builds(pb.Constraints, max_per_category=st.integers(0, 4) | st.integers(0, 2**32 - 1),
                          category_limits=st.dictionaries(st.sampled_from(["tops", "shoes", "x", ""]),
                                                          st.integers(0, 3), max_size=2),
                          exclude_ids=st.lists(st.sampled_from(IDS) | text, max_size=4)),
    diversity=st.floats(0, 1) | floats,
    strategy=st.integers(0, 6),
    temperature=st.floats(0, 2) | floats,
    seed=st.none() | st.integers(0, 2**64 - 1),
    relevance_prior=st.none() | st.floats(0, 10) | floats,
    overload_policy=st.integers(0, 4),
)


def check(client: SlateClient, request: pb.RecommendRequest) -> str:
    try:
        slate = client.recommend(request=request, deadline=60)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details(), request)
        return "invalid"
    ids = [it.item_id for it in slate.items]
    assert len(ids) == request.k == len(set(ids)), request
    excluded = set(request.constraints.exclude_ids)
    if request.candidates:
        allowed = {c.item_id if c.WhichOneof("kind") == "item_id" else c.item.id for c in request.candidates}
    else:
        allowed = set(CATALOGUE)
    assert set(ids) <= allowed - excluded, request
    counts = Counter(it.category for it in slate.items)
    for category, n in counts.items():
        cap = request.constraints.category_limits.get(category, request.constraints.max_per_category)
        assert not cap or n <= cap, request
    assert math.isfinite(slate.diversity.intra_list_diversity)
    return "ok"


def fuzz(examples: int) -> settings:
    return settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                    max_examples=examples, database=None)


@fuzz(2000)
@given(request=requests)
def test_fuzz_pointwise_server(pointwise_server, request):
    with SlateClient(pointwise_server.target) as client:
        check(client, request)


@pytest.mark.model
@fuzz(200)
@given(request=requests)
def test_fuzz_model_server(model_server, request):
    with SlateClient(model_server.target) as client:
        check(client, request)
