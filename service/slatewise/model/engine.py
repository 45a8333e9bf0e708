"""vLLM's AsyncLLM behind a narrow interface: start, stream tokens, abort, stop.

Everything above this module speaks in prompt token ids, slate specs and
committed token ids; nothing else imports vLLM. The engine is built in a
worker thread (vLLM's start-up blocks for tens of seconds) so the gRPC server
keeps answering health checks, NOT_SERVING, while the model loads.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from slatewise.config import Settings
from slatewise.decoding.automaton import SlateSpec
from slatewise.model.prepare import resolve_model

log = logging.getLogger(__name__)

V1_PROCESSOR = "slatewise.decoding.vllm_v1:SlateLogitsProcessorV1"
V2_PROCESSOR = "slatewise.decoding.vllm_v2:SlateLogitsProcessorV2"


class EngineState(enum.Enum):
    DISABLED = "disabled"
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"  # start-up failed
    DEAD = "dead"  # was ready, the engine core died
    STOPPED = "stopped"


class EngineUnavailable(RuntimeError):
    """The engine cannot take requests now (not started, dead or stopped)."""


class EngineRequestError(RuntimeError):
    """One request failed inside the engine; the engine itself may be fine."""

    def __init__(self, message: str, dead: bool = False):
        super().__init__(message)
        self.dead = dead


class Engine:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = EngineState.DISABLED if not settings.model_enabled else EngineState.STOPPED
        self.llm = None
        self.tokenizer = None
        self.uses_v2_runner = False
        self.started_at: float | None = None
        self.startup_seconds: float | None = None
        self.last_error: str | None = None
        self._state_listeners: list[Callable[[EngineState], None]] = []

    # ---- lifecycle ---------------------------------------------------------
    def on_state_change(self, listener: Callable[[EngineState], None]) -> None:
        self._state_listeners.append(listener)

    def _set_state(self, state: EngineState) -> None:
        self.state = state
        for listener in self._state_listeners:
            listener(state)

    @property
    def ready(self) -> bool:
        return self.state is EngineState.READY

    def _engine_args(self):
        from vllm.engine.arg_utils import AsyncEngineArgs

        s = self.settings
        memory = (
            {"gpu_memory_utilization": s.gpu_memory_utilization}
            if s.gpu_memory_utilization is not None
            else {"kv_cache_memory_bytes": s.kv_cache_memory_bytes}
        )
        return AsyncEngineArgs(
            model=resolve_model(s.model, s.model_cache_dir),
            served_model_name=s.model_id,
            dtype=s.dtype,
            max_model_len=s.max_model_len,
            enforce_eager=s.enforce_eager,
            max_num_seqs=s.max_num_seqs,
            tensor_parallel_size=s.tensor_parallel_size,
            pipeline_parallel_size=s.pipeline_parallel_size,
            distributed_executor_backend=s.distributed_executor_backend,
            enable_prefix_caching=s.enable_prefix_caching,
            logits_processors=[V1_PROCESSOR],
            disable_log_stats=False,
            **memory,
        )

    def _build(self):
        """Blocking: runs in a worker thread."""
        from vllm.v1.engine.async_llm import AsyncLLM

        if self.settings.cpu_omp_threads_bind:
            # Read by the engine core process, which inherits our environment.
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = self.settings.cpu_omp_threads_bind
        if self.settings.model_runner != "auto":
            os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "1" if self.settings.model_runner == "v2" else "0"
        config = self._engine_args().create_engine_config()
        # The two runners take different processor interfaces; vLLM decides
        # which runner it uses (V1 on CPU, V2 on recent GPUs), we follow.
        self.uses_v2_runner = bool(config.use_v2_model_runner)
        config.model_config.logits_processors = [
            V2_PROCESSOR if self.uses_v2_runner else V1_PROCESSOR
        ]
        llm = AsyncLLM.from_vllm_config(config, disable_log_stats=False)
        return llm, llm.get_tokenizer()

    async def start(self, warmup: Callable[[], Awaitable[None]] | None = None) -> bool:
        """Build the engine and warm it up; returns whether it became READY."""
        if not self.settings.model_enabled:
            return False
        self._set_state(EngineState.STARTING)
        t0 = time.monotonic()
        try:
            self.llm, self.tokenizer = await asyncio.to_thread(self._build)
            if warmup is not None:
                await warmup()
        except Exception as exc:  # noqa: BLE001 - any start-up failure means no model path
            log.exception("engine start-up failed")
            self.last_error = f"{type(exc).__name__}: {exc}"
            await self._close_llm()
            self._set_state(EngineState.FAILED)
            return False
        self.startup_seconds = time.monotonic() - t0
        self.started_at = time.time()
        self._set_state(EngineState.READY)
        log.info("engine ready in %.1fs (model runner %s)", self.startup_seconds,
                 "v2" if self.uses_v2_runner else "v1")
        return True

    async def _close_llm(self, timeout: float = 30.0) -> None:
        llm, self.llm = self.llm, None
        if llm is not None:
            try:
                await asyncio.wait_for(asyncio.to_thread(llm.shutdown), timeout)
            except Exception:  # noqa: BLE001 - a dead engine may not stop cleanly (or in time)
                log.warning("engine shutdown did not complete cleanly", exc_info=True)

    async def check_health(self) -> bool:
        """Ask the engine core whether it lives; a dead one moves us to DEAD."""
        if self.state is not EngineState.READY or self.llm is None:
            return self.ready
        try:
            await asyncio.wait_for(self.llm.check_health(), 10.0)
            if not self.llm.errored:
                return True
        except Exception as exc:  # noqa: BLE001 - any failure here means dead
            self.last_error = f"health check failed: {type(exc).__name__}: {exc}"
        else:
            self.last_error = "engine errored"
        log.error("engine is dead: %s", self.last_error)
        self._set_state(EngineState.DEAD)
        return False

    async def restart(self, warmup: Callable[[], Awaitable[None]] | None = None) -> bool:
        """Replace a dead engine with a new one, in this process. A rebuild
        that fails leaves the engine DEAD, so the supervisor tries again."""
        await self._close_llm()
        if await self.start(warmup):
            return True
        self._set_state(EngineState.DEAD)
        return False

    async def shutdown(self) -> None:
        await self._close_llm()
        if self.state is not EngineState.DISABLED:
            self._set_state(EngineState.STOPPED)

    # ---- requests ----------------------------------------------------------
    def num_unfinished_requests(self) -> int:
        return self.llm.get_num_unfinished_requests() if self.llm is not None else 0

    async def stream(self, prompt_tokens: list[int], spec: SlateSpec, *, request_id: str,
                     temperature: float = 0.0, seed: int | None = None,
                     allow_warming: bool = False) -> AsyncIterator[int]:
        """Yield each token the moment the engine commits it.

        Closing the iterator early (cancel, deadline) aborts the request in
        the engine, so no abandoned request keeps a batch slot.
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.exceptions import EngineDeadError

        usable = self.ready or (allow_warming and self.state is EngineState.STARTING)
        if not usable or self.llm is None:
            raise EngineUnavailable(self.state.value)
        params = SamplingParams(
            temperature=temperature,
            seed=seed,
            max_tokens=spec.k + 1,
            extra_args=spec.to_extra_args(),
            output_kind=RequestOutputKind.DELTA,
            detokenize=False,
            skip_special_tokens=False,
        )
        finished = False
        try:
            async for out in self.llm.generate(
                TokensPrompt(prompt_token_ids=prompt_tokens), params, request_id=request_id
            ):
                for token in out.outputs[0].token_ids:
                    yield token
                finished = out.finished
        except EngineDeadError as exc:
            self.last_error = f"engine dead: {exc}"
            if self.state is EngineState.READY:
                self._set_state(EngineState.DEAD)
            raise EngineRequestError(str(exc) or "engine dead", dead=True) from exc
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:  # noqa: BLE001 - vLLM wraps request failures variously
            if self.llm is not None and self.llm.errored:
                if self.state is EngineState.READY:
                    self._set_state(EngineState.DEAD)
                raise EngineRequestError(f"engine dead: {exc}", dead=True) from exc
            raise EngineRequestError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            if not finished and self.llm is not None and not self.llm.errored:
                await self.llm.abort(request_id)
