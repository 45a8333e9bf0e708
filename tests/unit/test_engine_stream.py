"""Engine.stream with vLLM's frontend on the caller's loop, against a
scripted AsyncLLM: tokens in order, an early close aborts the request
without making the caller wait, a dead engine is told apart from a failed
request. (The real engine is exercised by the integration and fault tests.)"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from slatewise.config import load_settings
from slatewise.model.engine import Engine, EngineRequestError, EngineState


class Collector:
    """RequestOutputCollector's surface: get_nowait() or await get(); an
    exception put in its place is raised to the reader."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.queue: asyncio.Queue = asyncio.Queue()

    @staticmethod
    def _checked(item):
        if isinstance(item, Exception):
            raise item
        return item

    def get_nowait(self):
        return None if self.queue.empty() else self._checked(self.queue.get_nowait())

    async def get(self):
        return self._checked(await self.queue.get())


class ScriptedLLM:
    """One output per step (a delta of token ids) every ``step`` seconds,
    then, if given, ``error``. Aborts take ``abort_takes`` seconds."""

    def __init__(self, steps, step=0.01, error=None, abort_takes=0.05) -> None:
        self.steps, self.step, self.error, self.abort_takes = steps, step, error, abort_takes
        self.errored = False
        self.aborted: list[tuple[str, bool]] = []
        self.feeders: list[asyncio.Task] = []

    async def add_request(self, request_id, prompt, params):
        q = Collector(f"internal-{request_id}")
        self.feeders.append(asyncio.create_task(self._feed(q)))
        return q

    async def _feed(self, q: Collector) -> None:
        for i, tokens in enumerate(self.steps):
            await asyncio.sleep(self.step)
            finished = i == len(self.steps) - 1 and self.error is None
            q.queue.put_nowait(SimpleNamespace(finished=finished, outputs=[SimpleNamespace(token_ids=tokens)]))
        if self.error is not None:
            await asyncio.sleep(self.step)
            q.queue.put_nowait(self.error)

    async def abort(self, request_id, internal=False):
        await asyncio.sleep(self.abort_takes)
        self.aborted.append((request_id, internal))


def _engine(llm) -> Engine:
    engine = Engine(load_settings(["--engine-frontend", "server-loop"]))
    engine.llm, engine.state = llm, EngineState.READY
    return engine


@pytest.fixture(autouse=True)
def _no_vllm_params(monkeypatch):
    # The slate spec's SamplingParams are vLLM's business; the collector's reader is ours.
    monkeypatch.setattr(Engine, "sampling_params", staticmethod(lambda spec, temperature=0.0, seed=None: None))


async def test_tokens_arrive_in_order_and_a_finished_request_is_not_aborted():
    llm = ScriptedLLM([[5], [7], [9]])
    tokens = [t async for t in _engine(llm).stream([1, 2], None, request_id="r")]
    assert tokens == [5, 7, 9]
    await asyncio.sleep(0.1)
    assert llm.aborted == []


async def test_closing_early_aborts_without_waiting_for_the_abort():
    llm = ScriptedLLM([[5], [7], [9]], abort_takes=0.2)
    stream = _engine(llm).stream([1, 2], None, request_id="r")
    assert await anext(stream) == 5
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await stream.aclose()
    assert loop.time() - t0 < 0.1 and llm.aborted == []  # the caller went on at once
    await asyncio.sleep(0.3)
    assert llm.aborted == [("internal-r", True)]  # and the engine heard of it


async def test_a_deadline_mid_request_aborts_it():
    # The deadline is set once the first token is in and falls well inside the
    # next step, so a slow or busy machine cannot move it to either side.
    llm = ScriptedLLM([[5], [7], [9]], step=0.5, abort_takes=0.0)
    loop = asyncio.get_running_loop()
    got = []
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(None) as deadline:
            async for t in _engine(llm).stream([1, 2], None, request_id="r"):
                got.append(t)
                deadline.reschedule(loop.time() + 0.05)
    assert got == [5]
    for _ in range(100):  # the abort is sent in the background
        if llm.aborted:
            break
        await asyncio.sleep(0.01)
    assert llm.aborted == [("internal-r", True)]
    for feeder in llm.feeders:
        feeder.cancel()


async def test_a_dead_engine_is_told_apart_from_a_failed_request():
    from vllm.v1.engine.exceptions import EngineDeadError

    engine = _engine(ScriptedLLM([[5]], error=EngineDeadError()))
    with pytest.raises(EngineRequestError) as info:
        [t async for t in engine.stream([1], None, request_id="r")]
    assert info.value.dead and engine.state is EngineState.DEAD

    engine = _engine(ScriptedLLM([[5]], error=ValueError("bad prompt")))
    with pytest.raises(EngineRequestError) as info:
        [t async for t in engine.stream([1], None, request_id="r")]
    assert not info.value.dead and "bad prompt" in str(info.value) and engine.state is EngineState.READY
