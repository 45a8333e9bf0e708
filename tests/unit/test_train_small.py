"""`slatewise train` on the generated log: a model directory vLLM can load,
the same model from the same seed, a loss that goes down, exit 2 on
unusable input. Text embeddings are faked (hash-seeded vectors) so the test
needs no embedding model; the pipeline is otherwise the real one."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from slatewise.catalogue.loader import embedded_catalogue_path, load_jsonl
from slatewise.training import cli as train_cli
from slatewise.training.manifest import Manifest, detect
from slatewise.training.synthetic import generate
from slatewise.training.trainer import TrainConfig, train

CATALOGUE = embedded_catalogue_path()


def fake_embed(texts: list[str]) -> np.ndarray:
    out = []
    for t in texts:
        seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "big")
        v = np.random.default_rng(seed).normal(size=32)
        out.append(v / np.linalg.norm(v))
    return np.array(out, dtype=np.float32).reshape(len(texts), 32)


@pytest.fixture(scope="module")
def log_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("log") / "interactions.jsonl"
    events = generate(load_jsonl(CATALOGUE), users=120, seed=1)
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


CFG = dict(epochs=3, max_steps=24, batch_size=64, threads=1, patience=5, max_valid_users=40,
           warmup_steps=5, max_history=10)


@pytest.fixture(scope="module")
def runs(log_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return [train(TrainConfig(seed=7, **CFG), log_path, CATALOGUE, root / name, fake_embed, progress=False)
            for name in ("a", "b")]


def test_model_directory(runs):
    result = runs[0]
    for name in ("config.json", "model.safetensors", "manifest.json",
                 "slatewise/query_projection.safetensors"):
        assert (result.out / name).is_file(), name
    assert detect(result.out)
    manifest = Manifest.load(result.out)
    items = load_jsonl(CATALOGUE)
    assert manifest.item_tokens == {it.id: 4 + i for i, it in enumerate(items)}
    config = json.loads((result.out / "config.json").read_text())
    assert config["vocab_size"] == 4 + len(items) and config["head_dim"] in (32, 64)
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (1, 2, 0)
    strategies = [row["strategy"] for row in manifest.validation["table"]]
    assert strategies[0] == "model (greedy slate)" and "popularity" in strategies
    assert manifest.data["read"]["rows_used"] > 0 and manifest.settings["seed"] == 7


def test_same_seed_same_model(runs):
    from safetensors.torch import load_file

    a, b = runs
    assert a.losses == b.losses
    wa, wb = load_file(str(a.out / "model.safetensors")), load_file(str(b.out / "model.safetensors"))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.table == b.table


def test_loss_goes_down(runs):
    losses = runs[0].losses
    assert len(losses) == CFG["max_steps"]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5


def test_cli_exits_2_on_unusable_input(tmp_path, log_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"user_id": "u", "item_id": "nope", "timestamp": 1}\n{oops\n')
    args = ["--catalogue", str(CATALOGUE), "--out", str(tmp_path / "m")]
    assert train_cli.main(["--interactions", str(bad), *args]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:1: unknown_item" in err and f"{bad}:2: malformed_json" in err
    assert train_cli.main(["--interactions", str(tmp_path / "missing.jsonl"), *args]) == 2
    broken = tmp_path / "catalogue.jsonl"
    broken.write_text('{"id": "x"}\n')
    assert train_cli.main(["--interactions", str(log_path), "--catalogue", str(broken),
                           "--out", str(tmp_path / "m")]) == 2
    assert f"{broken}:1" in capsys.readouterr().err
    assert train_cli.main(["--interactions", str(log_path), *args, "--holdout", "0"]) == 2
    assert not (tmp_path / "m" / "manifest.json").exists()
