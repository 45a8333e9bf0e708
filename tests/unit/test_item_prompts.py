"""Planning a request for a trained model (item tokens), without vLLM: prompt
layout, the query as a soft token, unknown candidates, the slate spec, and
loading a model directory written by the trainer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from slatewise.candidates import CandidateSet
from slatewise.catalogue.items import CatalogueItem
from slatewise.config import load_settings
from slatewise.domain import Candidate, FallbackReason, SlateRequest
from slatewise.model.composer import SlateComposer
from slatewise.model.item_prompts import ItemPromptPlanner, TrainedModel, trained_model_dir
from slatewise.model.plan import DppChoice, UnknownCandidates
from slatewise.training.manifest import Manifest, catalogue_fingerprint

BOS, EOS, SEP, PAD = 1, 2, 3, 0
HIDDEN, TEXT = 8, 6
ITEMS = [CatalogueItem(id=f"i{n}", title=f"title {n}", category=f"cat{n % 3}") for n in range(10)]


def _manifest(max_history: int = 3) -> Manifest:
    return Manifest(item_tokens={it.id: 4 + n for n, it in enumerate(ITEMS)},
                    special_tokens={"pad": PAD, "bos": BOS, "eos": EOS, "sep": SEP},
                    catalogue_fingerprint=catalogue_fingerprint(ITEMS), catalogue_items=len(ITEMS),
                    query_projection="slatewise/query_projection.safetensors", embedding_model="embedded",
                    prompt={"max_history": max_history})


def _model(max_history: int = 3, max_positions: int = 256) -> TrainedModel:
    rng = np.random.default_rng(0)
    return TrainedModel(path=Path("/models/slates-x"), manifest=_manifest(max_history),
                        embed_tokens=rng.normal(size=(4 + len(ITEMS), HIDDEN)).astype(np.float32),
                        query_weight=rng.normal(size=(HIDDEN, TEXT)).astype(np.float32),
                        query_bias=rng.normal(size=HIDDEN).astype(np.float32), max_positions=max_positions)


def _planner(model=None, **kw) -> ItemPromptPlanner:
    args = dict(max_model_len=8192, relevance_prior=2.0, dpp=DppChoice(0.2, 0.3)) | kw
    return ItemPromptPlanner(model or _model(), **args)


def _cset(request: SlateRequest, ids: list[str], query: bool = False, caps=(0, 0, 0)) -> CandidateSet:
    rng = np.random.default_rng(1)
    cands = tuple(Candidate(i, i, f"cat{int(i.split('-')[-1].lstrip('i')) % 3}" if i.startswith("i")
                            else "cat0", {}) for i in ids)
    emb = rng.normal(size=(len(ids), TEXT)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    names = ("cat0", "cat1", "cat2")
    q = np.ones(TEXT, np.float32) / np.sqrt(TEXT) if query else None
    return CandidateSet(request=request, snapshot=None, candidates=cands, embeddings=emb,
                        scores=np.linspace(1, 0, len(ids)).astype(np.float32),
                        category_index=np.array([names.index(c.category) for c in cands]),
                        category_names=names, caps=tuple(caps), retrieved=False, query_vector=q)


def _req(k=3, history=(), diversity=0.0, **kw) -> SlateRequest:
    return SlateRequest("r", "", k, None, history_ids=tuple(history), diversity=diversity, **kw)


def test_history_only_prompt_is_token_ids():
    plan = _planner().plan(_cset(_req(history=["i1", "nope", "i2"]), [f"i{n}" for n in range(10)]))
    assert plan.prompt_tokens == [BOS, 4 + 1, 4 + 2, SEP]
    assert plan.prompt_embeds is None


def test_history_keeps_the_newest_known_items_in_order():
    plan = _planner().plan(_cset(_req(history=["i1", "i2", "x", "i3", "i4"]), ["i5", "i6", "i7"]))
    assert plan.prompt_tokens == [BOS, 4 + 2, 4 + 3, 4 + 4, SEP]  # max_history 3
    short = _planner(_model(max_positions=7)).plan(_cset(_req(k=2, history=["i1", "i2", "i3"]), ["i5", "i6"]))
    assert short.prompt_tokens == [BOS, 4 + 1, 4 + 2, 4 + 3, SEP]  # 7 positions - BOS, SEP - K = 3
    assert len(short.prompt_tokens) + short.spec.k <= 7


def test_query_is_a_soft_token_at_position_1():
    model = _model()
    cset = _cset(_req(history=["i7"]), ["i1", "i2", "i3"], query=True)
    plan = _planner(model).plan(cset)
    assert plan.prompt_tokens == [BOS, PAD, 4 + 7, SEP]
    e = plan.prompt_embeds
    assert e.shape == (4, HIDDEN) and e.dtype == np.float32
    np.testing.assert_allclose(e[[0, 2, 3]], model.embed_tokens[[BOS, 4 + 7, SEP]])
    np.testing.assert_allclose(e[1], model.query_weight @ cset.query_vector + model.query_bias, rtol=1e-5)
    query_only = _planner(model).plan(_cset(_req(), ["i1", "i2", "i3"], query=True))
    assert query_only.prompt_tokens == [BOS, PAD, SEP] and query_only.prompt_embeds.shape == (3, HIDDEN)


def test_spec_names_the_item_tokens_of_the_allowed_candidates():
    cset = _cset(_req(k=2, diversity=0.5), ["i4", "i0", "i8"])
    plan = _planner().plan(cset)
    spec = plan.spec
    assert list(spec.handle_tokens) == [8, 4, 12] and spec.eos_token_id == EOS and spec.k == 2
    assert plan.token_to_candidate == {8: 0, 4: 1, 12: 2} and plan.allowed == [0, 1, 2]
    assert list(spec.categories) == [1, 0, 2]
    assert len(spec.prior) == 3 and spec.prior[0] > spec.prior[2]  # z-scored pointwise score
    # Diversity is a DPP in the engine: kernel (1 - a) cosine + a [same category], beta = scale (1 - d).
    assert spec.diversity_penalty == 0.0 and spec.dpp_beta == pytest.approx(0.2 * 0.5)
    e = cset.embeddings
    kernel = spec.similarity_array().reshape(3, 3)
    assert kernel[0, 1] == pytest.approx(0.7 * float(e[0] @ e[1]), abs=1e-4)  # cat1 vs cat0
    assert np.diag(kernel) == pytest.approx([1.0, 1.0, 1.0], abs=1e-4)
    assert np.linalg.eigvalsh(kernel).min() > -1e-3  # a DPP kernel: positive semi-definite
    no_diversity = _planner().plan(_cset(_req(k=2), ["i4", "i0", "i8"])).spec
    assert no_diversity.dpp_beta is None and not no_diversity.similarity  # the model's own greedy slate


def test_unknown_candidates_are_not_offered_and_k_shrinks_to_what_the_known_can_hold():
    cset = _cset(_req(k=4), ["new-1", "i1", "new-2", "i2", "i4"])
    plan = _planner().plan(cset)
    assert plan.allowed == [1, 3, 4] and plan.spec.k == 3
    assert set(plan.spec.handle_tokens) == {5, 6, 8}
    # Caps count too: i1 and i4 share cat1, capped at 1 -> two known items fit.
    capped = _planner().plan(_cset(_req(k=3, max_per_category=1), ["new-1", "i1", "i4", "i2", "new-2"],
                                   caps=(1, 1, 1)))
    assert capped.spec.k == 2
    with pytest.raises(UnknownCandidates) as err:
        _planner().plan(_cset(_req(k=2), ["new-1", "new-2"]))
    assert err.value.reason is FallbackReason.UNKNOWN_CANDIDATES


def test_catalogue_fingerprint_check():
    model = _model()
    assert model.catalogue_problem(ITEMS) == ""
    changed = ITEMS[:8] + [CatalogueItem(id="added", title="new", category="cat0")]
    problem = model.catalogue_problem(changed)
    assert "8 of its items have a token" in problem and "1 never reach the model" in problem
    assert "2 trained items are not in it" in problem


class _Engine:
    def __init__(self, trained):
        self.trained, self.tokenizer = trained, None


def test_composer_picks_the_item_planner_for_a_trained_model():
    settings = load_settings(["--trained-dpp-scale", "3"])
    composer = SlateComposer(_Engine(_model()), settings)
    composer.prepare()  # no tokenizer needed
    plan = composer.plan(_cset(_req(k=2, diversity=1.0), ["i1", "i2", "i3"]))
    assert list(plan.spec.handle_tokens) == [5, 6, 7] and plan.spec.dpp_beta == 0.0
    assert composer.startup_problems(ITEMS, "embedded", TEXT) == []
    assert len(composer.startup_problems(ITEMS[:2], "other", TEXT)) == 2
    text = SlateComposer(_Engine(None), settings)
    assert text.items is None and text.startup_problems(ITEMS[:2], "other", 3) == []


def test_a_query_the_projection_cannot_read_is_left_out():
    model = _model()
    assert "queries are ignored" in model.embedding_problem("embedded", TEXT + 1)
    cset = _cset(_req(history=["i1"]), ["i2", "i3"], query=True)
    cset = CandidateSet(**{**cset.__dict__, "query_vector": np.ones(TEXT + 1, np.float32)})
    plan = _planner(model).plan(cset)
    assert plan.prompt_tokens == [BOS, 4 + 1, SEP] and plan.prompt_embeds is None


def test_trained_model_directory_round_trip(tmp_path):
    from slatewise.training.model import ModelShape, build_model, save_model

    assert trained_model_dir("") is None and trained_model_dir("embedded:smollm2-135m-instruct") is None
    assert trained_model_dir(str(tmp_path)) is None
    vectors = np.random.default_rng(0).normal(size=(len(ITEMS), 16)).astype(np.float32)
    model = build_model(vectors, ModelShape(hidden=32, layers=1, heads=1, head_dim=32, intermediate=32), seed=0)
    save_model(model, tmp_path)
    _manifest().save(tmp_path)
    assert trained_model_dir(str(tmp_path)) == tmp_path
    loaded = TrainedModel.load(tmp_path)
    np.testing.assert_allclose(loaded.embed_tokens, model.llama.get_input_embeddings().weight.detach().numpy())
    q = vectors[0]
    expected = model.query_projection(torch.from_numpy(q)).detach().numpy()
    np.testing.assert_allclose(loaded.project_query(q), expected, rtol=1e-5, atol=1e-6)
    assert loaded.max_positions == 256 and loaded.model_id == tmp_path.name
