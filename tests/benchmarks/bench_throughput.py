"""Throughput at concurrency 1, 4, 16, 64 relative to 1 (vLLM batching), and
peak memory of the server process (without the engine core) and the engine.

    python tests/benchmarks/bench_throughput.py [--catalogue-items 100000]
    python tests/benchmarks/bench_throughput.py --model DIR [--catalogue CAT] [--server-arg=...] [--pinning-ab]

Closed loop (slatewise-client's load generator), strategy MODEL, K=10, the
default server (whole embedded catalogue as the shared context). Memory is
the peak RSS sampled every 0.1 s: the server process alone, and the engine's
processes (EngineCore and its worker) together. With --catalogue-items N a
pointwise-only server is also started on a synthetic N-item catalogue and its
peak RSS reported (the 2 GiB target is for 100k items).

--model DIR: a model trained by `slatewise train` (served with `--model DIR`,
`--catalogue-path CAT` when given); every request has the same 50 catalogue
items as candidates and is history-only (10 random catalogue ids) or
query-only, alternating, as in bench_model_path.py --model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psutil

from common import machine, start_server, stop_server, table

LEVELS = [1, 4, 16, 64]
PINNING_LEVELS = ((1, 150), (16, 480))  # (concurrency, requests) of --pinning-ab, per mode and repeat


def vm_hwm(pid: int) -> int:
    """Peak resident set of a process over its whole life (Linux VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


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
        try:  # the kernel's own peak beats any sampling
            self.server = max(self.server, vm_hwm(self.proc.pid))
        except OSError:
            pass


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


def seed_embedding_cache(catalogue: Path, cache_dir: Path) -> None:
    """Synthetic item embeddings, written where the server's embedding cache
    looks: embedding 100k titles with MiniLM takes ~20 min on two cores and
    says nothing about memory."""
    import numpy as np

    from slatewise.catalogue.loader import load_jsonl
    from slatewise.embeddings import EMBEDDED, _resolve, text_key

    keys = [text_key(it.text()) for it in load_jsonl(catalogue)]
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((len(keys), 384), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    out = cache_dir / "embeddings" / f"{text_key(_resolve(EMBEDDED))}.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, keys=np.array(keys), vectors=vecs)


async def main(rounds_per_level: int, catalogue_items: int, context: str, server_args: list[str],
               model: str = "", catalogue: str = "", shape: str = "", repeats: int = 1,
               pinning_ab: bool = False) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="slatewise-bench-"))
    rows, mem = [], []
    if rounds_per_level:
        await throughput(tmp, rounds_per_level, context, rows, mem, server_args, model, catalogue, shape, repeats,
                         pinning_ab)
    if rows:
        print(table(["load", "requests", "slates/s (median)", "× concurrency 1", "p50 s", "p99 s", "strategies"]
                    + (["slates/s of each repeat"] if repeats > 1 else [])
                    + (["CPU s per slate: server process / engine processes"] if model else []), rows))
        print()
    if catalogue_items:
        memory_large(tmp, catalogue_items, mem)
    print(table(["process", "peak RSS"], mem))


def cpu_seconds(proc: psutil.Process) -> tuple[float, float]:
    """CPU time (user + system) of the server process and of its children (the engine)."""
    t = proc.cpu_times()
    engine = 0.0
    for child in proc.children(recursive=True):
        try:
            c = child.cpu_times()
            engine += c.user + c.system
        except psutil.Error:
            pass
    return t.user + t.system, engine


async def throughput(tmp, rounds_per_level, context, rows, mem, server_args, model="", catalogue="", shape="",
                     repeats=1, pinning_ab=False):
    from slatewise_client import build_request
    from slatewise_client.loadtest import DEFAULT_QUERIES, run_load

    extra = ["--full-catalogue-context-max-items", "0"] if context == "pool50" else []
    if model:
        extra = [*(["--catalogue-path", catalogue] if catalogue else []), "--model", model]
    server = start_server(tmp, "--max-num-seqs", "64", *extra, *server_args,
                          wait_for="slatewise.v1.Model", timeout=600)
    peak = PeakRss(server.process.pid)
    try:
        rng = random.Random(0)
        if model:
            from bench_model_path import catalogue_ids, shared_pool, trained_request
            pool = shared_pool(path=catalogue or None)
            ids = catalogue_ids(catalogue or None)
            # Enough distinct requests that none repeats (a repeated query is cached).
            ab = 2 * sum(n for _, n in PINNING_LEVELS) if pinning_ab else 0  # both modes
            total = repeats * (sum(max(rounds_per_level, 30 * c) for c in LEVELS) + ab)
            mix = [trained_request(i, pool, ids, 10, shape=shape, diversity=rng.choice([0.0, 0.5]))[1]
                   for i in range(total)]
        elif context == "pool50":
            from bench_model_path import shared_pool
            pool = shared_pool()
        else:
            pool = ()
        if not model:
            mix = [build_request(f"{q} #{i}", 10, strategy="model", diversity=rng.choice([0.0, 0.5]),
                                 candidates=pool)
                   for i in range(64) for q in DEFAULT_QUERIES]
        rng.shuffle(mix)
        # Warm the shared context into the prefix cache first (not measured):
        # the first request of a new context pays its whole prefill.
        from slatewise_client import SlateClient
        with SlateClient(server.target) as client:
            client.recommend(request=build_request("warm-up", 10, strategy="model", candidates=pool))
        offset = 0
        runs: dict[int, list] = {c: [] for c in LEVELS}
        # A trained model's slate takes ~30 ms: a level of a few dozen requests
        # is mostly ramp-up and tail, so each level runs 30 requests per caller
        # and the levels are repeated in turn; medians over the repeats.
        for _ in range(repeats):
            for c in LEVELS:
                n = max(rounds_per_level, (30 if model else 3) * c)
                # A trained model: fresh requests at every level (no query embedding
                # cached by an earlier level); the text path keeps its mix.
                level_mix = rotated(mix, offset) if model else mix
                offset += n if model else 0
                cpu0 = cpu_seconds(peak.proc)
                results = await run_load(server.target, level_mix, requests=n,
                                         duration=300, concurrency=c)
                cpu1 = cpu_seconds(peak.proc)
                runs[c].append((results.summary(), cpu0, cpu1))
        base = statistics.median(s["throughput_rps"] for s, *_ in runs[1])
        for c in LEVELS:
            summaries = [s for s, *_ in runs[c]]
            tput = statistics.median(s["throughput_rps"] for s in summaries)
            count = sum(s["requests"] for s in summaries)
            strategies: dict[str, int] = {}
            for s in summaries:
                for k, v in s["strategies"].items():
                    strategies[k] = strategies.get(k, 0) + v
            server_cpu = sum(c1[0] - c0[0] for _, c0, c1 in runs[c]) / count * 1000
            engine_cpu = sum(c1[1] - c0[1] for _, c0, c1 in runs[c]) / count * 1000
            rows.append([f"concurrency {c}", count, tput, tput / base,
                         statistics.median(s["latency_seconds"]["p50"] for s in summaries),
                         statistics.median(s["latency_seconds"]["p99"] for s in summaries),
                         json.dumps(strategies)]
                        + ([" / ".join(f"{s['throughput_rps']:.1f}" for s in summaries)] if repeats > 1 else [])
                        + ([f"{server_cpu:.1f} ms / {engine_cpu:.1f} ms"] if model else []))
        if pinning_ab:
            await compare_pinning(server, rotated(mix, offset), repeats)
    finally:
        peak.stop()
        stop_server(server)
    mem += [["server process (gRPC, catalogue, embeddings; no engine core), embedded catalogue, under load",
             f"{peak.server / 2**30:.2f} GiB"],
            ["engine processes (EngineCore + worker), 2 GiB KV cache", f"{peak.engine / 2**30:.2f} GiB"]]


def rotated(mix: list, offset: int) -> list:
    """The mix starting at ``offset``: fresh requests for the next level."""
    offset %= len(mix)
    return mix[offset:] + mix[:offset]


def set_engine_core_cores(server, pinned: bool) -> None:
    """What the server's cpu_pin_engine_core does at start (the same function),
    or its undoing from outside: the engine core's threads on any core."""
    from slatewise.model.platform import pin_engine_core

    procs = psutil.Process(server.process.pid).children(recursive=True)
    if pinned:
        assert pin_engine_core([p.pid for p in procs]), "no engine core to pin"
        return
    core = next(p for p in procs if p.name().startswith("VLLM::EngineCor"))
    for thread in core.threads():
        os.sched_setaffinity(thread.id, sorted(os.sched_getaffinity(0)))


async def compare_pinning(server, mix, repeats: int) -> None:
    """Concurrency 1 and 16 with the engine core pinned and unpinned, in turn
    on the same server (orders alternating), medians over the repeats."""
    from slatewise_client.loadtest import run_load

    runs: dict[tuple[str, int], list] = {}
    offset = 0
    for r in range(repeats):
        for mode in (("pinned", "unpinned") if r % 2 == 0 else ("unpinned", "pinned")):
            set_engine_core_cores(server, mode == "pinned")
            for c, n in PINNING_LEVELS:
                s = (await run_load(server.target, mix[offset:offset + n], requests=n,
                                    duration=300, concurrency=c)).summary()
                offset += n
                runs.setdefault((mode, c), []).append(s)
    set_engine_core_cores(server, True)
    rows = []
    for mode in ("pinned", "unpinned"):
        t1, t16 = (statistics.median(s["throughput_rps"] for s in runs[mode, c]) for c in (1, 16))
        p1, p16 = (statistics.median(s["latency_seconds"]["p50"] for s in runs[mode, c]) for c in (1, 16))
        rows.append([mode, t1, t16, t16 / t1, p1, p16,
                     " / ".join(f"{s['throughput_rps']:.1f}" for s in runs[mode, 16])])
    print(table(["engine core", "c=1 slates/s", "c=16 slates/s", "c=16 / c=1", "c=1 p50 s", "c=16 p50 s",
                 "c=16 slates/s of each repeat"], rows))
    print()


def memory_large(tmp, catalogue_items, mem):
    from slatewise_client import SlateClient
    from slatewise_client.loadtest import DEFAULT_QUERIES

    path = tmp / "synthetic.jsonl"
    synthetic_catalogue(path, catalogue_items)
    seed_embedding_cache(path, tmp / "cache")
    t0 = time.monotonic()
    big = start_server(tmp, "--model", "", "--catalogue-path", str(path),
                       "--cache-dir", str(tmp / "cache"), timeout=3600)
    started = time.monotonic() - t0
    try:
        with SlateClient(big.target) as client:
            for q in DEFAULT_QUERIES:
                client.recommend(q, k=10, diversity=0.5)
        peak = vm_hwm(big.process.pid)
    finally:
        stop_server(big)
    mem.append([f"server process, pointwise only, synthetic {catalogue_items:,}-item catalogue "
                f"(start-up {started:.0f} s, embeddings pre-seeded)", f"{peak / 2**30:.2f} GiB"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=0,
                        help="requests per level, at least 3 x concurrency (30 x with --model); "
                             "default 24 (150 with --model)")
    parser.add_argument("--repeats", type=int, default=0,
                        help="times the levels are run in turn (default: 3 with --model, else 1)")
    parser.add_argument("--catalogue-items", type=int, default=0)
    parser.add_argument("--context", choices=["catalogue", "pool50"], default="catalogue",
                        help="the whole catalogue as context (default) or a shared 50-item candidate set")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra `slatewise serve` flag for the model server (repeatable)")
    parser.add_argument("--model", default="", metavar="DIR", help="a model directory written by `slatewise train`")
    parser.add_argument("--catalogue", default="", metavar="CAT",
                        help="with --model: the catalogue it was trained on (default: the embedded one)")
    parser.add_argument("--shape", choices=["history", "query"], default="",
                        help="with --model: only this request shape (default: alternating)")
    parser.add_argument("--pinning-ab", action="store_true",
                        help="with --model: also concurrency 1 and 16 with the engine core pinned and unpinned, "
                             "in turn on the same server")
    args = parser.parse_args()
    if args.model:
        print(f"# throughput, trained model {args.model}, catalogue {args.catalogue or 'embedded'}, "
              f"50 shared candidates, {args.shape + '-only' if args.shape else 'history-only / query-only'} "
              f"requests, server flags: {args.server_arg}")
    else:
        print(f"# throughput, context: {args.context}, server flags: {args.server_arg}")
    print(f"# machine: {machine(trained=bool(args.model))}")
    asyncio.run(main(args.requests or (150 if args.model else 24), args.catalogue_items, args.context, args.server_arg,
                     args.model, args.catalogue, args.shape, args.repeats or (3 if args.model else 1),
                     args.pinning_ab and bool(args.model)))
