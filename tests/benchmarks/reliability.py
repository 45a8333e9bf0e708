"""Reliability figures for docs/RELIABILITY.md: faults against the real engine
on loopback, every request accounted for.

    python tests/benchmarks/reliability.py

Scenarios (bounded in count and time, loopback only): deadlines shorter than a
full slate, on a quiet machine and on a busy one (a CPU hog of one busy
process per core, bounded in time, beside the server); overload far beyond the model's in-flight limit (fallback and
reject policies); streams cancelled after their first item; the engine core
killed with SIGKILL under concurrent load; SIGTERM with calls in flight.
"""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, machine, pct, start_server, stop_server, table

sys.path.insert(0, str(REPO / "tests"))
from fault_scenarios import (Tally, cancel_mid_stream, closed_loop, cpu_hog,  # noqa: E402
                             kill_engine_core, loop_lag, random_request, scrape, sigterm_with_streams_in_flight, wait_health,
                             wait_unfinished_zero)


MODEL = "slatewise.v1.Model"
BUSY_REQUESTS = int(sys.argv[1]) if len(sys.argv) > 1 else 1000


def row(name, tally: Tally, faults, extra="", deadlines=False):
    received = tally.valid + tally.invalid
    over = [o * 1000 for o in tally.overshoot] if deadlines else []
    return [name, tally.sent, faults, f"{tally.valid}/{received} ({100.0 * tally.valid / max(1, received):.1f}%)",
            ", ".join(f"{k} {v}" for k, v in sorted(tally.errors.items())) or "none",
            f"{pct(over, 99):.1f}" if over else "-", f"{max(over):.1f}" if over else "-",
            tally.lost, extra]


async def deadline_pressed(target: str, n: int) -> Tally:
    return await closed_loop(target, n, 4, lambda rng, i: random_request(rng, i, k=10, strategy="model"),
                             lambda rng, i: rng.uniform(0.1, 1.5), stream_every=3, stop_after=900)


def lag_note(server, before) -> str:
    lag = loop_lag(server.metrics_url) - before
    return f"event-loop ticks late by >25 ms: {lag['>25ms']:.0f}, >50 ms: {lag['>50ms']:.0f} of {lag['ticks']:.0f}"


async def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="slatewise-reliability-"))
    server = start_server(tmp, "--max-model-inflight", "8", "--engine-health-interval-seconds", "1",
                          "--shutdown-grace-seconds", "30", wait_for=MODEL, timeout=600)
    rows = []
    notes = [f"machine: {machine()}"]
    try:
        startup = float(re.search(r"engine ready in ([0-9.]+)s", server.log_tail(10**7)).group(1))
        notes.append(f"engine start-up (build + warm-up) at boot: {startup:.1f} s")

        lag = loop_lag(server.metrics_url)
        t = await deadline_pressed(server.target, 300)
        rows.append(row("deadlines 0.1–1.5 s (K=10), 4 concurrent, every 3rd streamed",
                        t, "deadlines shorter than many slates",
                        f"strategies: {dict(t.strategies)}; {lag_note(server, lag)}", deadlines=True))

        lag = loop_lag(server.metrics_url)
        with cpu_hog(900) as hog:
            t = await deadline_pressed(server.target, BUSY_REQUESTS)
        rows.append(row(f"busy machine ({len(hog)} CPU-hog processes): deadlines 0.1–1.5 s (K=10), "
                        "4 concurrent, every 3rd streamed", t, "CPU contention, short deadlines",
                        f"strategies: {dict(t.strategies)}; {lag_note(server, lag)}", deadlines=True))

        t = await closed_loop(server.target, 200, 32,
                              lambda rng, i: random_request(rng, i, k=8, strategy="model"),
                              lambda rng, i: 60.0)
        rows.append(row("overload: 32 concurrent vs model limit 8, policy FALLBACK", t, "overload",
                        f"reasons: {dict(t.reasons)}"))
        t = await closed_loop(server.target, 100, 32,
                              lambda rng, i: random_request(rng, i, k=8, strategy="model",
                                                            overload_policy="reject"),
                              lambda rng, i: 60.0)
        rows.append(row("overload: 32 concurrent vs model limit 8, policy REJECT", t, "overload",
                        "RESOURCE_EXHAUSTED is the asked-for answer"))

        cancelled = await cancel_mid_stream(server.target, 50)
        unfinished = await asyncio.to_thread(wait_unfinished_zero, server.metrics_url)
        cancel_tally = Tally(sent=50)
        cancel_tally.errors["CANCELLED (by the client)"] = cancelled
        rows.append(row("streams cancelled after their first item", cancel_tally, f"{cancelled} cancels",
                        f"engine unfinished requests afterwards: {unfinished:.0f}"))

        before = scrape(server.metrics_url).get("slatewise_engine_restarts_total", 0)
        load = asyncio.create_task(closed_loop(
            server.target, 2000, 4, lambda rng, i: random_request(rng, i, strategy="auto"),
            lambda rng, i: 30.0, stop_after=120))
        await asyncio.sleep(5)
        t_kill = time.monotonic()
        kill_engine_core(server.process.pid)
        await asyncio.to_thread(wait_health, server.target, MODEL, "NOT_SERVING", 60)
        await asyncio.to_thread(wait_health, server.target, MODEL, "SERVING", 600)
        recovered = time.monotonic() - t_kill
        t = await load
        after = scrape(server.metrics_url)
        rows.append(row("engine core SIGKILLed under load (4 concurrent, AUTO)", t, "1 engine kill",
                        f"reasons: {dict(t.reasons)}; restarts {after['slatewise_engine_restarts_total'] - before:.0f}"))
        rebuild = after.get("slatewise_engine_recovery_seconds", float("nan"))
        notes.append(f"time to recover the model path after the kill: {recovered:.1f} s "
                     f"(rebuild itself {rebuild:.1f} s; target: start-up + 10 s = {startup + 10:.1f} s)")

        drained = sigterm_with_streams_in_flight(server.process, server.target, 8)
        drain = Tally(sent=8, valid=sum(1 for slate in drained.slates if len(slate.items) == 10))
        for e in drained.errors:
            drain.errors[e[:40]] += 1
        rows.append(row("SIGTERM with 8 streams in flight", drain, "SIGTERM",
                        f"exit code {drained.exit_code} after {drained.seconds:.1f} s"))
    finally:
        stop_server(server)
    # The same busy scenario with the engine's processes reniced: the answering
    # thread wins the CPU over the engine (and the engine loses it to the hog).
    niced = start_server(tmp, "--max-model-inflight", "8", "--engine-nice", "10", wait_for=MODEL, timeout=600)
    try:
        lag = loop_lag(niced.metrics_url)
        with cpu_hog(900) as hog:
            t = await deadline_pressed(niced.target, min(BUSY_REQUESTS, 300))
        rows.append(row(f"busy machine ({len(hog)} CPU-hog processes), `--engine-nice 10`: same requests",
                        t, "CPU contention, short deadlines",
                        f"strategies: {dict(t.strategies)}; {lag_note(niced, lag)}", deadlines=True))
    finally:
        stop_server(niced)
    print(table(["scenario", "requests sent", "faults injected", "valid slates / responses",
                 "errors (gRPC status)", "deadline overshoot p99 ms", "overshoot max ms",
                 "lost", "notes"], rows))
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    asyncio.run(main())
