"""`slatewise`: serve, prepare (model + catalogue embeddings), eval (slate quality), train (a slate model from logs)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from slatewise import logs


def _serve(argv: list[str]) -> int:
    from pydantic import ValidationError

    from slatewise.catalogue.loader import CatalogueError
    from slatewise.config import load_settings
    from slatewise.server import serve

    try:
        settings = load_settings(argv)
    except ValidationError as exc:
        print(f"slatewise serve: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings.event_loop)) as runner:
            runner.run(serve(settings))
    except CatalogueError as exc:
        print(f"slatewise serve: {exc}", file=sys.stderr)
        return 2
    return 0


def _loop_factory(choice: str):
    """uvloop when chosen and installed, else asyncio's default loop."""
    if choice == "uvloop":
        try:
            import uvloop
        except ImportError:
            logging.getLogger(__name__).warning("uvloop is not installed: serving on asyncio's event loop")
        else:
            return uvloop.new_event_loop
    return None


def _prepare(argv: list[str]) -> int:
    from slatewise.catalogue.loader import embedded_catalogue_path, load_jsonl
    from slatewise.config import load_settings
    from slatewise.embeddings import Embedder
    from slatewise.model.prepare import EMBEDDED_MODEL, prepare_embedded_model

    settings = load_settings(argv)
    if settings.model == EMBEDDED_MODEL:
        print(f"model: {prepare_embedded_model(settings.model_cache_dir)}")
    path = settings.catalogue_path or embedded_catalogue_path()
    items = load_jsonl(path)
    embedder = Embedder(settings.embedding_model, settings.embedding_cache_dir)
    embedder.encode_items([it.text() for it in items])
    print(f"catalogue: {len(items)} items embedded from {path}")
    return 0


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="slatewise", description=__doc__)
    parser.add_argument("command", choices=["serve", "prepare", "eval", "train"])
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        sys.exit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    if command not in ("serve", "prepare", "eval", "train"):
        parser.error(f"unknown command {command!r}")
    if command == "eval":
        from slatewise.evaluation.cli import main as eval_main

        sys.exit(eval_main(rest))
    if command == "train":
        from slatewise.training.cli import main as train_main

        sys.exit(train_main(rest))
    logs.configure()
    sys.exit(_serve(rest) if command == "serve" else _prepare(rest))
