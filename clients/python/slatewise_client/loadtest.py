"""`slatewise-client loadtest`: closed-loop or open-loop load, bounded in
requests and time, with live progress and a summary (or --json).

Closed loop: --concurrency workers each send the next request when the last
answered (throughput under a fixed number of users). Open loop: requests start
at --rate per second whatever the answers do (latency under an offered load;
the honest way to see queueing). Targets loopback unless --allow-remote.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import random
import socket
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc
from google.protobuf import json_format

from slatewise_client.client import AsyncSlateClient, tls_credentials
from slatewise_client.pb import slate_pb2 as pb
from slatewise_client.requests import build_request

DEFAULT_QUERIES = ["casual outfit", "business meeting", "rainy autumn commute", "beach holiday",
                   "gym session", "wedding guest", "winter hiking", "first date dinner",
                   "weekend city break", "job interview", "music festival", "ski trip"]


@dataclass
class Results:
    latencies: list[float] = field(default_factory=list)
    first_item: list[float] = field(default_factory=list)
    codes: Counter = field(default_factory=Counter)
    strategies: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    ild: list[float] = field(default_factory=list)
    coverage: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    finished: float = 0.0

    @property
    def done(self) -> int:
        return sum(self.codes.values())

    def summary(self) -> dict:
        def q(values, p):
            if not values:
                return None
            values = sorted(values)
            return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]

        elapsed = (self.finished or time.monotonic()) - self.started
        lat = self.latencies
        return {
            "requests": self.done,
            "elapsed_seconds": round(elapsed, 3),
            "throughput_rps": round(self.codes.get("OK", 0) / elapsed, 3) if elapsed > 0 else 0.0,
            "latency_seconds": {"p50": q(lat, 50), "p90": q(lat, 90), "p99": q(lat, 99),
                                "max": max(lat) if lat else None},
            "time_to_first_item_seconds": {"p50": q(self.first_item, 50), "p90": q(self.first_item, 90),
                                           "p99": q(self.first_item, 99)},
            "status_codes": dict(self.codes),
            "strategies": dict(self.strategies),
            "fallback_reasons": dict(self.reasons),
            "mean_intra_list_diversity": statistics.fmean(self.ild) if self.ild else None,
            "mean_category_coverage": statistics.fmean(self.coverage) if self.coverage else None,
        }


def is_loopback(target: str) -> bool:
    host = target.split("///")[-1].rsplit(":", 1)[0].strip("[]")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def load_mix(path: str | None, k: int, strategy: str, seed: int) -> list[pb.RecommendRequest]:
    """Requests from a JSONL file (RecommendRequest in protobuf JSON, one per
    line), or generated from canned intents."""
    if path:
        with open(path) as f:
            return [json_format.Parse(line, pb.RecommendRequest()) for line in f if line.strip()]
    rng = random.Random(seed)
    return [build_request(q, k, strategy=strategy, diversity=rng.choice([0.0, 0.5]))
            for q in DEFAULT_QUERIES]


async def _one(client: AsyncSlateClient, request, results: Results, stream: bool, deadline) -> None:
    t0 = time.perf_counter()
    try:
        if stream:
            slate, first = None, None
            async for event in client.recommend_stream(request=request, deadline=deadline):
                if event.WhichOneof("event") == "item" and first is None:
                    first = time.perf_counter() - t0
                elif event.WhichOneof("event") == "slate":
                    slate = event.slate
        else:
            slate = await client.recommend(request=request, deadline=deadline)
            first = slate.timings.time_to_first_item_seconds
    except grpc.RpcError as err:
        results.codes[err.code().name] += 1
        return
    results.latencies.append(time.perf_counter() - t0)
    if first is not None:
        results.first_item.append(first)
    results.codes["OK"] += 1
    results.strategies[pb.Strategy.Name(slate.strategy).removeprefix("STRATEGY_")] += 1
    if slate.fallback_reason:
        results.reasons[pb.FallbackReason.Name(slate.fallback_reason).removeprefix("FALLBACK_REASON_")] += 1
    results.ild.append(slate.diversity.intra_list_diversity)
    results.coverage.append(slate.diversity.category_coverage)


async def run_load(target: str, mix: list[pb.RecommendRequest], *, requests: int, duration: float,
                   concurrency: int = 0, rate: float = 0.0, stream: bool = False,
                   deadline: float | None = None, progress=None, credentials=None,
                   token: str | None = None) -> Results:
    results = Results()
    t_end = time.monotonic() + duration
    counter = iter(range(requests))

    def next_request():
        if time.monotonic() >= t_end:
            return None
        i = next(counter, None)
        return None if i is None else mix[i % len(mix)]

    async with AsyncSlateClient(target, credentials=credentials, token=token) as client:
        reporter = asyncio.create_task(_report(results, progress)) if progress else None
        if rate > 0:
            tasks = []
            start = time.monotonic()
            n = 0
            while (request := next_request()) is not None:
                delay = start + n / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(_one(client, request, results, stream, deadline)))
                n += 1
            await asyncio.gather(*tasks)
        else:
            async def worker():
                while (request := next_request()) is not None:
                    await _one(client, request, results, stream, deadline)
            await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
        results.finished = time.monotonic()
        if reporter:
            reporter.cancel()
            _progress(results, progress)
    return results


async def _report(results: Results, out) -> None:
    while True:
        await asyncio.sleep(1.0)
        _progress(results, out)


def _progress(results: Results, out) -> None:
    s = results.summary()
    p50 = s["latency_seconds"]["p50"]
    print(f"\r{s['requests']:>7} done  {s['throughput_rps']:>7.2f} rps  "
          f"p50 {p50 * 1000 if p50 else 0:>7.1f} ms  codes {s['status_codes']}", end="", file=out, flush=True)


def format_summary(s: dict) -> str:
    def ms(v):
        return "-" if v is None else f"{v * 1000:.1f} ms"

    lat, first = s["latency_seconds"], s["time_to_first_item_seconds"]
    lines = [
        f"requests        {s['requests']} in {s['elapsed_seconds']:.1f} s  ({s['throughput_rps']:.2f} OK/s)",
        f"latency         p50 {ms(lat['p50'])}  p90 {ms(lat['p90'])}  p99 {ms(lat['p99'])}  max {ms(lat['max'])}",
        f"first item      p50 {ms(first['p50'])}  p90 {ms(first['p90'])}  p99 {ms(first['p99'])}",
        f"status codes    {s['status_codes']}",
        f"strategies      {s['strategies']}  fallback reasons {s['fallback_reasons']}",
    ]
    if s["mean_intra_list_diversity"] is not None:
        lines.append(f"mean diversity  ILD {s['mean_intra_list_diversity']:.3f}  "
                     f"category coverage {s['mean_category_coverage']:.3f}")
    return "\n".join(lines)


def cmd_loadtest(args: argparse.Namespace) -> int:
    if not args.allow_remote and not is_loopback(args.target):
        print(f"error: {args.target} is not a loopback address (use --allow-remote)", file=sys.stderr)
        return 2
    mix = load_mix(args.mix, args.k, args.strategy, args.seed)
    results = asyncio.run(run_load(
        args.target, mix, requests=args.requests, duration=args.duration,
        concurrency=args.concurrency, rate=args.rate, stream=args.stream, deadline=args.deadline,
        progress=None if args.json or args.quiet else sys.stderr,
        credentials=tls_credentials(args.tls_ca, args.tls_cert, args.tls_key), token=args.token,
    ))
    summary = results.summary()
    if not (args.json or args.quiet):
        print(file=sys.stderr)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def add_parser(sub, add_target) -> None:
    p = sub.add_parser("loadtest", help="closed- or open-loop load with a latency/diversity summary")
    add_target(p)
    p.set_defaults(target="127.0.0.1:50051", func=cmd_loadtest)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--concurrency", type=int, default=4, help="closed loop: workers in flight")
    mode.add_argument("--rate", type=float, default=0.0, help="open loop: requests started per second")
    p.add_argument("--requests", type=int, default=100, help="stop after this many requests")
    p.add_argument("--duration", type=float, default=60.0, help="stop starting requests after this many seconds")
    p.add_argument("--mix", default=None, help="JSONL of RecommendRequest (protobuf JSON); default: canned intents")
    p.add_argument("-k", type=int, default=10, help="slate size for generated requests")
    p.add_argument("--strategy", choices=["auto", "model", "pointwise"], default="auto")
    p.add_argument("--stream", action="store_true", help="use RecommendStream (measures time to first item)")
    p.add_argument("--deadline", type=float, default=None, help="per-request deadline, seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.add_argument("--quiet", action="store_true", help="no live progress")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback target")
