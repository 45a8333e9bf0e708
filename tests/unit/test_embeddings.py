"""The query encoder on the request path: ONNX Runtime gives torch's vectors,
and concurrent queries batched together each get their own row."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from slatewise.embeddings import Embedder, _QueryBatcher

TEXTS = [f"{colour} {thing} for {occasion}" for colour in ("red", "navy", "grey")
         for thing in ("wool coat", "trail shoes", "linen shirt") for occasion in ("work", "a wedding")]


@pytest.fixture(scope="module")
def embedders(tmp_path_factory):
    cache = tmp_path_factory.mktemp("emb")
    return Embedder(cache_dir=cache, runtime="onnx"), Embedder(cache_dir=cache, runtime="torch")


def test_onnx_runtime_gives_torchs_vectors(embedders):
    onnx, torch_ = embedders
    assert onnx.runtime == "onnx" and torch_.runtime == "torch"
    np.testing.assert_allclose(onnx.encode(TEXTS), torch_.encode(TEXTS), atol=1e-4)
    assert np.allclose(np.linalg.norm(onnx.encode(TEXTS), axis=1), 1.0, atol=1e-5)
    # Padding in a batch changes nothing: the same text alone or among longer ones.
    np.testing.assert_allclose(onnx.encode(["red wool coat", TEXTS[-1] * 3])[0], onnx.encode(["red wool coat"])[0],
                               atol=1e-5)


def test_the_direct_tokenizer_gives_transformers_ids_and_is_safe_across_threads(embedders):
    onnx, _ = embedders
    enc = onnx._onnx
    texts = [*TEXTS, "x " * 600, "", "Ünïcödé — ß ✓ 漢字", "   spaced   out  "]

    def via_transformers(batch):
        t = enc.tokenizer(batch, return_tensors="np", padding=True, truncation=True, max_length=enc.max_length)
        return t["input_ids"], t["attention_mask"]

    for batch in [[t] for t in texts] + [texts]:
        ids, mask = enc._tokenize(batch)
        want_ids, want_mask = via_transformers(batch)
        assert ids.dtype == mask.dtype == np.int64
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(mask, want_mask)
    assert enc._tokenize(["x " * 600])[0].shape[1] == enc.max_length  # truncated
    # Padding is configured once, not per call: threads cannot see each other's.
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda t: enc._tokenize([t])[0], texts * 4))
    for text, ids in zip(texts * 4, got):
        np.testing.assert_array_equal(ids, via_transformers([text])[0])


def test_int8_queries_stay_close_to_the_float_vectors_and_items_stay_float(tmp_path_factory, embedders):
    onnx, _ = embedders
    int8 = Embedder(cache_dir=tmp_path_factory.mktemp("emb8"), runtime="onnx-int8")
    assert int8.runtime == "onnx-int8"
    queries = int8.encode_queries(TEXTS)
    cosines = (queries * onnx.encode(TEXTS)).sum(axis=1)
    assert cosines.min() >= 0.98 and cosines.max() < 1 - 1e-6  # close, and really the int8 model
    assert np.allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(int8.encode(TEXTS), onnx.encode(TEXTS), atol=1e-5)  # items: float
    # A query's vector does not depend on the queries batched with it.
    np.testing.assert_allclose(int8.encode_query(TEXTS[0]), queries[0], atol=1e-6)


def test_an_int8_model_that_drifts_too_far_is_not_used(tmp_path_factory, monkeypatch, caplog):
    from slatewise import embeddings

    real = embeddings._OnnxEncoder.quantize
    monkeypatch.setattr(embeddings._OnnxEncoder, "quantize",
                        lambda self, probe: real(self, probe, min_cosine=1.0 + 1e-6))
    emb = Embedder(cache_dir=tmp_path_factory.mktemp("emb8"), runtime="onnx-int8")
    assert emb.runtime == "onnx" and "not int8" in caplog.text
    np.testing.assert_allclose(emb.encode_queries(TEXTS[:2]), emb.encode(TEXTS[:2]), atol=1e-6)


def test_concurrent_queries_are_batched_and_each_gets_its_own_row(embedders):
    onnx, _ = embedders
    expected = {t: onnx.encode([t])[0] for t in TEXTS}
    sizes: list[int] = []
    gate = threading.Event()

    def encode(texts):
        gate.wait(5)  # hold the first batch so that the others queue up behind it
        sizes.append(len(texts))
        return onnx.encode(texts)

    batcher = _QueryBatcher(encode)
    with ThreadPoolExecutor(len(TEXTS)) as pool:
        futures = [pool.submit(batcher, t) for t in TEXTS]
        threading.Timer(0.3, gate.set).start()
        got = [f.result(timeout=10) for f in futures]
    for text, vec in zip(TEXTS, got):
        np.testing.assert_allclose(vec, expected[text], atol=1e-5)
    assert sum(sizes) == len(TEXTS) and len(sizes) < len(TEXTS) and max(sizes) > 1, sizes


def test_a_failed_batch_fails_every_waiter_and_the_next_call_works():
    calls = {"n": 0}

    def encode(texts):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("encoder broke")
        return np.ones((len(texts), 2), dtype=np.float32)

    batcher = _QueryBatcher(encode)
    with pytest.raises(RuntimeError, match="encoder broke"):
        batcher("x")
    assert batcher("y").tolist() == [1.0, 1.0]


def test_inline_items_are_remembered_in_memory_only(embedders):
    onnx, _ = embedders
    calls: list[int] = []
    real = onnx.encode
    onnx.encode = lambda texts: (calls.append(len(texts)), real(texts))[1]
    try:
        first = onnx.encode_inline(TEXTS[:6])
        again = onnx.encode_inline(TEXTS[3:9])  # three seen, three new
    finally:
        del onnx.encode
    assert calls == [6, 3]
    np.testing.assert_allclose(first[3:], again[:3])
    np.testing.assert_allclose(again, real(TEXTS[3:9]), atol=1e-5)
    assert not onnx._cache_file.exists()  # nothing written to disk for the caller's items
