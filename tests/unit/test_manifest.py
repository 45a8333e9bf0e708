"""manifest.json of a trained model: round trip, fingerprint, detection."""

from __future__ import annotations

import json

import pytest

from slatewise.catalogue.items import CatalogueItem
from slatewise.training.manifest import (
    MANIFEST_FILE,
    Manifest,
    ManifestError,
    catalogue_fingerprint,
    detect,
)

ITEMS = [
    CatalogueItem(id="b", title="Blue jeans", category="bottoms", attributes={"colour": "blue"}),
    CatalogueItem(id="a", title="White tee", category="tops"),
]


def _manifest() -> Manifest:
    return Manifest(
        item_tokens={"a": 4, "b": 5},
        special_tokens={"pad": 0, "bos": 1, "eos": 2, "sep": 3},
        catalogue_fingerprint=catalogue_fingerprint(ITEMS),
        catalogue_items=2,
        query_projection="slatewise/query_projection.safetensors",
        embedding_model="embedded",
        prompt={"layout": "[BOS] [query]? history... [SEP]", "max_history": 20},
        data={"read": {"rows_read": 10, "bad": {"unknown_item": 1}}, "split": {"holdout": 5}},
        settings={"seed": 3, "events": ["purchase"], "min_rating": None},
        validation={"table": [{"strategy": "model", "ndcg": 0.5}], "history": [{"epoch": 0, "ndcg": 0.1}]},
    )


def test_round_trip(tmp_path):
    m = _manifest()
    m.save(tmp_path)
    back = Manifest.load(tmp_path)
    assert back == m
    assert back.token_items() == {4: "a", 5: "b"}
    assert not list(tmp_path.glob("*.tmp"))  # written atomically


def test_fingerprint_ignores_order_and_sees_text_changes():
    assert catalogue_fingerprint(ITEMS) == catalogue_fingerprint(list(reversed(ITEMS)))
    changed = [ITEMS[0].model_copy(update={"title": "Black jeans"}), ITEMS[1]]
    assert catalogue_fingerprint(changed) != catalogue_fingerprint(ITEMS)
    assert catalogue_fingerprint(ITEMS).startswith("sha256:")


def test_detect(tmp_path):
    assert not detect(tmp_path)  # empty
    _manifest().save(tmp_path)
    assert not detect(tmp_path)  # no config.json: not a model
    (tmp_path / "config.json").write_text("{}")
    assert detect(tmp_path) and detect(str(tmp_path))
    assert not detect(tmp_path / "config.json")  # a file, not a directory
    raw = json.loads((tmp_path / MANIFEST_FILE).read_text())
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({**raw, "format_version": 99}))
    assert not detect(tmp_path)
    with pytest.raises(ManifestError, match="format version 99"):
        Manifest.load(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text("{not json")
    assert not detect(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({"format": "something-else"}))
    assert not detect(tmp_path)
