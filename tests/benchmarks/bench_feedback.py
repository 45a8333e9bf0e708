"""Feedback ingest over gRPC: events/s by fsync policy, side by side.

    python tests/benchmarks/bench_feedback.py [--events 200000] [--batch 500] [--callers 4]

One pointwise server per fsync policy (group = the default, always, never),
each with its own log directory under /tmp, started one after the other on
loopback; the same pre-built batches of click events about one served slate
go to each in turn, ``--callers`` concurrent asyncio callers, three repeats
(fresh event ids each time, so nothing is a duplicate). events/s counts
acknowledged (durable per the policy) events over the wall time of a run;
the table gives medians and the ratio to ``never`` (the cost of durability).
The client runs on the same 2 cores as the server.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from common import machine, median, start_server, stop_server, table

from slatewise_client import AsyncSlateClient, SlateClient, build_event


async def _run(target: str, batches, callers: int) -> float:
    queue: asyncio.Queue = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)

    async with AsyncSlateClient(target) as client:
        async def caller():
            while not queue.empty():
                batch = queue.get_nowait()
                resp = await client.report_events(batch, deadline=60)
                assert resp.accepted == len(batch), resp

        t0 = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--callers", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    print(f"# feedback ingest over gRPC: {args.events} events per run, batches of {args.batch}, "
          f"{args.callers} callers, median of {args.repeats}\n# machine: {machine()}", flush=True)
    rows, rates = [], {}
    with tempfile.TemporaryDirectory(prefix="slatewise-feedback-bench-", dir="/tmp") as tmp:
        for policy in ("group", "always", "never"):
            server = start_server(Path(tmp), "--model", "", "--feedback-dir", f"{tmp}/log-{policy}",
                                  "--feedback-fsync", policy)
            try:
                with SlateClient(server.target) as client:
                    slate = client.recommend("casual outfit", 4)
                items = [it.item_id for it in slate.items]
                times = []
                for r in range(args.repeats):
                    batches = [[build_event(f"{r}-{b}-{i}", slate.slate_id, "click", [items[i % 4]],
                                            positions=[i % 4], user_id=f"u{i % 97}")
                                for i in range(args.batch)]
                               for b in range(args.events // args.batch)]
                    times.append(asyncio.run(_run(server.target, batches, args.callers)))
                n = args.batch * (args.events // args.batch)
                rates[policy] = n / median(times)
                log_bytes = sum(f.stat().st_size for f in Path(f"{tmp}/log-{policy}").glob("*.seg"))
                rows.append([policy, n, round(rates[policy]), min(n / t for t in times), log_bytes // 1024])
            finally:
                stop_server(server)
    for row in rows:
        row.append(rates[row[0]] / rates["never"])
    print(table(["fsync policy", "events per run", "events/s (median)", "events/s (worst run)",
                 "log KiB (all runs)", "× never"], rows), flush=True)


if __name__ == "__main__":
    main()
