"""vLLM's AsyncLLM behind a narrow interface: start, stream tokens, abort, stop.

Everything above this module speaks in prompt token ids (or prompt
embeddings), slate specs and committed token ids; nothing else imports vLLM.
A model trained by ``slatewise train`` (a directory with a manifest) is
served without a text tokenizer and with prompt embeddings enabled (its
query is a soft token).

For a text model, vLLM's frontend lives on its own thread with its own event
loop (``slatewise-engine``): request set-up (SamplingParams validation, input
processing, sending to the engine core), the output handler that turns engine
core outputs into RequestOutputs, aborts and health checks all run there. The
server's loop, which answers callers and watches their deadlines, only
receives committed tokens through a queue. Before, these shared one loop, and
a burst of vLLM output processing or a request's set-up (up to 26 ms in one
callback, profiled under the deadline scenario) delayed the deadline watch
and the pointwise fill behind it. A trained model's prompt is at most ~23
token ids or embedding rows, quickly set up. For it the thread cost more
than it saved: each slate crossed between threads twice (the request in,
the last token out), each time waking a sleeping thread that then waited
for the GIL. So a trained model's frontend runs on the server's loop
(``engine_frontend``, docs/BENCHMARKS.md), where the task that answers the
caller reads the request's outputs itself (``_direct``). The engine is built on a worker
thread either way (vLLM's start-up blocks for tens of seconds) so the gRPC
server keeps answering health checks, NOT_SERVING, while the model loads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from slatewise.config import Settings
from slatewise.decoding.automaton import SlateSpec
from slatewise.model.item_prompts import TrainedModel, trained_model_dir
from slatewise.model.platform import (DtypeChoice, choose_dtype, descendant_pids, engine_cpu_bind,
                                      lower_priority, pin_engine_core, unpin_engine_core)
from slatewise.model.prepare import resolve_model

log = logging.getLogger(__name__)

T = TypeVar("T")
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


class _Bridge:
    """Carries (queue, item) pairs from the engine's thread to one event loop
    with one wake-up per burst: one engine step emits a token for every
    request in its batch, and a wake-up each (a write to the loop's
    self-pipe) cost ~9 % of the server's CPU at 16 concurrent slates."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: list[tuple[asyncio.Queue, object]] = []
        self.lock = threading.Lock()
        self.scheduled = False

    def put(self, queue: asyncio.Queue, item: object) -> None:
        with self.lock:
            self.pending.append((queue, item))
            if self.scheduled:
                return
            self.scheduled = True
        self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self.lock:
            batch, self.pending, self.scheduled = self.pending, [], False
        for queue, item in batch:
            queue.put_nowait(item)


class Engine:
    def __init__(self, settings: Settings, *, pinned: bool = True) -> None:
        self.settings = settings
        self.pinned = pinned  # whether its engine core is pinned once built (pin_core)
        self.state = EngineState.DISABLED if not settings.model_enabled else EngineState.STOPPED
        self.llm = None
        self.tokenizer = None
        self.uses_v2_runner = False
        self.started_at: float | None = None
        self.startup_seconds: float | None = None
        self.last_error: str | None = None
        self.dtype: DtypeChoice | None = None
        self._state_listeners: list[Callable[[EngineState], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._processes: list[int] = []  # this engine's vLLM processes (engine core, workers)
        self._thread: threading.Thread | None = None
        self._bridges: dict[asyncio.AbstractEventLoop, _Bridge] = {}
        self._aborts: set[asyncio.Future] = set()  # aborts under way, held until done
        self.trained: TrainedModel | None = None
        self._trained_error = ""
        if (trained := trained_model_dir(settings.model)) is not None:
            try:
                self.trained = TrainedModel.load(trained)
            except (OSError, KeyError, ValueError) as exc:
                # The engine then fails to start: slates are served pointwise.
                self._trained_error = f"trained model {trained}: {type(exc).__name__}: {exc}"
                log.error("%s", self._trained_error)

    @property
    def model_id(self) -> str:
        """Reported in responses: ``served_model_id``, else the trained model's
        directory name, else derived from ``model``."""
        if self.trained is not None and not self.settings.served_model_id:
            return self.trained.model_id
        return self.settings.model_id

    # ---- the frontend's loop -------------------------------------------------
    @property
    def own_thread(self) -> bool:
        """Whether vLLM's frontend runs on a thread of its own (module docstring)."""
        mode = self.settings.engine_frontend
        return mode == "thread" or (mode == "auto" and self.trained is None)

    def _engine_loop(self) -> asyncio.AbstractEventLoop:
        """The loop vLLM's frontend runs on: its own, started on first use,
        or the loop that started the engine."""
        if self._loop is None and not self.own_thread:
            self._loop = asyncio.get_running_loop()
        if self._loop is None:
            loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=loop.run_forever, name="slatewise-engine", daemon=True)
            self._thread.start()
            self._loop = loop
        return self._loop

    def _bridge(self, loop: asyncio.AbstractEventLoop) -> _Bridge:
        bridge = self._bridges.get(loop)
        if bridge is None:
            bridge = self._bridges[loop] = _Bridge(loop)
        return bridge

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T] | asyncio.Future[T]:
        loop = self._engine_loop()
        if loop is asyncio.get_running_loop():
            return asyncio.ensure_future(coro)
        return asyncio.run_coroutine_threadsafe(coro, loop)

    async def _on_engine(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the engine's loop and await its result from ours."""
        return await asyncio.wrap_future(self._submit(coro))

    def _stop_engine_loop(self) -> None:
        loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            if not thread.is_alive():
                loop.close()

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
        from vllm.platforms import current_platform

        s = self.settings
        if self._trained_error:
            raise RuntimeError(self._trained_error)
        if (s.distributed_executor_backend == "uni" and current_platform.is_cpu()
                and os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1") == "1"):
            log.warning("distributed_executor_backend 'uni' is replaced by 'mp' on the CPU build "
                        "(vLLM's rule while its V1 multiprocessing is on): the worker stays a process of its own")
        self.dtype = choose_dtype(s.dtype, on_gpu=not current_platform.is_cpu(), trained=self.trained is not None)
        log.info("engine dtype %s (%s)", self.dtype.dtype, self.dtype.reason)
        memory = (
            {"gpu_memory_utilization": s.gpu_memory_utilization}
            if s.gpu_memory_utilization is not None
            else {"kv_cache_memory_bytes": s.kv_cache_memory_bytes}
        )
        trained = (
            {"skip_tokenizer_init": True, "enable_prompt_embeds": True}
            if self.trained is not None else {}
        )
        return AsyncEngineArgs(
            model=resolve_model(s.model, s.model_cache_dir),
            served_model_name=self.model_id,
            dtype=self.dtype.dtype,
            max_model_len=(min(s.max_model_len, self.trained.max_positions)
                           if self.trained is not None else s.max_model_len),
            enforce_eager=s.enforce_eager,
            max_num_seqs=s.max_num_seqs,
            tensor_parallel_size=s.tensor_parallel_size,
            pipeline_parallel_size=s.pipeline_parallel_size,
            distributed_executor_backend=s.distributed_executor_backend,
            enable_prefix_caching=s.enable_prefix_caching,
            logits_processors=[V1_PROCESSOR],
            disable_log_stats=False,
            **memory,
            **trained,
        )

    def _build(self):
        """Blocking: runs in a worker thread."""
        from vllm.v1.engine.async_llm import AsyncLLM

        bind = self.settings.cpu_omp_threads_bind or engine_cpu_bind()
        if bind:
            # Read by the engine core process, which inherits our environment.
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = bind
            log.info("engine OpenMP threads bound to cores %s", bind)
        if self.settings.model_runner != "auto":
            os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "1" if self.settings.model_runner == "v2" else "0"
        config = self._engine_args().create_engine_config()
        # The two runners take different processor interfaces; vLLM decides
        # which runner it uses (V1 on CPU, V2 on recent GPUs), we follow.
        self.uses_v2_runner = bool(config.use_v2_model_runner)
        config.model_config.logits_processors = [
            V2_PROCESSOR if self.uses_v2_runner else V1_PROCESSOR
        ]
        before = set(descendant_pids())
        llm = AsyncLLM.from_vllm_config(config, disable_log_stats=False)
        # Our only child processes are vLLM's (engine core, workers); those
        # that were there before are another engine's (a hot swap's old one).
        self._processes = [p for p in descendant_pids() if p not in before]
        if self.pinned:  # else it keeps every core, as vLLM starts it
            self.pin_core(True)
        if self.settings.engine_nice:
            changed = lower_priority(self._processes, self.settings.engine_nice)
            log.info("engine processes at nice %d (%d changed)", self.settings.engine_nice, changed)
        # A trained model has no text tokenizer: its vocabulary is the manifest's.
        return llm, (llm.get_tokenizer() if self.trained is None else None)

    def pin_core(self, pinned: bool) -> None:
        """Pin this engine's engine core beside its worker
        (``cpu_pin_engine_core``, CPU only), or give it back every core
        while another engine starts beside this one (platform.unpin_engine_core).
        Remembered: an engine rebuilt after a crash is pinned as it was."""
        was, self.pinned = self.pinned, pinned
        if not (self._processes and self.settings.cpu_pin_engine_core):
            return
        from vllm.platforms import current_platform

        if not current_platform.is_cpu():
            return
        if not pinned:
            if was and unpin_engine_core(self._processes):
                log.info("engine core unpinned while another engine starts")
        elif cores := pin_engine_core(self._processes):
            log.info("engine core pinned to its worker's cores %s", sorted(cores))

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
            async def close():
                # On the engine's loop: shutdown cancels the output handler task there.
                llm.shutdown()

            try:
                await asyncio.wait_for(self._on_engine(close()), timeout)
            except Exception:  # noqa: BLE001 - a dead engine may not stop cleanly (or in time)
                log.warning("engine shutdown did not complete cleanly", exc_info=True)

    async def check_health(self) -> bool:
        """Ask the engine core whether it lives; a dead one moves us to DEAD."""
        if self.state is not EngineState.READY or self.llm is None:
            return self.ready
        try:
            await asyncio.wait_for(self._on_engine(self.llm.check_health()), 10.0)
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
        self._stop_engine_loop()
        if self.state is not EngineState.DISABLED:
            self._set_state(EngineState.STOPPED)

    # ---- requests ----------------------------------------------------------
    def num_unfinished_requests(self) -> int:
        return self.llm.get_num_unfinished_requests() if self.llm is not None else 0

    async def stream(self, prompt_tokens: list[int], spec: SlateSpec, *, request_id: str,
                     temperature: float = 0.0, seed: int | None = None,
                     allow_warming: bool = False, prompt_embeds=None) -> AsyncIterator[int]:
        """Yield each token the moment the engine commits it.

        ``prompt_embeds`` (an array of one row per prompt position), when
        given, is the prompt instead of ``prompt_tokens`` (trained models).

        Closing the iterator early (cancel, deadline) aborts the request in
        the engine, so no abandoned request keeps a batch slot, and the
        caller does not wait for that.
        """
        from vllm.v1.engine.exceptions import EngineDeadError

        usable = self.ready or (allow_warming and self.state is EngineState.STARTING)
        if not usable or self.llm is None:
            raise EngineUnavailable(self.state.value)
        prompt = self._prompt(prompt_tokens, prompt_embeds)
        loop = asyncio.get_running_loop()
        outputs = (self._direct(self.llm, prompt, spec, request_id, temperature, seed)
                   if loop is self._engine_loop() else
                   self._bridged(loop, self.llm, prompt, spec, request_id, temperature, seed))
        try:
            async for tokens in outputs:
                for token in tokens:
                    yield token
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
            await outputs.aclose()  # a no-op once it has finished

    async def _direct(self, llm, prompt, spec: SlateSpec, request_id: str,
                      temperature: float, seed: int | None) -> AsyncIterator[list[int]]:
        """The frontend on the caller's loop: AsyncLLM.generate's own loop
        over the request's output collector, read by the caller's task.

        Each engine output wakes that one task, as it wakes the task that
        calls generate. A task of its own feeding a queue woke a second one
        per output, and on these machines work in the server between two
        engine steps slows the engine's next step (docs/BENCHMARKS.md,
        2026-12-02). Not generate itself: closed early, generate waits for
        its abort to reach the engine core before it lets the caller go."""
        q = None
        finished = False
        try:
            q = await llm.add_request(request_id, prompt, Engine.sampling_params(spec, temperature, seed))
            while not finished:
                out = q.get_nowait() or await q.get()
                finished = out.finished
                yield out.outputs[0].token_ids
        finally:
            if q is not None and not finished and not llm.errored:
                abort = asyncio.ensure_future(llm.abort(q.request_id, internal=True))
                self._aborts.add(abort)
                abort.add_done_callback(self._aborts.discard)

    async def _bridged(self, loop: asyncio.AbstractEventLoop, llm, prompt, spec: SlateSpec, request_id: str,
                       temperature: float, seed: int | None) -> AsyncIterator[list[int]]:
        """The frontend on its own thread: the request runs there (_pump),
        its outputs cross to the caller's loop through a queue."""
        queue: asyncio.Queue = asyncio.Queue()
        bridge = self._bridge(loop)
        pump = self._submit(self._pump(llm, prompt, spec, request_id, temperature, seed,
                                       lambda item: bridge.put(queue, item)))
        try:
            while True:
                tokens, finished = await queue.get()
                if isinstance(tokens, BaseException):
                    raise tokens
                yield tokens
                if finished:
                    return
        finally:
            pump.cancel()  # a no-op once it has finished

    @staticmethod
    def _prompt(prompt_tokens: list[int], prompt_embeds):
        from vllm.inputs import EmbedsPrompt, TokensPrompt

        if prompt_embeds is None:
            return TokensPrompt(prompt_token_ids=prompt_tokens)
        import torch

        return EmbedsPrompt(prompt_embeds=torch.as_tensor(prompt_embeds))  # vLLM casts to the model's dtype

    @staticmethod
    def sampling_params(spec: SlateSpec, temperature: float = 0.0, seed: int | None = None):
        """One slate's sampling parameters: K handles, the slate spec for the
        logits processor, token ids only, streamed as deltas.

        The request ends on its K-th token: the EOS the slate automaton allows
        after it carries no information, and generating it cost one more
        engine step (a tenth of a trained model's K=10 slate) before the
        caller got the slate."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(
            temperature=temperature,
            seed=seed,
            max_tokens=spec.k,
            extra_args=spec.to_extra_args(),
            output_kind=RequestOutputKind.DELTA,
            detokenize=False,
            skip_special_tokens=False,
            skip_clone=True,  # built for this request alone: no deep copy of the spec
        )

    @staticmethod
    async def _pump(llm, prompt, spec: SlateSpec, request_id: str,
                    temperature: float, seed: int | None, emit: Callable[[tuple], object]) -> None:
        """On the engine's loop: run one request, emit (tokens, finished) per
        output, or (exception, True). Cancelled, it aborts the request."""
        finished = False
        try:
            params = Engine.sampling_params(spec, temperature, seed)
            async for out in llm.generate(prompt, params, request_id=request_id):
                finished = out.finished
                emit((list(out.outputs[0].token_ids), finished))
            if not finished:
                emit(([], True))
                finished = True
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the caller, who classifies it
            emit((exc, True))
            finished = True
        finally:
            if not finished and not llm.errored:
                await llm.abort(request_id)
