"""Feedback event log: acknowledged appends per second by fsync policy and
batch size, and what each append waits.

    python tests/benchmarks/bench_feedback_log.py [--records 200000] [--repeats 3]

8 coroutines share one log (slatewise.feedback.log.EventLog, in a fresh
directory under --dir each run) and append ~200-byte records in batches of
--batches. A run ends after --records records or --budget-s seconds, whichever
comes first: one fsync per single-record append would take minutes for 200k,
so the `records` column says how many a run got through (median). Rates and
latencies are medians over --repeats runs; `x never` is a policy's rate over
the `never` policy's at the same batch size (the cost of durability). The
`group` policy runs twice: with the default wait for company when the writer
is idle (group_commit_ms=2) and without (0).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time

from common import machine, median, pct, table

from slatewise.feedback.log import EventLog, FsyncPolicy

VARIANTS: tuple[tuple[FsyncPolicy, float], ...] = (("always", 2.0), ("group", 2.0), ("group", 0.0), ("never", 2.0))
WRITERS = 8
RECORD_BYTES = 200


async def run(directory: str, policy: FsyncPolicy, group_commit_ms: float, batch: int, records: int,
              budget_s: float, pool: list[bytes]) -> tuple[int, float, list[float]]:
    """Records appended, their rate, and each append's latency in ms."""
    log = await EventLog.open(directory, fsync=policy, group_commit_ms=group_commit_ms)
    remaining, latencies = records, []
    start = time.perf_counter()
    deadline = start + budget_s

    async def writer(w: int) -> None:
        nonlocal remaining
        offset = w * batch
        while remaining > 0 and time.perf_counter() < deadline:
            n = min(batch, remaining)
            remaining -= n
            payloads = [pool[(offset + k) % len(pool)] for k in range(n)]
            t0 = time.perf_counter()
            await log.append(payloads)
            latencies.append((time.perf_counter() - t0) * 1000)
            offset += n

    await asyncio.gather(*(writer(w) for w in range(WRITERS)))
    elapsed = time.perf_counter() - start
    await log.close()
    done = records - remaining
    return done, done / elapsed, latencies


def main(records: int, batches: list[int], repeats: int, budget_s: float, parent: str) -> None:
    print(f"# machine: {machine()}")
    print(f"# {WRITERS} coroutines, {RECORD_BYTES}-byte records, up to {records} records or {budget_s:g} s per run, "
          f"median of {repeats} runs; log under {parent}")
    pool = [os.urandom(RECORD_BYTES) for _ in range(4096)]
    results: dict[tuple[FsyncPolicy, float, int], tuple[float, float, list[float]]] = {}
    for batch in batches:
        for policy, wait_ms in VARIANTS:
            counts, rates, latencies = [], [], []
            for _ in range(repeats):
                directory = tempfile.mkdtemp(prefix="bench-feedback-log-", dir=parent)
                try:
                    done, rate, lat = asyncio.run(run(directory, policy, wait_ms, batch, records, budget_s, pool))
                finally:
                    shutil.rmtree(directory)
                counts.append(done)
                rates.append(rate)
                latencies += lat
            results[policy, wait_ms, batch] = (median(counts), median(rates), latencies)

    rows = []
    for batch in batches:
        never_rate = results["never", 2.0, batch][1]
        for policy, wait_ms in VARIANTS:
            count, rate, lat = results[policy, wait_ms, batch]
            rows.append([policy, f"{wait_ms:g}" if policy == "group" else "-", batch, int(count), f"{rate:,.0f}",
                         rate / never_rate, pct(lat, 50), pct(lat, 99)])
    print(table(["policy", "group wait ms", "batch", "records", "events/s", "x never", "append p50 ms",
                 "append p99 ms"], rows))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 100, 1000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget-s", type=float, default=3.0)
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="where the logs go (its disk is what is measured)")
    args = ap.parse_args()
    main(args.records, args.batches, args.repeats, args.budget_s, args.dir)
