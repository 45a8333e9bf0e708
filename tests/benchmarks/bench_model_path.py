"""Model-path benchmark: service vs raw vLLM, tokens per item, time to first
item, prefix cache on vs off, and decoding settings (position bias, diversity).

Everything is measured in one run, requests one at a time and interleaved
between the systems compared, so machine noise hits both sides alike.

    python tests/benchmarks/bench_model_path.py [--rounds 30] [--server-args "--cpu-omp-threads-bind 0-1"]

--server-args go to the server and to the raw engine alike (both read them
as settings), so a CPU or engine setting is compared like for like.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shlex
import tempfile
import time
from pathlib import Path


from common import machine, median, pct, start_server, stop_server, table

QUERIES = ["casual outfit", "business meeting", "rainy autumn commute", "beach holiday",
           "gym session", "wedding guest", "winter hiking", "first date dinner",
           "weekend city break", "job interview", "music festival", "ski trip"]
K = 10


def shared_pool(seed: int = 7, n: int = 50) -> list[str]:
    from slatewise.catalogue.loader import embedded_catalogue_path, load_jsonl

    ids = sorted(it.id for it in load_jsonl(embedded_catalogue_path()))
    return random.Random(seed).sample(ids, n)


def requests(pool, rounds, **kw):
    from slatewise_client import build_request

    return [build_request(QUERIES[i % len(QUERIES)] + ("" if i < len(QUERIES) else f" #{i}"), K,
                          candidates=pool, strategy="model", request_id=f"bench-{i}", **kw)
            for i in range(rounds)]


class RawEngine:
    """The same engine settings and logits processor, called directly."""

    def __init__(self, settings):
        from slatewise.catalogue.loader import embedded_catalogue_path, load_jsonl
        from slatewise.catalogue.store import CatalogueStore
        from slatewise.embeddings import Embedder
        from slatewise.model.composer import SlateComposer
        from slatewise.model.engine import Engine

        self.settings = settings
        self.embedder = Embedder(settings.embedding_model, settings.embedding_cache_dir)
        self.store = CatalogueStore(load_jsonl(embedded_catalogue_path()), self.embedder)
        self.engine = Engine(settings)
        self.composer = SlateComposer(self.engine, settings)

    async def start(self):
        self.engine.llm, self.engine.tokenizer = await asyncio.to_thread(self.engine._build)
        self.composer.attach_tokenizer(self.engine.tokenizer)

    def plan(self, request):
        from slatewise.candidates import resolve
        from slatewise.validation import validate

        req = validate(request, self.store.snapshot, self.settings)
        return self.composer.plan(resolve(req, self.store.snapshot, self.embedder,
                                          self.settings.retrieval_top_n)), req

    async def generate(self, plan, request_id):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(temperature=0.0, max_tokens=plan.spec.k + 1,
                                extra_args=plan.spec.to_extra_args(),
                                output_kind=RequestOutputKind.DELTA, detokenize=False)
        t0 = time.perf_counter()
        first, n = None, 0
        async for out in self.engine.llm.generate(TokensPrompt(prompt_token_ids=plan.prompt_tokens),
                                                   params, request_id=request_id):
            if first is None and out.outputs[0].token_ids:
                first = time.perf_counter() - t0
            n += len(out.outputs[0].token_ids)
        return time.perf_counter() - t0, first, n


async def timed_stream(client, request):
    t0 = time.perf_counter()
    first, slate = None, None
    async for event in client.recommend_stream(request=request, deadline=120):
        if event.WhichOneof("event") == "item" and first is None:
            first = time.perf_counter() - t0
        elif event.WhichOneof("event") == "slate":
            slate = event.slate
    return time.perf_counter() - t0, first, slate


async def timed_unary(client, request):
    t0 = time.perf_counter()
    slate = await client.recommend(request=request, deadline=120)
    return time.perf_counter() - t0, slate


async def main(rounds: int, server_args: list[str]) -> None:
    from slatewise.config import load_settings
    from slatewise_client import AsyncSlateClient

    tmp = Path(tempfile.mkdtemp(prefix="slatewise-bench-"))
    # A 50-item context shared by every request (not the whole catalogue).
    common_args = ["--full-catalogue-context-max-items", "0", *server_args]
    pool = shared_pool()
    settings = load_settings(common_args)
    print(f"# model path benchmark: K={K}, 50-item shared context, {rounds} rounds, "
          f"server args {server_args}\n# machine: {machine()}", flush=True)

    results: dict[str, list] = {k: [] for k in ("svc", "raw", "svc_first", "raw_first",
                                                "tokens", "raw_tokens", "on", "off")}
    server_on = start_server(tmp, *common_args, wait_for="slatewise.v1.Model", timeout=600)
    try:
        # Phase 1: the service and a raw engine with the same settings, alternating.
        raw = RawEngine(settings)
        await raw.start()
        try:
            async with AsyncSlateClient(server_on.target) as on:
                for r in requests(pool, 2):  # warm both caches and code paths
                    await timed_unary(on, r)
                    await raw.generate(raw.plan(r)[0], f"warm-{r.request_id}")
                for i, request in enumerate(requests(pool, rounds)):
                    plan, _ = raw.plan(request)
                    for which in ([0, 1] if i % 2 == 0 else [1, 0]):
                        if which == 0:
                            total, slate = await timed_unary(on, request)
                            assert slate.strategy == 2, slate  # STRATEGY_MODEL
                            results["svc"].append(total)
                            results["tokens"].append(slate.generated_tokens / K)
                        else:
                            total, first, n = await raw.generate(plan, f"raw-{i}")
                            results["raw"].append(total)
                            results["raw_first"].append(first / total)
                            results["raw_tokens"].append(n / K)
                    # Streaming, on a request not seen before (its own query).
                    fresh = type(request)()
                    fresh.CopyFrom(request)
                    fresh.context.query += " (streamed)"
                    total, first, _ = await timed_stream(on, fresh)
                    results["svc_first"].append(first / total)
        finally:
            raw.engine.llm.shutdown()
        # Phase 2: prefix cache on vs off, fresh requests (shared context, new queries).
        server_off = start_server(tmp, *common_args, "--no-enable-prefix-caching",
                                  wait_for="slatewise.v1.Model", timeout=600)
        try:
            async with AsyncSlateClient(server_on.target) as on, \
                    AsyncSlateClient(server_off.target) as off:
                for i, request in enumerate(requests(pool, rounds + 12)[12:]):
                    request.context.query += " again"
                    for which in ([0, 1] if i % 2 == 0 else [1, 0]):
                        client, key = (on, "on") if which == 0 else (off, "off")
                        results[key].append((await timed_unary(client, request))[0])
        finally:
            stop_server(server_off)
    finally:
        stop_server(server_on)

    svc, rawv = results["svc"], results["raw"]
    rows = [
        ["Recommend over gRPC (unary), p50 s", median(svc)],
        ["Recommend over gRPC (unary), p95 s", pct(svc, 95)],
        ["raw AsyncLLM.generate, same prompt + processor, p50 s", median(rawv)],
        ["raw AsyncLLM.generate, p95 s", pct(rawv, 95)],
        ["service / raw (p50)", median(svc) / median(rawv)],
        ["generated tokens per item (service)", median(results["tokens"])],
        ["generated tokens per item (raw)", median(results["raw_tokens"])],
        ["time to first item / full slate, streamed, client side (median)", median(results["svc_first"])],
        ["time to first token / total, raw engine (median)", median(results["raw_first"])],
        ["prefix cache on, p50 s", median(results["on"])],
        ["prefix cache off, p50 s", median(results["off"])],
        ["prefix cache off / on (p50)", median(results["off"]) / median(results["on"])],
    ]
    print(table(["measure", "value"], rows), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--server-args", default="", help="extra `slatewise serve` flags for both systems")
    args = parser.parse_args()
    asyncio.run(main(args.rounds, shlex.split(args.server_args)))
