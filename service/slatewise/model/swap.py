"""Hot-swap: a new model directory goes live without a restart or a lost request.

The candidate gets its own engine beside the serving one and must pass the
same warm-up as at start-up (one real slate through the automaton) before
anything changes; a candidate that fails to load or to warm up is shut down
and never serves. The switch itself is one assignment of the recommender's
:class:`ModelSlot`: each request took its slot when it started, so requests
in flight finish on the old engine, which is shut down only once they have
(or after ``drain_seconds``). A rollback is a load of the previous directory.
Asked to, a load first replays the latest model-path requests on both
models and reports how the candidate's slates differ (overlap, diversity):
the same comparison the server's shadow makes between model and pointwise.
One load at a time: a second call waits for the first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from slatewise.config import Settings
from slatewise.metrics import Metrics
from slatewise.model.composer import SlateComposer
from slatewise.model.engine import Engine
from slatewise.model.plan import CannotPlan
from slatewise.recommender import ModelSlot, Recommender

log = logging.getLogger(__name__)


class SwapRefused(RuntimeError):
    """The request cannot be honoured (bad path, nothing to roll back to)."""


class SwapFailed(RuntimeError):
    """The candidate did not load or warm up; the serving model is unchanged."""


@dataclass(frozen=True)
class Shadow:
    requests: int = 0
    mean_overlap: float = 0.0
    mean_intra_list_diversity_delta: float = 0.0
    mean_category_coverage_delta: float = 0.0


@dataclass(frozen=True)
class ModelState:
    model_id: str
    path: str
    previous_model_id: str
    previous_path: str
    last_load_seconds: float
    switches: int
    shadow: Shadow


class ModelSwitcher:
    def __init__(self, settings: Settings, recommender: Recommender, metrics: Metrics,
                 on_engine=None, drain_seconds: float | None = None) -> None:
        self.settings = settings
        self.recommender = recommender
        self.metrics = metrics
        # Told about every engine that takes traffic (health, metrics, supervision).
        self.on_engine = on_engine or (lambda engine: None)
        self.drain_seconds = drain_seconds if drain_seconds is not None else settings.max_request_seconds
        self.path = settings.model
        self.previous: tuple[str, str] | None = None  # (model_id, path)
        self.last_load_seconds = 0.0
        self.switches = 0
        self.shadow = Shadow()
        self._lock = asyncio.Lock()
        self._draining: set[asyncio.Task] = set()
        self._publish()

    def status(self) -> ModelState:
        prev_id, prev_path = self.previous or ("", "")
        return ModelState(self.recommender.engine.model_id, str(self.path), prev_id, str(prev_path),
                          self.last_load_seconds, self.switches, self.shadow)

    def _publish(self) -> None:
        st = self.status()
        self.metrics.model_info.info({"model_id": st.model_id, "path": st.path,
                                      "previous_model_id": st.previous_model_id})

    def resolve(self, path: str) -> Path:
        """The model directory ``path`` names, which must lie under model_swap_root."""
        root = self.settings.model_swap_root
        if root is None:
            raise SwapRefused("hot-swap is off: start the server with --model-swap-root DIR")
        if not path:
            raise SwapRefused("path must name a model directory")
        root = root.resolve()
        target = (root / path).resolve()
        if target != root and root not in target.parents:
            raise SwapRefused(f"{path!r} is outside the model swap root {str(root)!r}")
        if not target.is_dir():
            raise SwapRefused(f"{str(target)!r} is not a directory")
        return target

    async def load(self, path: str, shadow_requests: int = 0) -> ModelState:
        target = self.resolve(path)
        async with self._lock:
            return await self._switch(target, "load", shadow_requests)

    async def rollback(self) -> ModelState:
        async with self._lock:
            if self.previous is None:
                raise SwapRefused("there is no previous model to roll back to")
            return await self._switch(Path(self.previous[1]), "rollback")

    async def _switch(self, target: Path, kind: str, shadow_requests: int = 0) -> ModelState:
        settings = self.settings.model_copy(update={"model": str(target), "served_model_id": ""})
        engine = Engine(settings, pinned=False)  # pinned once it serves alone
        slot = ModelSlot(engine, SlateComposer(engine, settings))
        log.info("hot-swap (%s): starting %s beside %s", kind, target, self.recommender.engine.model_id)
        serving = self.recommender.engine
        serving.pin_core(False)  # pinned, busy, it starves the new engine's start (platform.unpin_engine_core)
        try:
            return await self._start_and_switch(engine, slot, target, kind, shadow_requests)
        finally:
            if self.recommender.engine is serving:  # not switched: it keeps serving, pinned again
                serving.pin_core(True)

    async def _start_and_switch(self, engine: Engine, slot: ModelSlot, target: Path, kind: str,
                                shadow_requests: int) -> ModelState:
        t0 = time.monotonic()
        ok = await engine.start(warmup=lambda: self.recommender.warmup(slot, force=True))
        took = time.monotonic() - t0
        if not ok:
            self.metrics.model_load_failures.inc()
            await engine.shutdown()
            raise SwapFailed(f"{target} did not start: {engine.last_error}")
        old = self.recommender.slot
        shadow = Shadow()
        if shadow_requests:
            try:
                shadow = await self._shadow(old, slot, shadow_requests)
            except Exception as exc:  # noqa: BLE001 - a candidate that cannot serve them must not go live
                self.metrics.model_load_failures.inc()
                await engine.shutdown()
                raise SwapFailed(f"{target} failed the shadow requests: {type(exc).__name__}: {exc}") from exc
        self.shadow = shadow
        self.previous = (old.engine.model_id, str(self.path))
        self.recommender.slot = slot  # the switch: requests from now on take the new slot
        self.path = str(target)
        self.last_load_seconds = took
        self.switches += 1
        self.recommender.circuit.reset()
        self.on_engine(engine)
        self.metrics.model_switches.labels(kind).inc()
        self.metrics.model_load_seconds.set(took)
        self._publish()
        log.info("hot-swap (%s): %s serves now (loaded in %.1fs); draining %s",
                 kind, engine.model_id, took, old.engine.model_id)
        task = asyncio.create_task(self._drain(old, engine))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)
        return self.status()

    async def _shadow(self, live: ModelSlot, candidate: ModelSlot, n: int) -> Shadow:
        """Replay the latest ``n`` model-path requests on both models, one at
        a time (the live model keeps serving meanwhile), and compare: the
        share of the candidate's items the live slate has too, and the
        candidate's diversity minus the live one's."""
        overlap, ild, coverage = [], [], []
        for request in list(self.recommender.recent)[-n:]:
            cset = await self.recommender.candidates(request)
            request_id = f"shadow-{request.request_id}"
            try:
                _, ours = await self.recommender.model_slate(candidate, cset, request_id)
                _, theirs = await self.recommender.model_slate(live, cset, request_id)
            except CannotPlan:  # e.g. candidates one of the two has no tokens for: not comparable
                continue
            if not ours or not theirs:
                continue
            comparison = cset.compare(ours, theirs)
            overlap.append(comparison.overlap)
            ild.append(comparison.diversity_delta["intra_list_diversity"])
            coverage.append(comparison.diversity_delta["category_coverage"])
            self.metrics.candidate_overlap.observe(overlap[-1])
            self.metrics.candidate_diversity_delta.labels("intra_list_diversity").observe(ild[-1])
            self.metrics.candidate_diversity_delta.labels("category_coverage").observe(coverage[-1])
        mean = (lambda xs: sum(xs) / len(xs) if xs else 0.0)
        return Shadow(len(overlap), mean(overlap), mean(ild), mean(coverage))

    async def _drain(self, old: ModelSlot, new: Engine) -> None:
        """Shut the old engine down once the requests that took its slot have
        finished; the new one, alone from then on, is pinned."""
        end = time.monotonic() + self.drain_seconds
        while (old.active or old.engine.num_unfinished_requests()) and time.monotonic() < end:
            await asyncio.sleep(0.05)
        await old.engine.shutdown()
        log.info("hot-swap: %s shut down", old.engine.model_id)
        # Not while another switch is under way: that one pins whichever serves at its end.
        if self.recommender.engine is new and not self._lock.locked():
            new.pin_core(True)

    async def close(self) -> None:
        for task in list(self._draining):
            await asyncio.gather(task, return_exceptions=True)
