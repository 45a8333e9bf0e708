"""/metrics after real requests: counters and histograms move as they should."""

from __future__ import annotations

import grpc
import pytest

from conftest import start_server, stop_server
from fault_scenarios import scrape, scrape_when, slates_observed
from slatewise_client import SlateClient


def _get(metrics, name, **labels):
    key = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
    return metrics.get(key, 0.0)


@pytest.mark.model
def test_model_server_metrics_move(model_server):
    before = scrape(model_server.metrics_url)
    with SlateClient(model_server.target) as client:
        client.recommend("casual outfit", k=4, strategy="model")
        list(client.recommend_stream("winter hiking", k=3, strategy="model"))
        client.recommend("casual outfit", k=4, strategy="pointwise")
        # A deadline shorter than the first item forces a deadline fallback.
        forced, sent = None, 3
        for _ in range(5):
            sent += 1
            try:
                forced = client.recommend("a business trip to a cold city", k=10, strategy="model",
                                          deadline=0.09)
            except grpc.RpcError as err:  # the answer must come in time; say so if not
                pytest.fail(f"deadline not honoured: {err.code()}")
            if forced.fallback_reason:
                break
    after = scrape_when(model_server.metrics_url, lambda m: slates_observed(m) - slates_observed(before) >= sent)

    def moved(name, **labels):
        return _get(after, name, **labels) - _get(before, name, **labels)

    assert moved("slatewise_requests_total", method="Recommend", strategy="model", code="OK") >= 1
    assert moved("slatewise_requests_total", method="RecommendStream", strategy="model", code="OK") == 1
    assert moved("slatewise_requests_total", method="Recommend", strategy="pointwise", code="OK") == 1
    assert forced is not None and forced.fallback_reason
    assert moved("slatewise_fallbacks_total", reason="deadline") >= 1
    fallback_label = "partial" if forced.strategy == 4 else "fallback"
    for strategy in ("model", "pointwise", fallback_label):
        for hist in ("slatewise_slate_intra_list_diversity", "slatewise_slate_category_coverage",
                     "slatewise_slate_redundancy", "slatewise_request_duration_seconds",
                     "slatewise_time_to_first_item_seconds"):
            assert moved(hist + "_count", strategy=strategy) >= 1, (hist, strategy)
    assert moved("slatewise_model_generated_tokens_count") >= 2
    assert moved("slatewise_shadow_comparisons_total") >= 2  # the fixture samples every model slate
    assert moved("slatewise_shadow_overlap_count") >= 2
    assert _get(after, "slatewise_engine_ready") == 1
    assert _get(after, "slatewise_circuit_state") == 0
    assert _get(after, "slatewise_inflight_requests") == 0
    vllm = [name for name in after if name.startswith("vllm:")]
    for family in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:prefix_cache_hits_total",
                   "vllm:time_to_first_token_seconds_count", "vllm:kv_cache_usage_perc"):
        assert any(name.startswith(family) for name in vllm), family
    hits = sum(v for k, v in after.items() if k.startswith("vllm:prefix_cache_hits_total"))
    assert hits > 0


def test_otel_console_traces_the_grpc_calls(tmp_path):
    server = start_server(tmp_path, "--model", "", "--otel-traces", "console")
    try:
        with SlateClient(server.target) as client:
            client.recommend("casual outfit", k=2)
    finally:
        stop_server(server)
    log = server.log_path.read_text()
    assert "/slatewise.v1.SlateService/Recommend" in log
    assert '"trace_id"' in log
