"""Faults against the real engine on loopback: short deadlines, overload,
cancellations mid-stream, the engine core killed under load, SIGTERM.

Every response must be a valid slate of exactly K items; nothing may be lost.
"""

from __future__ import annotations

import asyncio

import pytest

from conftest import start_server, stop_server
from fault_scenarios import (Tally, cancel_mid_stream, closed_loop, cpu_hog, kill_engine_core,
                             random_request, scrape, sigterm_with_streams_in_flight, wait_health,
                             wait_unfinished_zero)
from slatewise_client import SlateClient
from slatewise_client.pb import slate_pb2 as pb

pytestmark = pytest.mark.model
MODEL = "slatewise.v1.Model"


@pytest.fixture(scope="module", params=["thread", "server-loop"])
def fault_server(request, tmp_path_factory):
    """Once with vLLM's frontend on a thread of its own (a text model's
    default) and once on the server's loop (a trained model's): every fault
    must be survived either way (``engine_frontend``)."""
    server = start_server(tmp_path_factory.mktemp("faults"), "--max-model-inflight", "3",
                          "--engine-health-interval-seconds", "1", "--shutdown-grace-seconds", "20",
                          "--engine-frontend", request.param, wait_for=MODEL, timeout=400)
    yield server
    stop_server(server)


def _assert_all_valid(tally: Tally) -> None:
    assert tally.sent > 0
    assert tally.invalid == 0 and tally.lost == 0, tally
    assert not tally.errors, tally.errors
    assert tally.valid == tally.sent


async def test_deadlines_shorter_than_a_full_slate(fault_server):
    tally = await closed_loop(
        fault_server.target, 40, 3,
        lambda rng, i: random_request(rng, i, k=10, strategy="model"),
        lambda rng, i: rng.uniform(0.15, 0.6), stream_every=3)
    # Every answer is a valid slate; how punctual the answers are is a timing
    # figure, measured by tests/benchmarks/reliability.py (docs/RELIABILITY.md).
    # Here only a gross failure to honour deadlines fails the test.
    assert tally.invalid == 0 and tally.lost == 0, tally
    assert set(tally.errors) <= {"DEADLINE_EXCEEDED"}, tally.errors
    assert tally.errors["DEADLINE_EXCEEDED"] <= 0.05 * tally.sent, tally.errors
    assert tally.reasons["FALLBACK_REASON_DEADLINE"] > 0, tally.reasons
    assert set(tally.strategies) <= {"STRATEGY_MODEL", "STRATEGY_PARTIAL", "STRATEGY_FALLBACK"}


async def test_deadlines_hold_on_a_busy_machine(fault_server):
    """A noisy neighbour on every core (bounded, stops by itself) while
    deadline-pressed requests run: still only valid slates, nothing lost."""
    with cpu_hog(120):
        tally = await closed_loop(
            fault_server.target, 40, 3,
            lambda rng, i: random_request(rng, i, k=10, strategy="model"),
            lambda rng, i: rng.uniform(0.1, 1.5), stream_every=3, stop_after=90)
    assert tally.sent >= 20, tally
    assert tally.invalid == 0 and tally.lost == 0, tally
    # Punctuality under load is a figure of tests/benchmarks/reliability.py;
    # here a gross failure to answer in time fails the test.
    assert set(tally.errors) <= {"DEADLINE_EXCEEDED"}, tally.errors
    assert tally.errors["DEADLINE_EXCEEDED"] <= 0.05 * tally.sent, tally.errors
    assert max(tally.overshoot) < 0.1, max(tally.overshoot)


async def test_overload_falls_back_or_rejects_by_policy(fault_server):
    def burst(policy):
        return closed_loop(fault_server.target, 24, 12,
                           lambda rng, i: random_request(rng, i, k=8, strategy="model",
                                                         overload_policy=policy),
                           lambda rng, i: 60.0)

    fallback = await burst("fallback")
    _assert_all_valid(fallback)
    assert fallback.reasons["FALLBACK_REASON_OVERLOAD"] > 0, fallback.reasons

    rejected = await burst("reject")
    assert rejected.errors["RESOURCE_EXHAUSTED"] > 0, rejected.errors
    assert set(rejected.errors) == {"RESOURCE_EXHAUSTED"}
    assert rejected.invalid == 0 and rejected.lost == 0
    assert rejected.valid + rejected.errors["RESOURCE_EXHAUSTED"] == rejected.sent


async def test_cancelled_streams_leave_nothing_in_the_engine(fault_server):
    assert await cancel_mid_stream(fault_server.target, 6) == 6
    assert await asyncio.to_thread(wait_unfinished_zero, fault_server.metrics_url) == 0


async def test_engine_core_killed_under_load_is_rebuilt(fault_server):
    before = scrape(fault_server.metrics_url).get("slatewise_engine_restarts_total", 0)
    load = asyncio.create_task(closed_loop(
        fault_server.target, 400, 3, lambda rng, i: random_request(rng, i, strategy="auto"),
        lambda rng, i: 30.0, stop_after=45))
    await asyncio.sleep(3)
    kill_engine_core(fault_server.process.pid)
    await asyncio.to_thread(wait_health, fault_server.target, MODEL, "NOT_SERVING", 30)
    recovered = await asyncio.to_thread(wait_health, fault_server.target, MODEL, "SERVING", 400)
    tally = await load
    _assert_all_valid(tally)
    dead = tally.reasons["FALLBACK_REASON_ENGINE_DEAD"] + tally.reasons["FALLBACK_REASON_ENGINE_ERROR"]
    assert dead + tally.reasons["FALLBACK_REASON_ENGINE_NOT_READY"] > 0, tally.reasons
    assert recovered > 0
    assert fault_server.process.poll() is None  # same process
    after = scrape(fault_server.metrics_url)
    assert after["slatewise_engine_restarts_total"] == before + 1
    with SlateClient(fault_server.target) as client:
        slate = client.recommend("casual outfit", k=4, strategy="model")
    assert slate.strategy == pb.STRATEGY_MODEL


def test_sigterm_drains_in_flight_calls_then_exits(fault_server):
    drain = sigterm_with_streams_in_flight(fault_server.process, fault_server.target, 3, timeout=60)
    assert not drain.errors, drain.errors
    assert len(drain.slates) == 3 and all(len(s.items) == 10 for s in drain.slates)
    assert drain.exit_code == 0
    assert drain.seconds < 60
