"""Prometheus metrics of one server instance, plus vLLM's own on one endpoint.

Our metrics live in a registry owned by the server object (no module-level
globals, so tests can run several servers in one process); vLLM registers its
``vllm:*`` metrics in prometheus_client's default registry, and the /metrics
endpoint serves both.
"""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
)
from prometheus_client.exposition import MetricsHandler

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
                   1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
UNIT_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
DELTA_BUCKETS = tuple(round(-1 + 0.1 * i, 1) for i in range(21))
STALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0)
TOKEN_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128)
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "slatewise_requests", "Finished RPCs by method, strategy used and gRPC status code.",
            ["method", "strategy", "code"], registry=r)
        self.latency = Histogram(
            "slatewise_request_duration_seconds", "Time from request arrival to complete slate.",
            ["strategy"], buckets=LATENCY_BUCKETS, registry=r)
        self.time_to_first_item = Histogram(
            "slatewise_time_to_first_item_seconds", "Time from request arrival to the first decided item.",
            ["strategy"], buckets=LATENCY_BUCKETS, registry=r)
        self.fallbacks = Counter(
            "slatewise_fallbacks", "Slates not (entirely) written by the model, by reason.",
            ["reason"], registry=r)
        self.intra_list_diversity = Histogram(
            "slatewise_slate_intra_list_diversity", "Mean pairwise embedding distance within a slate.",
            ["strategy"], buckets=UNIT_BUCKETS, registry=r)
        self.category_coverage = Histogram(
            "slatewise_slate_category_coverage", "Distinct categories in a slate over the most it could cover.",
            ["strategy"], buckets=UNIT_BUCKETS, registry=r)
        self.redundancy = Histogram(
            "slatewise_slate_redundancy", "Share of a slate taken by its most common category.",
            ["strategy"], buckets=UNIT_BUCKETS, registry=r)
        self.model_tokens = Histogram(
            "slatewise_model_generated_tokens", "Tokens the model generated per slate.",
            buckets=TOKEN_BUCKETS, registry=r)
        self.shadow_comparisons = Counter(
            "slatewise_shadow_comparisons", "Model slates compared with the pointwise slate for the same request.",
            registry=r)
        self.shadow_diversity_delta = Histogram(
            "slatewise_shadow_diversity_delta", "Model slate minus pointwise slate, per diversity metric.",
            ["metric"], buckets=DELTA_BUCKETS, registry=r)
        self.shadow_overlap = Histogram(
            "slatewise_shadow_overlap", "Share of the model slate's items also in the pointwise slate.",
            buckets=(0.0,) + UNIT_BUCKETS, registry=r)
        self.inflight = Gauge(
            "slatewise_inflight_requests", "Slate requests being served now.", registry=r)
        self.engine_ready = Gauge(
            "slatewise_engine_ready", "1 when the model engine accepts requests, else 0.", registry=r)
        self.engine_unfinished = Gauge(
            "slatewise_engine_unfinished_requests", "Requests the engine holds that have not finished.", registry=r)
        self.engine_restarts = Counter(
            "slatewise_engine_restarts", "Times a dead engine was rebuilt in-process.", registry=r)
        self.engine_recovery_seconds = Gauge(
            "slatewise_engine_recovery_seconds", "Duration of the last engine rebuild (start-up and warm-up).", registry=r)
        self.event_loop_lag = Histogram(
            "slatewise_event_loop_lag_seconds",
            "How late a periodic tick of the server's event loop ran: what any answer waited then.",
            buckets=STALL_BUCKETS, registry=r)
        self.gc_pause = Histogram(
            "slatewise_gc_pause_seconds", "Duration of each garbage collection of the server process.",
            ["generation"], buckets=STALL_BUCKETS, registry=r)
        self.circuit_state = Gauge(
            "slatewise_circuit_state", "Model circuit breaker: 0 closed, 1 half-open, 2 open.", registry=r)
        self.model_slates = Counter(
            "slatewise_model_slates", "Slates with model-written items, by the model that wrote them.",
            ["model_id"], registry=r)
        self.model_info = Info(
            "slatewise_model", "The model serving now (model_id, path) and the one a rollback restores.",
            registry=r)
        self.model_switches = Counter(
            "slatewise_model_switches", "Hot-swaps that took traffic, by kind (load, rollback).",
            ["kind"], registry=r)
        self.model_load_failures = Counter(
            "slatewise_model_load_failures", "Hot-swap candidates that failed to load or warm up (never served).",
            registry=r)
        self.model_load_seconds = Gauge(
            "slatewise_model_load_seconds", "Duration of the last hot-swap load (engine start and warm-up).",
            registry=r)
        self.candidate_overlap = Histogram(
            "slatewise_candidate_shadow_overlap",
            "Hot-swap shadow: share of the candidate model's slate also in the serving model's, per replayed request.",
            buckets=(0.0,) + UNIT_BUCKETS, registry=r)
        self.candidate_diversity_delta = Histogram(
            "slatewise_candidate_shadow_diversity_delta",
            "Hot-swap shadow: candidate model's slate minus the serving model's, per diversity metric.",
            ["metric"], buckets=DELTA_BUCKETS, registry=r)
        self.feedback_events = Counter(
            "slatewise_feedback_events", "Reported feedback events by outcome (accepted, duplicate, invalid).",
            ["outcome"], registry=r)
        self.feedback_append_seconds = Histogram(
            "slatewise_feedback_append_seconds",
            "Time for feedback records (an event batch or a served slate) to become durable.",
            buckets=STALL_BUCKETS, registry=r)
        self.catalogue_items = Gauge(
            "slatewise_catalogue_items", "Items in the served catalogue.", registry=r)
        self.catalogue_version = Gauge(
            "slatewise_catalogue_version", "Version of the served catalogue.", registry=r)
        self.catalogue_info = Info(
            "slatewise_catalogue", "Served catalogue (source and version).", registry=r)

    def observe_slate(self, strategy: str, diversity, total: float, first_item: float | None) -> None:
        self.latency.labels(strategy).observe(total)
        if first_item is not None:
            self.time_to_first_item.labels(strategy).observe(first_item)
        self.intra_list_diversity.labels(strategy).observe(diversity.intra_list_diversity)
        self.category_coverage.labels(strategy).observe(diversity.category_coverage)
        self.redundancy.labels(strategy).observe(diversity.redundancy)

    def set_catalogue(self, size: int, version: int, source: str) -> None:
        self.catalogue_items.set(size)
        self.catalogue_version.set(version)
        self.catalogue_info.info({"source": source, "version": str(version)})


class _Both:
    """A collector that yields our metrics, then whatever is in the default registry."""

    def __init__(self, ours: CollectorRegistry) -> None:
        self.ours = ours

    def collect(self):
        yield from self.ours.collect()
        yield from REGISTRY.collect()


def start_metrics_server(metrics: Metrics, host: str, port: int) -> tuple[ThreadingHTTPServer, int]:
    """Serve /metrics on a daemon thread; returns the server and its bound port."""
    combined = CollectorRegistry(auto_describe=False)
    combined.register(_Both(metrics.registry))
    handler = MetricsHandler.factory(combined)
    httpd = ThreadingHTTPServer((host, port), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return httpd, httpd.server_address[1]
