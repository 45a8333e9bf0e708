"""``manifest.json``: what a trained model directory is and what it was trained on.

The server reads it to map item ids to tokens and back, to check that the
catalogue it serves is the one the model learned (the fingerprint), and to
show operators where the model's figures came from. The manifest is written
last, after the weights, so :func:`detect` is true only for a finished run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from slatewise.catalogue.items import CatalogueItem

MANIFEST_FILE = "manifest.json"
FORMAT = "slatewise-trained-model"
FORMAT_VERSION = 1


class ManifestError(ValueError):
    """A manifest that is missing, unreadable or of an unknown format."""


def catalogue_fingerprint(items: Sequence[CatalogueItem]) -> str:
    """sha256 over the items sorted by id, each as id and the text that was
    embedded (title, category, attributes): order-independent, and changed
    by any edit that would change an item's initial token."""
    h = hashlib.sha256()
    for it in sorted(items, key=lambda it: it.id):
        h.update(it.id.encode("utf-8") + b"\x00" + it.text().encode("utf-8") + b"\x01")
    return "sha256:" + h.hexdigest()


def prompt_layout(history_tokens: Sequence[int], with_query: bool, special: dict[str, int]) -> list[int]:
    """The prompt a trained model is trained on and served with:
    [BOS] [query slot]? history [SEP]. The query slot holds PAD and is
    replaced by the projected query embedding. One definition, so training
    and serving cannot drift apart."""
    return [special["bos"], *([special["pad"]] if with_query else []), *history_tokens, special["sep"]]


@dataclass
class Manifest:
    item_tokens: dict[str, int]  # item id -> token id
    special_tokens: dict[str, int]  # pad, bos, eos, sep
    catalogue_fingerprint: str
    catalogue_items: int
    query_projection: str  # path of the query projection, relative to the model dir
    embedding_model: str
    prompt: dict  # how the server builds a prompt (layout, max_history, query slot)
    data: dict = field(default_factory=dict)  # read report + split summary
    settings: dict = field(default_factory=dict)  # the TrainConfig used
    validation: dict = field(default_factory=dict)  # eval history + final table
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def token_items(self) -> dict[int, str]:
        """token id -> item id (the other direction of ``item_tokens``)."""
        return {t: i for i, t in self.item_tokens.items()}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, ensure_ascii=False, allow_nan=False) + "\n"

    def save(self, model_dir: Path) -> Path:
        """Write atomically, so a reader never sees half a manifest."""
        path = model_dir / MANIFEST_FILE
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, model_dir: Path) -> Manifest:
        path = model_dir / MANIFEST_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ManifestError(f"{path}: cannot read manifest: {exc}") from exc
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ManifestError(f"{path}: not a {FORMAT} manifest")
        if raw.get("format_version") != FORMAT_VERSION:
            raise ManifestError(f"{path}: format version {raw.get('format_version')!r}, "
                                f"this build reads {FORMAT_VERSION}")
        known = cls.__dataclass_fields__
        try:
            return cls(**{k: v for k, v in raw.items() if k in known})
        except TypeError as exc:
            raise ManifestError(f"{path}: {exc}") from exc


def detect(path: Path | str) -> bool:
    """True iff ``path`` is a finished Slatewise-trained model directory (a
    readable manifest of a known version beside config.json); the server uses
    it to choose item-token prompts over the text-LLM listing."""
    path = Path(path)
    if not (path.is_dir() and (path / "config.json").is_file()):
        return False
    try:
        Manifest.load(path)
    except ManifestError:
        return False
    return True
