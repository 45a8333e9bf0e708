"""Model-path benchmark: service vs raw vLLM, tokens per item, time to first
item, prefix cache on vs off, and decoding settings (position bias, diversity).

Everything is measured in one run, requests one at a time and interleaved
between the systems compared, so machine noise hits both sides alike. Before
each timed request of the service / raw phase (and at each switch from one
engine to the other in the prefix-cache phase) the benchmark waits out vLLM's
one-second spin-wait, so an idle engine never competes with the measured one
and every request finds its engine in the same state.

    python tests/benchmarks/bench_model_path.py [--rounds 30] [--server-args "--cpu-omp-threads-bind 0-1"]
    python tests/benchmarks/bench_model_path.py --model DIR [--catalogue CAT] [--rounds 40]

--server-args go to the server and to the raw engine alike (both read them
as settings), so a CPU or engine setting is compared like for like.

--model DIR benchmarks a model trained by `slatewise train` (served with
`--model DIR`, `--catalogue-path CAT` when given): the requests alternate
between history-only (--history catalogue ids, no query) and query-only
shapes, the raw engine gets the server planner's prompt (token ids, or
prompt embeddings with the query's soft token), and the prefix-cache phase
is skipped (a trained model's prompt is at most ~23 tokens). Two raw
baselines: "raw generate" is AsyncLLM.generate given the finished prompt;
"raw model" adds what a query-only prompt needs first and vLLM cannot do,
the query's soft token (the same int8 encoder and projection, uncached),
as raw vLLM with a text model tokenizes the prompt inside generate.

--warm times each service / raw request right after an untimed one of the
same shape on the same system (both after the pause): the state of a system
under steady traffic (caches warm, engine processes still spinning), where
the default measures one that has sat idle for a second. Both are reported
in docs/BENCHMARKS.md; neither is the other's stand-in.

With --model, each service / raw model ratio comes with a 95 % bootstrap
interval over the rounds. On a 2-core machine one slate's nine decode steps
alone took 20-52 ms, so the median of 75 requests per shape (--rounds 150)
moves by several per cent between runs; --rounds 600 narrows the interval
to about +-3 % (docs/BENCHMARKS.md, 2026-12-02, third session).

--dump FILE writes each round's service and raw model times as JSON lines,
in order, to look for drift across a long run.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shlex
import tempfile
import time
from pathlib import Path


from common import machine, median, pct, ratio_ci, start_server, stop_server, table

QUERIES = ["casual outfit", "business meeting", "rainy autumn commute", "beach holiday",
           "gym session", "wedding guest", "winter hiking", "first date dinner",
           "weekend city break", "job interview", "music festival", "ski trip"]
K = 10
SPIN_WINDOW = 1.1  # s: vLLM's engine processes spin this long after a step (shm_broadcast busy_loop_s = 1)


def catalogue_ids(path=None) -> list[str]:
    from slatewise.catalogue.loader import embedded_catalogue_path, load_jsonl

    return sorted(it.id for it in load_jsonl(Path(path) if path else embedded_catalogue_path()))


def shared_pool(seed: int = 7, n: int = 50, path=None) -> list[str]:
    return random.Random(seed).sample(catalogue_ids(path), n)


SHAPES = ("history", "query")  # the request shapes of a trained model, alternating


def trained_request(i: int, pool, ids, history: int, *, prefix: str = "bench", shape: str = "", **kw):
    """Request i for a trained model: even i history-only (``history`` random
    catalogue ids, no query), odd i query-only (or ``shape``); candidates ``pool``."""
    from slatewise_client import build_request

    shape = shape or SHAPES[i % len(SHAPES)]
    if shape == "history":
        hist = random.Random(1000 + i).sample(ids, history)
        return shape, build_request("", K, candidates=pool, history=hist, strategy="model",
                                    request_id=f"{prefix}-{i}", **kw)
    query = QUERIES[(i // 2) % len(QUERIES)] + f" #{i}"
    return shape, build_request(query, K, candidates=pool, strategy="model", request_id=f"{prefix}-{i}", **kw)


def requests(pool, rounds, trained=None, **kw):
    """The LLM path's requests; with ``trained`` = (catalogue ids, history
    length), a trained model's alternating history-only / query-only ones."""
    from slatewise_client import build_request

    if trained is not None:
        return [trained_request(i, pool, *trained, **kw)[1] for i in range(rounds)]
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

        from slatewise.server import limit_server_threads

        limit_server_threads()  # as the server does: same frontend, same threads
        self.settings = settings
        self.embedder = Embedder(settings.embedding_model, settings.embedding_cache_dir,
                                 runtime=settings.embedding_runtime)  # the server's query encoder
        self.store = CatalogueStore(load_jsonl(settings.catalogue_path or embedded_catalogue_path()),
                                    self.embedder)
        self.engine = Engine(settings)
        self.composer = SlateComposer(self.engine, settings)

    async def start(self):
        self.engine.llm, self.engine.tokenizer = await asyncio.to_thread(self.engine._build)
        self.composer.prepare()  # the text path's tokenizer; a trained model has none

    def plan(self, request):
        from slatewise.candidates import resolve
        from slatewise.validation import validate

        req = validate(request, self.store.snapshot, self.settings)
        return self.composer.plan(resolve(req, self.store.snapshot, self.embedder,
                                          self.settings.retrieval_top_n)), req

    def soft_token(self, plan, request) -> float:
        """Seconds to compute ``plan``'s query soft token as the server does
        on a cache miss: the query encoder, then the model's projection."""
        from slatewise.candidates import query_text

        t0 = time.perf_counter()
        vector = self.embedder.encode_queries([query_text(request)])[0]
        plan.prompt_embeds[1] = self.composer.items.model.project_query(vector)
        return time.perf_counter() - t0

    async def run_model(self, plan, request, request_id):
        """Raw model: the query's soft token first when the prompt has one,
        which raw vLLM cannot compute (as it tokenizes a text prompt inside
        generate), then generate. Returns (encode s, total s, first s, tokens)."""
        encode = self.soft_token(plan, request) if plan.prompt_embeds is not None else 0.0
        return (encode, *await self.generate(plan, request_id))

    async def generate(self, plan, request_id):
        from slatewise.model.engine import Engine

        params = Engine.sampling_params(plan.spec)  # what the server sends
        t0 = time.perf_counter()
        first, n = None, 0
        # Token ids, or (a trained model with a query) prompt embeddings, as the server sends them.
        prompt = Engine._prompt(plan.prompt_tokens, plan.prompt_embeds)
        async for out in self.engine.llm.generate(prompt, params, request_id=request_id):
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


def fresh_request(i: int, request, pool, trained, tag: str, offset: int):
    """Request i again, of its shape but its own (a query the encoder's
    cache and the prefix cache have not seen): the streaming phase's, and
    with --warm the untimed one sent just before timed request i."""
    if trained is not None:  # offset even: the same shape as request i
        return trained_request(offset + i, pool, *trained, prefix=tag)[1]
    fresh = type(request)()
    fresh.CopyFrom(request)
    fresh.context.query += f" ({tag})"
    return fresh


async def main(rounds: int, server_args: list[str], model: str = "", catalogue: str = "",
               history: int = 10, warm: bool = False, dump: str = "") -> None:
    from slatewise.config import load_settings
    from slatewise_client import AsyncSlateClient

    tmp = Path(tempfile.mkdtemp(prefix="slatewise-bench-"))
    # A 50-item context shared by every request (not the whole catalogue).
    common_args = ["--full-catalogue-context-max-items", "0", *server_args]
    if model:
        common_args = [*(["--catalogue-path", catalogue] if catalogue else []), "--model", model, *common_args]
    pool = shared_pool(path=catalogue or None)
    trained = (catalogue_ids(catalogue or None), history) if model else None
    settings = load_settings(common_args)
    what = (f"trained model {model}, catalogue {catalogue or 'embedded'}, 50 shared candidates, "
            f"requests alternating history-only ({history} ids) / query-only"
            if model else "50-item shared context")
    what += (", each timed request right after an untimed one on the same system (--warm)" if warm
             else ", each timed request after a pause")
    print(f"# model path benchmark: K={K}, {what}, {rounds} rounds, "
          f"server args {server_args}\n# machine: {machine(trained=bool(model))}", flush=True)

    results: dict[str, list] = {k: [] for k in ("svc", "raw", "svc_first", "raw_first",
                                                "tokens", "raw_tokens", "on", "off", "encode", "raw_enc")}
    by_shape: dict[tuple[str, str], list] = {(w, s): [] for w in ("svc", "raw", "raw_enc") for s in SHAPES}
    server_on = start_server(tmp, *common_args, wait_for="slatewise.v1.Model", timeout=600)
    try:
        # Phase 1: the service and a raw engine with the same settings, alternating.
        raw = RawEngine(settings)
        await raw.start()
        try:
            async with AsyncSlateClient(server_on.target) as on:
                # Not named `warm`: that name is the --warm flag. A list of
                # requests in its place (from ea86892 until 2026-12-02) made
                # every run a --warm one, the default included.
                warmup = ([trained_request(20_000 + j, pool, *trained, prefix="warm")[1] for j in range(2)]
                          if trained else requests(pool, 2))
                for r in warmup:
                    await timed_unary(on, r)  # warm both caches and code paths
                    await raw.generate(raw.plan(r)[0], f"warm-{r.request_id}")
                reqs = requests(pool, rounds, trained)
                # Planned before any is timed: planning encodes each query, and
                # an encoder run just before the timed one would find its
                # weights in cache, as the server's (between other work) does not.
                plans = [raw.plan(r) for r in reqs]
                leads = [fresh_request(i, r, pool, trained, "lead", 40_000) for i, r in enumerate(reqs)] if warm else []
                lead_plans = [raw.plan(r) for r in leads]
                for i, (request, (plan, req)) in enumerate(zip(reqs, plans)):
                    shape = SHAPES[i % len(SHAPES)]
                    # Which system goes first alternates every second round,
                    # not every round as the shapes do: that gave every
                    # history-only request to the service first and every
                    # query-only one to raw vLLM first, and the one that goes
                    # second runs just after its rival (docs/BENCHMARKS.md).
                    for which in ([0, 1] if (i // len(SHAPES)) % 2 == 0 else [1, 0]):
                        # Every timed request starts with both engines idle.
                        # The other engine's processes spin-wait for a second
                        # after their last step (vLLM's shm queue): they would
                        # share this one's cores (pinned alike). And a request
                        # that follows one on the same engine at once finds it
                        # still spinning, several ms faster than one after a
                        # pause: waiting only at switches (and the order then
                        # alternating as the shapes did) gave the service every
                        # query-only request cold and raw vLLM every one warm
                        # (and history-only the other way round).
                        await asyncio.sleep(SPIN_WINDOW)
                        if warm and which == 0:
                            await timed_unary(on, leads[i])
                        elif warm:
                            await raw.run_model(*lead_plans[i], f"lead-{i}")
                        if which == 0:
                            total, slate = await timed_unary(on, request)
                            assert slate.strategy == 2, slate  # STRATEGY_MODEL
                            results["svc"].append(total)
                            by_shape["svc", shape].append(total)
                            results["tokens"].append(slate.generated_tokens / K)
                        else:
                            encode, total, first, n = await raw.run_model(plan, req, f"raw-{i}")
                            results["encode"].append(encode)
                            results["raw"].append(total)
                            results["raw_enc"].append(total + encode)
                            by_shape["raw", shape].append(total)
                            by_shape["raw_enc", shape].append(total + encode)
                            results["raw_first"].append(first / total)
                            results["raw_tokens"].append(n / K)
        finally:
            raw.engine.llm.shutdown()
        # Streaming, the service alone, on requests not seen before (their own query).
        async with AsyncSlateClient(server_on.target) as on:
            for i, request in enumerate(requests(pool, rounds, trained)):
                total, first, _ = await timed_stream(on, fresh_request(i, request, pool, trained, "streamed", 10_000))
                results["svc_first"].append(first / total)
        if model:  # no shared context to cache: the prompt is BOS, query, history, SEP
            raise _SkipPhase2
        # Phase 2: prefix cache on vs off, fresh requests (shared context, new queries).
        server_off = start_server(tmp, *common_args, "--no-enable-prefix-caching",
                                  wait_for="slatewise.v1.Model", timeout=600)
        try:
            async with AsyncSlateClient(server_on.target) as on, \
                    AsyncSlateClient(server_off.target) as off:
                last = None
                for i, request in enumerate(requests(pool, rounds + 12)[12:]):
                    request.context.query += " again"
                    for which in ([0, 1] if i % 2 == 0 else [1, 0]):
                        if last is not None and which != last:
                            await asyncio.sleep(SPIN_WINDOW)  # as in phase 1
                        last = which
                        client, key = (on, "on") if which == 0 else (off, "off")
                        results[key].append((await timed_unary(client, request))[0])
        finally:
            stop_server(server_off)
    except _SkipPhase2:
        pass
    finally:
        stop_server(server_on)

    svc, rawv = results["svc"], results["raw"]
    rows = [
        ["Recommend over gRPC (unary), p50 s", median(svc)],
        ["Recommend over gRPC (unary), p95 s", pct(svc, 95)],
        ["raw AsyncLLM.generate, same prompt + processor, p50 s", median(rawv)],
        ["raw AsyncLLM.generate, p95 s", pct(rawv, 95)],
        ["service / raw (p50)", median(svc) / median(rawv)],
        # Each request is timed on both, back to back: the median of its own
        # ratios is not moved by how the request shapes' times interleave.
        ["service / raw, median of per-request ratios", median([a / b for a, b in zip(svc, rawv)])],
        ["generated tokens per item (service)", median(results["tokens"])],
        ["generated tokens per item (raw)", median(results["raw_tokens"])],
        ["time to first item / full slate, streamed, client side (median)", median(results["svc_first"])],
        ["time to first token / total, raw engine (median)", median(results["raw_first"])],
        ["prefix cache on, p50 s", median(results["on"])],
        ["prefix cache off, p50 s", median(results["off"])],
        ["prefix cache off / on (p50)", median(results["off"]) / median(results["on"])],
    ]
    if model:
        rows = rows[:-3]
        query_encodes = [e for e in results["encode"] if e > 0]
        with_enc = results["raw_enc"]
        rows += [["query soft token in the raw process (encoder + projection, uncached), p50",
                  f"{median(query_encodes) * 1e3:.2f} ms"],
                 ["service / raw model (soft token + generate) (p50)", median(svc) / median(with_enc)],
                 ["service / raw model, median of per-request ratios",
                  median([a / b for a, b in zip(svc, with_enc)])],
                 ["service / raw model (p50), 95% bootstrap interval over rounds", ratio_ci(svc, with_enc)],
                 ["service - raw model, p50 of each, ms",
                  f"{(median(svc) - median(with_enc)) * 1e3:.2f} ({ratio_ci(svc, with_enc, _ms_diff)})"]]
        for shape in SHAPES:
            s, r, m = by_shape["svc", shape], by_shape["raw", shape], by_shape["raw_enc", shape]
            rows += [[f"{shape}-only: service p50 s / raw generate p50 s / raw model p50 s",
                      f"{median(s):.4f} / {median(r):.4f} / {median(m):.4f}"],
                     [f"{shape}-only: service / raw generate, p50 and per request",
                      f"{median(s) / median(r):.3f} / {median([a / b for a, b in zip(s, r)]):.3f}"],
                     [f"{shape}-only: service / raw model, p50 and per request",
                      f"{median(s) / median(m):.3f} / {median([a / b for a, b in zip(s, m)]):.3f}"],
                     [f"{shape}-only: service / raw model (p50), 95% bootstrap interval", ratio_ci(s, m)]]
    print(table(["measure", "value"], rows), flush=True)
    if dump:  # per round, in order: drift over a long run shows here, not in the medians
        import json

        with open(dump, "w") as f:
            for i, (a, b) in enumerate(zip(svc, results["raw_enc"])):
                f.write(json.dumps({"round": i, "shape": SHAPES[i % len(SHAPES)] if model else "",
                                    "service_s": a, "raw_model_s": b}) + "\n")


def _ms_diff(a, b) -> float:
    import numpy as np

    return float(np.median(a) - np.median(b)) * 1e3


class _SkipPhase2(Exception):
    pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--server-args", default="", help="extra `slatewise serve` flags for both systems")
    parser.add_argument("--model", default="", metavar="DIR", help="a model directory written by `slatewise train`")
    parser.add_argument("--catalogue", default="", metavar="CAT",
                        help="with --model: the catalogue it was trained on (default: the embedded one)")
    parser.add_argument("--history", type=int, default=10, help="with --model: history items per history-only request")
    parser.add_argument("--warm", action="store_true",
                        help="time each service / raw request right after an untimed one on the same system")
    parser.add_argument("--dump", default="", metavar="FILE",
                        help="write each round's service and raw model times as JSON lines, in order")
    args = parser.parse_args()
    asyncio.run(main(args.rounds, shlex.split(args.server_args), args.model, args.catalogue, args.history,
                     args.warm, args.dump))
