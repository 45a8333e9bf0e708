"""Process wiring: catalogue, engine, gRPC services, health, reflection, metrics.

Health follows KServe's split between liveness and readiness:
``liveness`` is SERVING as soon as gRPC answers; ``""`` and
``slatewise.v1.SlateService`` become SERVING once start-up is complete (the
engine warmed up, or failed and left the pointwise path to serve);
``slatewise.v1.Model`` is SERVING only while the model path is.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from slatewise.api.auth import BearerTokenInterceptor, load_tokens
from slatewise.api.catalogue_service import CatalogueService
from slatewise.api.feedback_service import FeedbackService
from slatewise.api.model_service import ModelService
from slatewise.api.slate_service import SlateService
from slatewise.catalogue.loader import embedded_catalogue_path, load_jsonl
from slatewise.catalogue.store import CatalogueStore
from slatewise.config import Settings
from slatewise.embeddings import Embedder
from slatewise.feedback.store import FeedbackStore
from slatewise.metrics import Metrics, start_metrics_server
from slatewise.model.composer import SlateComposer
from slatewise.model.engine import Engine, EngineState
from slatewise.model.swap import ModelSwitcher
from slatewise.proto import pb, pb_grpc
from slatewise.recommender import Recommender
from slatewise.resilience.stalls import watch_event_loop, watch_gc
from slatewise.tracing import server_interceptors

log = logging.getLogger(__name__)

SERVICE_NAMES = {
    "overall": "",
    "slates": pb.DESCRIPTOR.services_by_name["SlateService"].full_name,
    "catalogue": pb.DESCRIPTOR.services_by_name["CatalogueService"].full_name,
    "model": "slatewise.v1.Model",
    "liveness": "liveness",
}
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def limit_torch_threads() -> None:
    """One torch thread in the server process (the engine's processes set their own).

    The server's torch work is small tensors: a trained model's prompt
    embeddings in vLLM's frontend, never a model (queries run in ONNX
    Runtime). With torch's default team, each such op wakes an OpenMP thread
    that then spins on the other core: measured with the ML-100K model, a
    query-only slate's engine phase took 2.3 ms longer than a history-only
    one's, 0.4 ms longer with one thread (docs/BENCHMARKS.md).
    """
    import torch

    torch.set_num_threads(1)


def limit_blas_threads() -> None:
    """One BLAS thread in the server process, for the same reason as torch's.

    The server's BLAS calls are small: a request's DPP kernel over its
    candidates (``model/plan.py``, the hedge's DPP in ``pointwise/``). After
    each, OpenBLAS's default team of one thread per core spins for a while on
    the core vLLM's engine needs. Measured on a 2-core AVX2 machine with the
    ML-100K model: the server's CPU per slate at concurrency 1 fell from 57.7
    to 19.7 ms with one thread (docs/BENCHMARKS.md). threadpoolctl rather than
    ``OPENBLAS_NUM_THREADS``: numpy is imported long before this runs, and the
    variable would also reach the engine's processes. It reaches only the
    libraries loaded by then: faiss, imported for catalogues past
    ``Retriever``'s exact limit, brings its own OpenBLAS and OpenMP later and
    keeps their default for its index build; its one-query searches leave
    them idle (no CPU beyond the search's own, docs/BENCHMARKS.md).
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def limit_server_threads() -> None:
    """The server process's thread limits, in one place so that whatever
    measures the server against raw vLLM (bench_model_path's raw engine) runs
    its frontend under the same ones."""
    limit_torch_threads()
    limit_blas_threads()


class SlatewiseServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.health = health.aio.HealthServicer()
        self.engine = Engine(settings)
        self.composer = SlateComposer(self.engine, settings)
        self.grpc_port: int | None = None
        self.metrics_port: int | None = None
        self._server: grpc.aio.Server | None = None
        self.slates: SlateService | None = None  # the servicer: its last bookkeeping is flushed at stop
        self._metrics_http = None
        self._engine_task: asyncio.Task | None = None
        self._lag_task: asyncio.Task | None = None
        self.recommender: Recommender | None = None
        self.feedback: FeedbackStore | None = None
        self.switcher: ModelSwitcher | None = None

    async def _set_health(self, names, status) -> None:
        for name in names:
            await self.health.set(SERVICE_NAMES[name], status)

    def _catalogue_source(self) -> Path:
        return self.settings.catalogue_path or embedded_catalogue_path()

    async def start(self) -> None:
        s = self.settings
        source = self._catalogue_source()
        limit_server_threads()
        # Fail fast (and name the line) before binding any port.
        items = await asyncio.to_thread(load_jsonl, source)
        embedder = await asyncio.to_thread(Embedder, s.embedding_model, s.embedding_cache_dir,
                                           runtime=s.embedding_runtime)
        for problem in self.composer.startup_problems(items, s.embedding_model, embedder.dim):
            log.warning("trained model %s: %s", self.engine.model_id, problem)
        store = await asyncio.to_thread(CatalogueStore, items, embedder)
        self.metrics.set_catalogue(len(store.snapshot), store.snapshot.version, str(source))
        self.recommender = Recommender(s, store, embedder, self.engine, self.composer, self.metrics)
        if s.feedback_dir is not None or s.feedback_sink == "kafka":
            self.feedback = await FeedbackStore.open(s, self.metrics)
        self.switcher = (ModelSwitcher(s, self.recommender, self.metrics, on_engine=self._attach_engine)
                         if s.model_enabled else None)

        options = [
            ("grpc.max_receive_message_length", s.max_message_bytes),
            ("grpc.max_send_message_length", s.max_message_bytes),
            ("grpc.so_reuseport", 0),
            ("grpc.max_connection_age_ms", int(s.max_connection_age_seconds * 1000)),
            ("grpc.max_connection_age_grace_ms", int(s.shutdown_grace_seconds * 1000) + 5000),
        ]
        interceptors = server_interceptors(s)
        if s.auth_tokens_file is not None:
            interceptors.append(BearerTokenInterceptor(load_tokens(s.auth_tokens_file)))
        server = grpc.aio.server(options=options, interceptors=interceptors)
        self.slates = SlateService(s, self.recommender, self.metrics, self.feedback)
        pb_grpc.add_SlateServiceServicer_to_server(self.slates, server)
        pb_grpc.add_FeedbackServiceServicer_to_server(FeedbackService(self.feedback), server)
        pb_grpc.add_ModelServiceServicer_to_server(ModelService(self.switcher), server)
        pb_grpc.add_CatalogueServiceServicer_to_server(
            CatalogueService(s, store, self.metrics, str(source)), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            [*SERVICE_NAMES.values()][1:3] + [pb.DESCRIPTOR.services_by_name[name].full_name
                                              for name in ("FeedbackService", "ModelService")]
            + [health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        await self._set_health(["overall", "slates", "catalogue", "model"], NOT_SERVING)
        address = f"{s.host}:{s.grpc_port}"
        if s.tls_enabled:
            ca = s.tls_client_ca_file.read_bytes() if s.tls_client_ca_file else None
            credentials = grpc.ssl_server_credentials(
                [(s.tls_key_file.read_bytes(), s.tls_cert_file.read_bytes())],
                root_certificates=ca, require_client_auth=ca is not None,
            )
            self.grpc_port = server.add_secure_port(address, credentials)
        else:
            self.grpc_port = server.add_insecure_port(address)
        if self.grpc_port == 0:
            raise RuntimeError(f"cannot bind gRPC on {s.host}:{s.grpc_port}")
        self._metrics_http, self.metrics_port = start_metrics_server(self.metrics, s.metrics_host, s.metrics_port)
        self._lag_task = asyncio.create_task(watch_event_loop(self.metrics))
        watch_gc(self.metrics)
        await server.start()
        self._server = server
        await self._set_health(["liveness", "catalogue"], SERVING)
        log.info("gRPC on %s:%d, metrics on %s:%d", s.host, self.grpc_port, s.metrics_host, self.metrics_port)
        self._attach_engine(self.engine)
        self.metrics.engine_unfinished.set_function(lambda: self.recommender.engine.num_unfinished_requests())
        if s.model_enabled:
            self._engine_task = asyncio.create_task(self._start_engine())
        else:
            _freeze_heap()
            await self._set_health(["overall", "slates"], SERVING)

    def _attach_engine(self, engine: Engine) -> None:
        """The engine serving now (at start, or after a hot-swap) drives the
        model health and metrics; an engine swapped out no longer does."""
        self.engine = engine
        engine.on_state_change(lambda state: self._on_engine_state(engine, state))
        if engine.state is EngineState.READY:
            self._on_engine_state(engine, engine.state)

    def _on_engine_state(self, engine: Engine, state: EngineState) -> None:
        if engine is not self.recommender.engine:
            return
        self.metrics.engine_ready.set(1 if state is EngineState.READY else 0)
        status = SERVING if state is EngineState.READY else NOT_SERVING
        asyncio.get_running_loop().create_task(self._set_health(["model"], status))

    async def _start_engine(self) -> None:
        assert self.recommender is not None
        ok = await self.engine.start(warmup=self.recommender.warmup)
        if not ok:
            log.error("model path unavailable, serving pointwise: %s", self.engine.last_error)
        # Ready either way: the pointwise path answers whenever the model cannot.
        _freeze_heap()
        await self._set_health(["overall", "slates"], SERVING)
        await self._supervise()

    async def _supervise(self) -> None:
        """Watch the engine; rebuild it in-process when it dies. Meanwhile the
        model health is NOT_SERVING and requests are served pointwise."""
        assert self.recommender is not None
        s = self.settings
        while True:
            await asyncio.sleep(s.engine_health_interval_seconds)
            engine = self.recommender.engine  # the one serving now (hot-swaps replace it)
            if engine.state is EngineState.READY:
                await engine.check_health()
            if engine.state is EngineState.DEAD and s.engine_restart:
                t0 = asyncio.get_running_loop().time()
                log.warning("rebuilding the engine")
                if await engine.restart(warmup=self.recommender.warmup):
                    took = asyncio.get_running_loop().time() - t0
                    self.metrics.engine_restarts.inc()
                    self.metrics.engine_recovery_seconds.set(took)
                    self.recommender.circuit.reset()
                    log.warning("engine rebuilt in %.1fs", took)

    async def stop(self, grace: float | None = None) -> None:
        await self._set_health(["overall", "slates", "catalogue", "model"], NOT_SERVING)
        if self._server is not None:
            await self._server.stop(grace if grace is not None else self.settings.shutdown_grace_seconds)
            self.slates.flush()  # the last slates' metrics and log lines, not dropped with the loop
        for task in (self._engine_task, self._lag_task):
            if task is not None and not task.done():
                task.cancel()
        if self.switcher is not None:
            await self.switcher.close()
        await self.engine.shutdown()
        if self.feedback is not None:
            await self.feedback.close()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()

    async def wait(self) -> None:
        assert self._server is not None
        await self._server.wait_for_termination()


def _freeze_heap() -> None:
    """Move everything start-up allocated (torch, vLLM, the catalogue) out of
    the garbage collector's sight: a full collection then walks only what
    requests allocate, instead of pausing the event loop for tens of
    milliseconds, which deadlines cannot afford."""
    gc.collect()
    gc.freeze()


async def serve(settings: Settings) -> None:
    server = SlatewiseServer(settings)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: draining for up to %.0fs", settings.shutdown_grace_seconds)
    await server.stop()
