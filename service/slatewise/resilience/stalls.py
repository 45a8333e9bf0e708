"""Stalls of the loop that answers callers, measured where they happen.

Every answer (the deadline watch firing, the pointwise fill, the response
going out) runs on the server's event loop, so anything that holds that loop
or the GIL, or keeps the process off the CPU, delays it by the same amount.
Two figures make such stalls visible in production, not only under a
profiler: how late a periodic tick of the loop runs (whatever the cause:
a long callback, another thread holding the GIL, CPU contention, a cgroup
throttle) and how long each garbage collection paused the process.
"""

from __future__ import annotations

import asyncio
import gc
import time

from slatewise.metrics import Metrics

TICK_SECONDS = 0.02  # 50 wake-ups a second: cheap, fine enough for a 50 ms margin


async def watch_event_loop(metrics: Metrics, tick: float = TICK_SECONDS) -> None:
    """Observe how much later than asked each tick runs, forever."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time() + tick
        await asyncio.sleep(tick)
        metrics.event_loop_lag.observe(max(0.0, loop.time() - asked))


def watch_gc(metrics: Metrics) -> None:
    """Time every collection (it pauses all threads of the process)."""
    started: dict[int, float] = {}

    def callback(phase: str, info: dict) -> None:
        generation = info["generation"]
        if phase == "start":
            started[generation] = time.perf_counter()
        elif generation in started:
            metrics.gc_pause.labels(str(generation)).observe(time.perf_counter() - started.pop(generation))

    gc.callbacks.append(callback)
