"""Catalogue files: the embedded one is usable, bad ones fail naming the line."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from slatewise.catalogue.loader import CatalogueError, embedded_catalogue_path, load_jsonl

CATEGORIES = {"tops", "bottoms", "shoes", "outerwear", "accessories"}


def test_embedded_catalogue_is_a_real_apparel_catalogue():
    items = load_jsonl(embedded_catalogue_path())
    assert len(items) >= 150
    counts = Counter(it.category for it in items)
    assert set(counts) == CATEGORIES
    assert min(counts.values()) >= 20
    for it in items:
        assert {"style", "colour", "price"} <= set(it.attributes), it.id
        float(it.attributes["price"])


def _write(tmp_path, lines):
    path = tmp_path / "cat.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = json.dumps({"id": "a", "title": "A shirt", "category": "tops", "attributes": {"colour": "red"}})


@pytest.mark.parametrize(
    ("bad_line", "needle"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"id": "b", "title": "No category"}), "category"),
        (json.dumps({"id": "", "title": "t", "category": "tops"}), "id"),
        (json.dumps({"id": "c", "title": "t", "category": "tops", "attributes": {"k": 1}}), "attributes"),
        (json.dumps({"id": "d", "title": "t", "category": "tops", "extra": 1}), "extra"),
        (GOOD, "duplicate id 'a' (first on line 1)"),
    ],
)
def test_bad_line_is_named(tmp_path, bad_line, needle):
    path = _write(tmp_path, [GOOD, bad_line])
    with pytest.raises(CatalogueError) as err:
        load_jsonl(path)
    assert f"{path}:2:" in str(err.value)
    assert needle in str(err.value)


def test_empty_and_missing_files_are_errors(tmp_path):
    with pytest.raises(CatalogueError, match="empty"):
        load_jsonl(_write(tmp_path, [""]))
    with pytest.raises(CatalogueError, match="cannot read"):
        load_jsonl(tmp_path / "nope.jsonl")
