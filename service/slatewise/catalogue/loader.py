"""Reading a catalogue from JSONL, failing loudly on the first bad line."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from pydantic import ValidationError

from slatewise.catalogue.items import CatalogueItem


class CatalogueError(ValueError):
    """A catalogue file that cannot be served; the message names the line."""


def embedded_catalogue_path() -> Path:
    return Path(str(resources.files("slatewise") / "data" / "catalogue.jsonl"))


def load_jsonl(path: Path) -> list[CatalogueItem]:
    items: list[CatalogueItem] = []
    seen: dict[str, int] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogueError(f"{path}: cannot read catalogue: {exc}") from exc
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            item = CatalogueItem.model_validate(json.loads(line))
        except json.JSONDecodeError as exc:
            raise CatalogueError(f"{where}: not valid JSON: {exc.msg}") from exc
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"]) or "item"
            raise CatalogueError(f"{where}: {loc}: {first['msg']}") from exc
        if item.id in seen:
            raise CatalogueError(f"{where}: duplicate id {item.id!r} (first on line {seen[item.id]})")
        seen[item.id] = lineno
        items.append(item)
    if not items:
        raise CatalogueError(f"{path}: catalogue is empty")
    return items
