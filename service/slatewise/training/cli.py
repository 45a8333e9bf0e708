"""`slatewise train`: learn a slate model from an interaction log, the
server's feedback log, or both.

    slatewise train --interactions events.jsonl --catalogue catalogue.jsonl --out models/slates
    slatewise train --events feedback/ --catalogue catalogue.jsonl --out models/slates

writes a model directory that `slatewise serve --model DIR` serves (config.json,
model.safetensors, slatewise/query_projection.safetensors, manifest.json),
prints the validation table (markdown, or JSON with --json) to stdout and
progress to stderr (a bar on a terminal, JSON lines otherwise). Bad rows of
the log are counted and listed with file:line, damaged feedback records with
their segment and offset; input that cannot be used at all exits with
status 2. From a feedback log, clicks, add-to-carts and purchases become
interactions, and every shown slate an example of which of its items were
taken and which were ignored (see slatewise.training.events). Under
torchrun/accelerate the same command trains on every rank (see
slatewise.training.trainer).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

HELP = {
    "seed": "seeds everything: the same seed gives the same model",
    "epochs": "most passes over the training examples (early stopping may end sooner)",
    "max_steps": "stop after this many optimiser steps (0 = no limit)",
    "holdout": "each validation user's last N events are held out",
    "patience": "evaluations without a better validation nDCG@10 before stopping",
    "eval_every": "optimiser steps between validations (0 = at the end of every epoch)",
    "slate_k": "training target: the next K distinct items",
    "max_history": "history items in a prompt",
    "min_rating": "keep rows whose rating (else weight) is at least this; rows with neither are kept",
    "event_types": "comma-separated event names (feedback event types) to keep as interactions "
                   "(file rows without an event are then dropped)",
    "negative_weight": "weight of the unlikelihood term that demotes shown-but-ignored items (--events; 0 = off)",
    "device": "auto (the GPU when present, else the CPU), cpu, cuda or cuda:N",
    "threads": "torch CPU threads (0 = torch's default, every core; 1 is fastest for small models on a CPU)",
    "max_events_per_user": "newest events kept per user: bounds memory on huge logs",
}


def _parser() -> argparse.ArgumentParser:
    from slatewise.training.trainer import TrainConfig

    p = argparse.ArgumentParser(prog="slatewise train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--interactions", type=Path, metavar="FILE", help="JSONL interaction log")
    p.add_argument("--events", dest="event_logs", action="append", default=[], type=Path, metavar="DIR",
                   help="a feedback event log directory (repeatable; with --interactions, one pool of users)")
    p.add_argument("--catalogue", required=True, type=Path, metavar="FILE",
                   help="the server's catalogue JSONL (the model's vocabulary)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="model directory to write")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of the table")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if f.name == "event_types":
            p.add_argument(flag, default="", metavar="A,B", help=HELP[f.name])
        else:
            kind = float if default is None else type(default)
            p.add_argument(flag, type=kind, default=default,
                           help=f"{HELP.get(f.name, '')} (default: {default})".strip())
    return p


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.interactions is None and not args.event_logs:
        parser.error("give --interactions FILE, --events DIR, or both")
    from slatewise.training.trainer import TrainConfig

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    values["event_types"] = tuple(e.strip() for e in args.event_types.split(",") if e.strip())
    cfg = TrainConfig(**values)
    problem = _check(cfg)
    if problem:
        print(f"slatewise train: {problem}", file=sys.stderr)
        return EXIT_USAGE

    from transformers.utils import logging as hf_logging

    from slatewise.catalogue.loader import CatalogueError
    from slatewise.config import Settings
    from slatewise.training.interactions import InteractionsError
    from slatewise.training.trainer import markdown_table, train

    hf_logging.disable_progress_bar()  # weight-loading bars would interleave with ours
    settings = Settings()
    try:
        result = train(cfg, args.interactions, args.catalogue, args.out, _embedder(settings),
                       embedding_model=settings.embedding_model, event_logs=args.event_logs)
    except (CatalogueError, InteractionsError) as exc:
        print(f"slatewise train: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if result.manifest is None:  # a non-zero rank of a distributed run
        return EXIT_OK
    if args.json:
        print(json.dumps({"out": str(args.out), "table": result.table,
                          "validation": result.manifest.validation, "data": result.manifest.data}, indent=1))
    else:
        print(f"Validation ({result.manifest.data['split']['valid_users']} users, "
              f"last {cfg.holdout} events held out), model written to {args.out}:\n")
        print(markdown_table(result.table, cfg.eval_k))
    return EXIT_OK


def _embedder(settings):
    """Item/query text embeddings, loaded on first use: unusable input is
    reported before the embedding model is loaded (seconds on a CPU)."""
    loaded = []

    def embed(texts: list[str]):
        if not loaded:
            from slatewise.embeddings import Embedder

            loaded.append(Embedder(settings.embedding_model, settings.embedding_cache_dir))
        return loaded[0].encode_items(texts)

    return embed


def _check(cfg) -> str:
    for name in ("epochs", "batch_size", "max_history", "slate_k", "holdout", "patience", "stride",
                 "max_valid_users", "max_events_per_user", "eval_k", "max_candidates"):
        if getattr(cfg, name) < 1:
            return f"--{name.replace('_', '-')} must be at least 1"
    if not 0 <= cfg.p_query + cfg.p_query_only <= 1:
        return "--p-query + --p-query-only must be between 0 and 1"
    if not 0 <= cfg.diversity <= 1:
        return "--diversity must be between 0 and 1"
    if cfg.lr <= 0:
        return "--lr must be positive"
    if cfg.negative_weight < 0:
        return "--negative-weight must not be negative"
    return ""


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
