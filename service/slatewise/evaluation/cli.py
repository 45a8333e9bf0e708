"""`slatewise eval`: score strategies of a running service on request cases.

    slatewise eval --cases tests/eval_data/outfit_cases.jsonl --target localhost:50051

prints a markdown table (or JSON with --json) to stdout, progress to stderr,
and writes a PNG of relevance against diversity (--plot, default
eval-<cases file stem>.png in the current directory).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="slatewise eval", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--cases", required=True, type=Path, metavar="FILE",
                   help="JSONL file of cases (see slatewise.evaluation.cases)")
    p.add_argument("--target", required=True, metavar="HOST:PORT", help="the running service")
    p.add_argument("--plot", type=Path, metavar="PNG",
                   help="where to write the plot (default: eval-<cases stem>.png)")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N cases")
    p.add_argument("--json", action="store_true",
                   help="print the summary and per-case results as JSON instead of the table")
    p.add_argument("--diversity", type=float, default=0.5,
                   help="diversity of the diversified strategies (default 0.5)")
    p.add_argument("--relevance-prior", type=float, default=2.0,
                   help="relevance_prior of the 'model + prior' strategy (default 2)")
    p.add_argument("--deadline", type=float, default=120.0, metavar="SECONDS",
                   help="deadline of each request (default 120)")
    p.add_argument("--strategies", nargs="+", action="extend", metavar="NAME",
                   help="evaluate only these rows: names as in the table (quote them) or their "
                        "short keys pointwise, pointwise+dpp, model, model+prior, mmr, dpp "
                        "(default: all)")
    p.add_argument("--token", help="bearer token, if the server requires one")
    p.add_argument("--ca", metavar="PEM", help="CA certificate: connect with TLS")
    return p


@functools.lru_cache(maxsize=1)
def _embedder():
    from slatewise.embeddings import Embedder

    return Embedder()


def _progress(n: int, total: int, case, results) -> None:
    parts = []
    for r in results:
        if r.error:
            parts.append(f"{r.strategy}: ERROR")
        elif r.latency_s is not None:
            parts.append(f"{r.strategy}: {r.served} {r.latency_s * 1000:.0f} ms")
    print(f"[{n}/{total}] {case.id}  " + "; ".join(parts), file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.limit is not None and args.limit < 1:
        print("slatewise eval: --limit must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    if not 0.0 <= args.diversity <= 1.0:
        print("slatewise eval: --diversity must be between 0 and 1", file=sys.stderr)
        return EXIT_USAGE

    from slatewise.evaluation.runner import default_strategies, pick_strategies

    strategies = default_strategies(args.diversity, args.relevance_prior)
    if args.strategies:
        try:
            strategies = pick_strategies(strategies, args.strategies)
        except ValueError as exc:
            print(f"slatewise eval: --strategies: {exc}", file=sys.stderr)
            return EXIT_USAGE

    import grpc
    from slatewise_client import SlateClient
    from slatewise_client.client import tls_credentials

    from slatewise.evaluation.cases import CaseFileError, load_cases
    from slatewise.evaluation.runner import markdown_table, run_eval, write_plot

    try:
        cases = load_cases(args.cases, limit=args.limit)
    except CaseFileError as exc:
        print(f"slatewise eval: {exc}", file=sys.stderr)
        return EXIT_USAGE

    with SlateClient(args.target, credentials=tls_credentials(args.ca), token=args.token) as client:
        try:
            client.health("", deadline=10.0)
        except grpc.RpcError as exc:
            print(f"slatewise eval: cannot reach {args.target}: {exc.code().name}: {exc.details()}",
                  file=sys.stderr)
            return EXIT_FAILED
        try:
            model = client.health("slatewise.v1.Model", deadline=10.0)
        except grpc.RpcError as exc:
            model = exc.code().name
        print(f"slatewise eval: {len(cases)} cases from {args.cases} against {args.target} "
              f"(model path: {model})", file=sys.stderr)
        if model != "SERVING" and any(s.strategy == "model" for s in strategies
                                      if s.kind == "service"):
            print("slatewise eval: the model path is not serving: model strategies will be "
                  "answered by the pointwise scorer (see the 'served' column)", file=sys.stderr)
        report = run_eval(
            cases, client, _embedder(),
            strategies=strategies,
            deadline=args.deadline, cases_name=args.cases.name, progress=_progress,
        )

    plot_path = args.plot or Path(f"eval-{args.cases.stem}.png")
    write_plot(report, plot_path)
    if args.json:
        out = report.as_dict()
        out.update(target=args.target, model_health=model, plot=str(plot_path))
        print(json.dumps(out, indent=2))
    else:
        print(markdown_table(report))
        print(f"\nPlot: {plot_path}")
    # Failure = no service row scored a slate (or, with only local rows
    # selected, no local one).
    kind = "service" if any(s.kind == "service" for s in report.summaries) else "local"
    scored = sum(s.cases for s in report.summaries if s.kind == kind)
    return EXIT_OK if scored else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
