"""What idleness costs: the service's own steps and a gRPC call, warm and
after the process has sat idle.

    python tests/benchmarks/bench_idle_cost.py [--repeats 15]

A model slate's fixed cost in the service (validation, candidates, the
request's way in and out over gRPC) is a few hundred microseconds of code,
measured in a loop; the model-path benchmark, which waits a second before
every request, sees several milliseconds. This prints both for each step:
the best of tight loops ("warm"), and the median of single calls each made
after sleeping for a gap, on the embedded catalogue (50 candidates, 10
history ids, as in bench_model_path), then gRPC health checks against a
pointwise server on loopback by the same gaps. A step that is slow only
after a gap is paying for caches the machine gave to something else while
the process slept, not for its own work.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import tempfile
import time
import timeit
from pathlib import Path

from common import machine, start_server, stop_server, table

GAPS = (0.0005, 0.01, 0.05, 0.5)


def after_gaps(step, repeats: int) -> list[float]:
    """Median seconds of one call of ``step`` after sleeping each gap."""
    out = []
    for gap in GAPS:
        times = []
        for _ in range(repeats):
            time.sleep(gap)
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        out.append(statistics.median(times))
    return out


def warm(step) -> float:
    step()
    return min(timeit.repeat(step, number=200, repeat=5)) / 200


def service_steps():
    """The server's steps on one request's way in and out, as callables."""
    import random

    from bench_model_path import K, catalogue_ids
    from slatewise import logs
    from slatewise.candidates import resolve
    from slatewise.catalogue.loader import embedded_catalogue_path, load_jsonl
    from slatewise.catalogue.store import CatalogueStore
    from slatewise.config import load_settings
    from slatewise.embeddings import Embedder
    from slatewise.validation import validate
    from slatewise_client import build_request

    settings = load_settings(["--model", ""])
    embedder = Embedder(settings.embedding_model, settings.embedding_cache_dir, runtime=settings.embedding_runtime)
    store = CatalogueStore(load_jsonl(embedded_catalogue_path()), embedder)
    ids = catalogue_ids()
    rng = random.Random(7)
    request = build_request("", K, candidates=rng.sample(ids, 50), history=rng.sample(ids, 10),
                            strategy="model", request_id="idle")
    snap = store.snapshot
    req = validate(request, snap, settings)
    cset = resolve(req, snap, embedder, settings.retrieval_top_n)
    logs.configure()
    handler = logging.getLogger().handlers[0]
    handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 - the bench's whole life
    request_log = logging.getLogger("slatewise.requests")
    fields = {"request_id": "idle", "method": "Recommend", "strategy": "model", "reason": "none",
              "latency_s": 0.05, "k": K, "deadline_slack_s": 119.9}
    return [
        ("validate (the request -> SlateRequest)", lambda: validate(request, snap, settings)),
        ("resolve (candidate set, history-only)", lambda: resolve(req, snap, embedder, settings.retrieval_top_n)),
        ("slate diversity (K items)", lambda: cset.diversity_of(list(range(K)))),
        ("request log line (JSON)", lambda: request_log.info("slate served", extra=fields)),
    ]


async def health_checks(repeats: int) -> tuple[float, list[float]]:
    from slatewise_client import AsyncSlateClient

    server = start_server(Path(tempfile.mkdtemp(prefix="slatewise-idle-")), "--model", "")
    try:
        async with AsyncSlateClient(server.target) as client:
            async def once():
                t0 = time.perf_counter()
                await client.health("", deadline=5)
                return time.perf_counter() - t0

            for _ in range(20):
                await once()
            back_to_back = statistics.median([await once() for _ in range(50)])
            gaps = []
            for gap in GAPS:
                times = []
                for _ in range(repeats):
                    await asyncio.sleep(gap)
                    times.append(await once())
                gaps.append(statistics.median(times))
            return back_to_back, gaps
    finally:
        stop_server(server)


def main(repeats: int) -> None:
    print(f"# idle cost: median of {repeats} calls after each gap; warm = best of 5 x 200 calls in a loop")
    print(f"# machine: {machine()}")
    headers = ["step", "warm us", *[f"after {g * 1e3:g} ms idle, us" for g in GAPS], "after 500 ms / warm"]
    rows = []
    for name, step in service_steps():
        w, idle = warm(step), after_gaps(step, repeats)
        rows.append([name, f"{w * 1e6:.0f}", *[f"{t * 1e6:.0f}" for t in idle], f"{idle[-1] / w:.1f}x"])
    w, idle = asyncio.run(health_checks(repeats))
    rows.append(["gRPC health check, asyncio client, loopback (back to back)", f"{w * 1e6:.0f}",
                 *[f"{t * 1e6:.0f}" for t in idle], f"{idle[-1] / w:.1f}x"])
    print(table(headers, rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    main(parser.parse_args().repeats)
