"""Versioned catalogue: immutable snapshots swapped atomically on every change.

A request holds the snapshot it started with, so an upsert in the middle of a
slate can never mix two versions; anything derived from a version (the
model's catalogue context, its prompt prefix) is cached on the snapshot.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slatewise.catalogue.items import CatalogueItem
from slatewise.domain import Candidate
from slatewise.embeddings import Embedder
from slatewise.retrieval import Retriever


@dataclass(frozen=True, eq=False)
class CatalogueSnapshot:
    version: int
    items: tuple[CatalogueItem, ...]
    embeddings: np.ndarray  # (n, d), unit rows, aligned with items
    index: dict[str, int] = field(init=False)
    categories: Counter = field(init=False)
    # Lazily built per-version artefacts (e.g. the model's context).
    derived: dict[str, Any] = field(default_factory=dict, init=False)

    retriever: Retriever = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {it.id: i for i, it in enumerate(self.items)})
        object.__setattr__(self, "categories", Counter(it.category for it in self.items))
        # Built here, in the thread that builds the snapshot, never per request.
        object.__setattr__(self, "retriever", Retriever(self.embeddings))

    def __len__(self) -> int:
        return len(self.items)

    def candidate(self, i: int) -> Candidate:
        """Item ``i`` as a candidate without an upstream score, made once per
        snapshot: most requests name catalogue ids, and building 50 frozen
        candidates was most of validating a request (docs/BENCHMARKS.md)."""
        cands = self.derived.setdefault("candidates", {})
        cand = cands.get(i)
        if cand is None:
            it = self.items[i]
            cand = cands[i] = Candidate(it.id, it.title, it.category, it.attributes, None, i)
        return cand


class UnknownItems(KeyError):
    def __init__(self, ids: Sequence[str]):
        super().__init__(", ".join(ids))
        self.ids = list(ids)


class CatalogueStore:
    def __init__(self, items: Sequence[CatalogueItem], embedder: Embedder) -> None:
        self.embedder = embedder
        self._lock = asyncio.Lock()
        self._snapshot = self._build(1, tuple(items))

    @property
    def snapshot(self) -> CatalogueSnapshot:
        return self._snapshot

    def _build(self, version: int, items: tuple[CatalogueItem, ...]) -> CatalogueSnapshot:
        vecs = self.embedder.encode_items([it.text() for it in items])
        return CatalogueSnapshot(version=version, items=items, embeddings=vecs)

    async def upsert(self, new_items: Iterable[CatalogueItem]) -> CatalogueSnapshot:
        async with self._lock:
            current = self._snapshot
            merged = {it.id: it for it in current.items}
            for it in new_items:
                merged[it.id] = it
            snap = await asyncio.to_thread(self._build, current.version + 1, tuple(merged.values()))
            self._snapshot = snap
            return snap

    async def delete(self, ids: Iterable[str]) -> CatalogueSnapshot:
        async with self._lock:
            current = self._snapshot
            ids = list(dict.fromkeys(ids))
            unknown = [i for i in ids if i not in current.index]
            if unknown:
                raise UnknownItems(unknown)
            gone = set(ids)
            keep = tuple(it for it in current.items if it.id not in gone)
            if not keep:
                raise ValueError("cannot delete every item: the catalogue must not be empty")
            snap = await asyncio.to_thread(self._build, current.version + 1, keep)
            self._snapshot = snap
            return snap
