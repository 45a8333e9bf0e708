"""Throughput at concurrency 1, 4, 16, 64 relative to 1 (vLLM batching), and
peak memory of the server process (without the engine core) and the engine.

    python tests/benchmarks/bench_throughput.py [--catalogue-items 100000]

Closed loop (slatewise-client's load generator), strategy MODEL, K=10, the
default server (whole embedded catalogue as the shared context). Memory is
the peak RSS sampled every 0.1 s: the server process alone, and the engine's
processes (EngineCore and its worker) together. With --catalogue-items N a
pointwise-only server is also started on a synthetic N-item catalogue and its
peak RSS reported (the 2 GiB target is for 100k items).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import threading
import time
from pathlib import Path

import psutil

from common import start_server, stop_server, table

LEVELS = [1, 4, 16, 64]


class PeakRss:
    def __init__(self, pid: int):
        self.proc = psutil.Process(pid)
        self.server = 0
        self.engine = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.server = max(self.server, self.proc.memory_info().rss)
                engine = 0
                for child in self.proc.children(recursive=True):
                    try:
                        engine += child.memory_info().rss
                    except psutil.Error:
                        pass
                self.engine = max(self.engine, engine)
            except psutil.Error:
                return
            time.sleep(0.1)

    def stop(self):
        self._stop.set()
        self._thread.join()


def synthetic_catalogue(path: Path, n: int) -> None:
    rng = random.Random(0)
    colours = ["black", "white", "navy", "olive", "grey", "red", "tan", "green", "blue", "pink"]
    kinds = {"tops": ["tee", "shirt", "sweater", "hoodie", "polo"], "bottoms": ["jeans", "chinos", "shorts", "skirt"],
             "shoes": ["sneakers", "boots", "loafers", "sandals"], "outerwear": ["coat", "parka", "blazer", "jacket"],
             "accessories": ["belt", "scarf", "cap", "watch", "bag"]}
    styles = ["casual", "formal", "sporty", "outdoor", "business", "streetwear"]
    with path.open("w") as f:
        for i in range(n):
            cat = rng.choice(list(kinds))
            f.write(json.dumps({"id": f"syn-{i}", "title": f"{rng.choice(colours)} {rng.choice(styles)} "
                                f"{rng.choice(kinds[cat])} no. {i}", "category": cat,
                                "attributes": {"style": rng.choice(styles), "colour": rng.choice(colours),
                                               "price": f"{rng.randint(10, 300)}.00"}}) + "\n")


async def main(rounds_per_level: int, catalogue_items: int) -> None:
    from slatewise_client import build_request
    from slatewise_client.loadtest import DEFAULT_QUERIES, run_load

    tmp = Path(tempfile.mkdtemp(prefix="slatewise-bench-"))
    server = start_server(tmp, "--max-num-seqs", "64", wait_for="slatewise.v1.Model", timeout=600)
    peak = PeakRss(server.process.pid)
    rows = []
    try:
        rng = random.Random(0)
        mix = [build_request(f"{q} #{i}", 10, strategy="model", diversity=rng.choice([0.0, 0.5]))
               for i in range(64) for q in DEFAULT_QUERIES]
        rng.shuffle(mix)
        base = None
        for c in LEVELS:
            results = await run_load(server.target, mix, requests=max(rounds_per_level, 3 * c),
                                     duration=300, concurrency=c)
            s = results.summary()
            tput = s["throughput_rps"]
            base = base or tput
            rows.append([f"concurrency {c}", s["requests"], tput, tput / base,
                         s["latency_seconds"]["p50"], s["latency_seconds"]["p99"],
                         json.dumps(s["strategies"])])
    finally:
        peak.stop()
        stop_server(server)
    print(table(["load", "requests", "slates/s", "× concurrency 1", "p50 s", "p99 s", "strategies"], rows))
    print()
    mem = [["server process (gRPC, catalogue, embeddings; no engine core), embedded catalogue",
            f"{peak.server / 2**30:.2f} GiB"],
           ["engine processes (EngineCore + worker), 2 GiB KV cache", f"{peak.engine / 2**30:.2f} GiB"]]
    if catalogue_items:
        path = tmp / "synthetic.jsonl"
        synthetic_catalogue(path, catalogue_items)
        t0 = time.monotonic()
        big = start_server(tmp, "--model", "", "--catalogue-path", str(path),
                           "--cache-dir", str(tmp / "cache"), timeout=3600)
        started = time.monotonic() - t0
        peak_big = PeakRss(big.process.pid)
        try:
            from slatewise_client import SlateClient
            with SlateClient(big.target) as client:
                for q in DEFAULT_QUERIES:
                    client.recommend(q, k=10, diversity=0.5)
            time.sleep(0.5)
        finally:
            peak_big.stop()
            stop_server(big)
        mem.append([f"server process, pointwise only, synthetic {catalogue_items:,}-item catalogue "
                    f"(start-up incl. embedding: {started:.0f} s)", f"{peak_big.server / 2**30:.2f} GiB"])
    print(table(["process", "peak RSS"], mem))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=24, help="requests per level (at least 3 x concurrency)")
    parser.add_argument("--catalogue-items", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.catalogue_items))
