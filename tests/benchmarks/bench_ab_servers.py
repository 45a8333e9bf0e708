"""Before / after, side by side: two servers from two checkouts, one run.

    git worktree add --detach /tmp/before <rev>
    python tests/benchmarks/bench_ab_servers.py --before /tmp/before --model DIR --catalogue CAT [--rounds 20]

A change to the service is judged against the code before it on the same
machine at the same time: run one after the other, the same code differed by
up to 0.07 in service / raw between runs on these shared machines. Both
servers serve the same trained model; each round sends --block requests to
one server, then --block of the same shapes to the other (which goes first
alternates by round), each block after vLLM's spin-wait pause, so a server
is never timed while the other's engine still spins. --after defaults to
this checkout. With --lead, each block starts with an untimed request, so
that (with --block 1) every timed request follows one of its shape at once,
as bench_model_path --warm times it. Reported per request shape: p50 of
each, after / before with a paired 95 % bootstrap interval; and the
strategies and generated-token counts each side returned, which show which
code each server ran.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
from pathlib import Path

from bench_model_path import SPIN_WINDOW, catalogue_ids, shared_pool, timed_unary, trained_request
from common import REPO, machine, median, ratio_ci, start_server, stop_server, table


async def main(args) -> None:
    from slatewise_client import AsyncSlateClient
    from slatewise_client.pb import slate_pb2 as pb

    print(f"# before: {args.before}, after: {args.after}; trained model {args.model}, "
          f"{args.rounds} rounds of {args.block} requests per server"
          f"{', each block after an untimed lead request' if args.lead else ''}")
    print(f"# machine: {machine(trained=True)}")
    ids, pool = catalogue_ids(args.catalogue), shared_pool(path=args.catalogue)
    sides = {"before": Path(args.before), "after": Path(args.after)}
    tmp = Path(tempfile.mkdtemp(prefix="slatewise-ab-"))
    servers, times = {}, {side: {} for side in sides}
    strategies = {side: set() for side in sides}
    try:
        for side, checkout in sides.items():
            servers[side] = start_server(tmp, "--model", args.model, "--catalogue-path", args.catalogue,
                                         env={"PYTHONPATH": str(checkout / "service")},
                                         wait_for="slatewise.v1.Model", timeout=600)
        async with contextlib.AsyncExitStack() as stack:
            clients = {side: await stack.enter_async_context(AsyncSlateClient(s.target))
                       for side, s in servers.items()}
            for side, client in clients.items():
                for i in range(8):  # warm-up: engine, encoder, first-call paths
                    await timed_unary(client, trained_request(i, pool, ids, args.history, prefix=f"w-{side}")[1])
            for r in range(args.rounds):
                order = list(sides) if r % 2 == 0 else list(sides)[::-1]
                for side in order:
                    await asyncio.sleep(SPIN_WINDOW)
                    for j in range(args.block):
                        shape, request = trained_request(1000 + r * args.block + j, pool, ids, args.history,
                                                         prefix=f"ab{r}-{side}")
                        if args.lead and j == 0:  # untimed, of the same shape (an even offset)
                            await timed_unary(clients[side], trained_request(
                                50_000 + r * args.block, pool, ids, args.history, prefix=f"lead{r}-{side}")[1])
                        total, slate = await timed_unary(clients[side], request)
                        times[side].setdefault(shape, []).append(total)
                        strategies[side].add((pb.Strategy.Name(slate.strategy), slate.generated_tokens))
                if (r + 1) % 5 == 0 or r + 1 == args.rounds:
                    print(f"# round {r + 1}/{args.rounds}", flush=True)
    finally:
        for server in servers.values():
            stop_server(server)
    rows = []
    for shape in sorted(times["after"]):
        before, after = median(times["before"][shape]), median(times["after"][shape])
        # The n-th request of a shape on each server is the same request, sent in the same round.
        rows.append([shape, len(times["after"][shape]), before * 1000, after * 1000, after / before,
                     ratio_ci(times["after"][shape], times["before"][shape])])
    print(table(["request shape", "requests per server", "before p50 ms", "after p50 ms", "after / before",
                 "95% bootstrap interval"], rows))
    print(f"(strategy, generated tokens) seen: before {sorted(strategies['before'])}, "
          f"after {sorted(strategies['after'])}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, metavar="CHECKOUT", help="a checkout of the code before")
    parser.add_argument("--after", default=str(REPO), metavar="CHECKOUT", help="default: this checkout")
    parser.add_argument("--model", required=True, metavar="DIR", help="a model directory written by `slatewise train`")
    parser.add_argument("--catalogue", required=True, metavar="CAT")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--block", type=int, default=8, help="requests per server per round")
    parser.add_argument("--history", type=int, default=10, help="history items per history-only request")
    parser.add_argument("--lead", action="store_true",
                        help="an untimed request before each block's first (with --block 1: each timed "
                             "request right after one of its shape, as bench_model_path --warm)")
    asyncio.run(main(parser.parse_args()))
