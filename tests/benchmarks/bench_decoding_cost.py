"""Constrained vs unconstrained decoding: cost per generated token.

    python tests/benchmarks/bench_decoding_cost.py [--rounds 30]

One raw engine (default settings), the same 50-item prompt; each round
generates 11 tokens with the slate logits processor (K=10 + EOS) and 11
tokens without it (ignore_eos, same length), alternating. Decode cost per
token = (total - time to first token) / 10.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench_model_path import RawEngine, requests, shared_pool
from common import machine, median, table


async def main(rounds: int) -> None:
    print(f"# machine: {machine()}")
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    from slatewise.config import load_settings

    raw = RawEngine(load_settings(["--full-catalogue-context-max-items", "0"]))
    await raw.start()

    async def run(plan, constrained, rid):
        params = SamplingParams(
            temperature=0.0, max_tokens=11, output_kind=RequestOutputKind.DELTA, detokenize=False,
            **({"extra_args": plan.spec.to_extra_args()} if constrained else {"ignore_eos": True}))
        t0 = time.perf_counter()
        first, n = None, 0
        async for out in raw.engine.llm.generate(TokensPrompt(prompt_token_ids=plan.prompt_tokens),
                                                 params, request_id=rid):
            if first is None:
                first = time.perf_counter() - t0
            n += len(out.outputs[0].token_ids)
        total = time.perf_counter() - t0
        return (total - first) / (n - 1), n

    cost = {True: [], False: []}
    try:
        for i, request in enumerate(requests(shared_pool(), rounds + 1)):
            plan, _ = raw.plan(request)
            for constrained in ([True, False] if i % 2 else [False, True]):
                per_token, n = await run(plan, constrained, f"{constrained}-{i}")
                assert n == 11
                if i:  # the first round warms both paths
                    cost[constrained].append(per_token * 1000)
    finally:
        raw.engine.llm.shutdown()
    c, u = median(cost[True]), median(cost[False])
    print(table(["decoding", "ms per generated token (p50)"],
                [["unconstrained", u], ["constrained (slate automaton + logit bias)", c],
                 ["constrained / unconstrained", c / u]]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    asyncio.run(main(parser.parse_args().rounds))
