"""Fault scenarios against a real server on loopback, shared by the fault
tests (small, asserting invariants) and tests/benchmarks/reliability.py
(larger, writing the figures of docs/RELIABILITY.md).

Every scenario is bounded in request count and time and targets 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field

import grpc
import psutil

from slatewise.catalogue.loader import embedded_catalogue_path, load_jsonl
from slatewise_client import AsyncSlateClient, SlateClient, build_request
from slatewise_client.pb import slate_pb2 as pb

CATALOGUE = {it.id: it for it in load_jsonl(embedded_catalogue_path())}
QUERIES = ["casual outfit", "business meeting", "rainy autumn commute", "beach holiday",
           "gym session", "wedding guest", "winter hiking", "first date dinner"]


@dataclass
class Tally:
    """What came back: every request sent ends up in exactly one bucket."""

    sent: int = 0
    valid: int = 0
    invalid: int = 0
    errors: Counter = field(default_factory=Counter)  # gRPC status name -> count
    strategies: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    overshoot: list[float] = field(default_factory=list)  # elapsed - deadline, seconds

    @property
    def lost(self) -> int:
        return self.sent - self.valid - self.invalid - sum(self.errors.values())

    def add_slate(self, slate: pb.Slate, request: pb.RecommendRequest) -> None:
        ids = [it.item_id for it in slate.items]
        cap = request.constraints.max_per_category
        ok = (len(ids) == request.k == len(set(ids)) and all(i in CATALOGUE for i in ids)
              and not set(ids) & set(request.constraints.exclude_ids)
              and (not cap or max(Counter(CATALOGUE[i].category for i in ids).values()) <= cap))
        if ok:
            self.valid += 1
        else:
            self.invalid += 1
        self.strategies[pb.Strategy.Name(slate.strategy)] += 1
        self.reasons[pb.FallbackReason.Name(slate.fallback_reason)] += 1


def random_request(rng: random.Random, i: int, **kw) -> pb.RecommendRequest:
    k = kw.pop("k", rng.randint(3, 10))
    return build_request(rng.choice(QUERIES), k, max_per_category=rng.choice([0, 2, 3]),
                         exclude_ids=rng.sample(sorted(CATALOGUE), 2), request_id=f"fault-{i}",
                         diversity=rng.choice([0.0, 0.5]), **kw)


async def _one(client: AsyncSlateClient, request, tally: Tally, deadline: float | None,
               stream: bool = False) -> None:
    tally.sent += 1
    t0 = time.perf_counter()
    try:
        if stream:
            slate = None
            async for event in client.recommend_stream(request=request, deadline=deadline):
                if event.WhichOneof("event") == "slate":
                    slate = event.slate
        else:
            slate = await client.recommend(request=request, deadline=deadline)
    except grpc.RpcError as err:
        tally.errors[err.code().name] += 1
        return
    if deadline is not None:
        tally.overshoot.append(time.perf_counter() - t0 - deadline)
    if slate is None:
        tally.invalid += 1
    else:
        tally.add_slate(slate, request)


async def closed_loop(target: str, n: int, concurrency: int, make_request, deadline_of,
                      tally: Tally | None = None, stream_every: int = 0,
                      stop_after: float | None = None) -> Tally:
    """n requests, `concurrency` at a time (bounded in count and time)."""
    tally = tally or Tally()
    rng = random.Random(n * 7919 + concurrency)
    queue = list(range(n))
    t_end = time.monotonic() + stop_after if stop_after else None
    async with AsyncSlateClient(target) as client:
        async def worker():
            while queue and (t_end is None or time.monotonic() < t_end):
                i = queue.pop()
                stream = bool(stream_every) and i % stream_every == 0
                await _one(client, make_request(rng, i), tally, deadline_of(rng, i), stream)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tally


def scrape(metrics_url: str) -> dict[str, float]:
    body = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def scrape_when(metrics_url: str, ready, timeout: float = 10.0) -> dict[str, float]:
    """/metrics once ``ready(metrics)`` holds (or the last scrape after
    ``timeout``): a slate's metrics are exported once its RPC has ended, a
    moment after the caller has the answer (SlateService._after_answer)."""
    end = time.monotonic() + timeout
    while True:
        metrics = scrape(metrics_url)
        if ready(metrics) or time.monotonic() > end:
            return metrics
        time.sleep(0.05)


def slates_observed(metrics: dict[str, float]) -> float:
    """Slates whose metrics have been exported, over every strategy."""
    return sum(v for k, v in metrics.items() if k.startswith("slatewise_request_duration_seconds_count"))


LAG = "slatewise_event_loop_lag_seconds"


def loop_lag(metrics_url: str) -> Counter:
    """Ticks of the server's event loop so far: 'ticks', and '>25ms', '>50ms'
    (how many ran that much later than asked). Subtract two readings for a
    scenario's own figures."""
    m = scrape(metrics_url)
    ticks = m.get(f"{LAG}_count", 0.0)
    return Counter({"ticks": ticks,
                    ">25ms": ticks - m.get(f'{LAG}_bucket{{le="0.025"}}', 0.0),
                    ">50ms": ticks - m.get(f'{LAG}_bucket{{le="0.05"}}', 0.0)})


async def cancel_mid_stream(target: str, n: int) -> int:
    """Start n streams and cancel each right after its first item; returns how
    many were cancelled with at least one item received."""
    cancelled = 0
    async with AsyncSlateClient(target) as client:
        for i in range(n):
            call = client.slates.RecommendStream(
                build_request(QUERIES[i % len(QUERIES)], 10, strategy="model", request_id=f"cancel-{i}"),
                timeout=60)
            async for event in call:
                if event.WhichOneof("event") == "item":
                    call.cancel()
                    cancelled += 1
                    break
    return cancelled


def wait_unfinished_zero(metrics_url: str, timeout: float = 10.0) -> float:
    t_end = time.monotonic() + timeout
    value = float("nan")
    while time.monotonic() < t_end:
        value = scrape(metrics_url).get("slatewise_engine_unfinished_requests", float("nan"))
        if value == 0:
            return value
        time.sleep(0.2)
    return value


def engine_core_pids(server_pid: int) -> list[int]:
    """The vLLM engine core process(es) under a server process."""
    pids = []
    for child in psutil.Process(server_pid).children(recursive=True):
        try:
            text = " ".join([child.name()] + child.cmdline())
        except psutil.Error:
            continue
        if "EngineCore" in text:
            pids.append(child.pid)
    return pids


def kill_engine_core(server_pid: int) -> int:
    pids = engine_core_pids(server_pid)
    if not pids:
        raise RuntimeError("no EngineCore process found under the server")
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return len(pids)


def wait_health(target: str, service: str, status: str, timeout: float) -> float:
    """Seconds until `service` reports `status` (raises on timeout)."""
    t0 = time.monotonic()
    with SlateClient(target) as client:
        while time.monotonic() - t0 < timeout:
            try:
                if client.health(service, deadline=2.0) == status:
                    return time.monotonic() - t0
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"{service!r} not {status} after {timeout}s")


@dataclass
class Drain:
    slates: list  # complete Slate of every stream that finished
    errors: list[str]
    exit_code: int
    seconds: float  # from SIGTERM to process exit


def sigterm_with_streams_in_flight(process, target: str, streams: int, timeout: float = 90.0) -> Drain:
    """Start `streams` model streams (K=10), SIGTERM the server while they are
    in flight, wait for them and for the process to exit."""
    slates, errors = [], []

    def stream(i):
        try:
            with SlateClient(target) as client:
                events = list(client.recommend_stream(f"winter hiking {i}", k=10, strategy="model",
                                                      deadline=60))
                slates.append(events[-1].slate)
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            errors.append(repr(exc))

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # the calls are in flight
    t0 = time.monotonic()
    process.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(60)
    code = process.wait(timeout)
    return Drain(slates, errors, code, time.monotonic() - t0)


# Runs in its own interpreter: nothing of the caller (grpc threads, a
# __main__ without an import guard) is copied or re-imported.
_SPIN = """
import sys, time
until = time.monotonic() + float(sys.argv[1])
x = 0
while time.monotonic() < until:
    for _ in range(10_000):
        x += 1
"""


@contextlib.contextmanager
def cpu_hog(seconds: float, processes: int | None = None):
    """A noisy neighbour: `processes` busy processes (default: one per core)
    competing with the server for the CPU. Each stops by itself after
    `seconds`; all are ended when the block exits."""
    procs = [subprocess.Popen([sys.executable, "-c", _SPIN, str(seconds)])
             for _ in range(processes or os.cpu_count() or 2)]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(10)
