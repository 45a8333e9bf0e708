"""Plan a request for a model trained by ``slatewise train``: item tokens, not a listing.

A trained model's vocabulary is the catalogue it learned (manifest.json maps
item ids to tokens), so the prompt is what it was trained on, not text:

    [BOS] [query]? h_1 .. h_m [SEP]

``h`` are the request's ``history_item_ids`` the model knows (oldest first,
the newest ``max_history`` of the manifest), ``[query]`` is the request's
text (query and context attributes) embedded by the server's Embedder and
mapped by the model's query projection to one soft token. With a query, the
prompt goes to vLLM as ``prompt_embeds``: the model's own ``embed_tokens``
rows for BOS, history and SEP, and the projected query at position 1. Without
one, as token ids.

The handles are the item tokens of the allowed candidates, so the slate
automaton (K distinct, category caps, exclusions) and the relevance prior
work unchanged. Diversity is a greedy DPP run by the automaton inside the
engine rather than the LLM path's similarity penalty: the model's first-step
logits are its quality and the kernel mixes text cosine with "same
category" (docs/QUALITY.md measured why: the penalty and each step's
conditional distribution both lost relevance or diversity). Candidates the model has no token for
(items added to the catalogue after training, inline items with unknown ids)
are not offered to it: the model writes as many of the K items as the known
candidates allow and the pointwise scorer fills the rest (PARTIAL,
UNKNOWN_CANDIDATES); with no known candidate at all the slate is pointwise
(FALLBACK, UNKNOWN_CANDIDATES).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slatewise.candidates import CandidateSet
from slatewise.catalogue.items import CatalogueItem
from slatewise.decoding.automaton import capacity
from slatewise.model.plan import DppChoice, ModelPlan, UnknownCandidates, slate_spec
from slatewise.model.prepare import EMBEDDED_MODEL
from slatewise.training.manifest import Manifest, catalogue_fingerprint, detect, prompt_layout

EMBED_KEY = "model.embed_tokens.weight"


def trained_model_dir(model: str) -> Path | None:
    """The directory of a Slatewise-trained model, or None for any other model."""
    if not model or model == EMBEDDED_MODEL:
        return None
    path = Path(model).expanduser()
    return path if detect(path) else None


def _tensor(directory: Path, pattern: str, key: str) -> np.ndarray:
    from safetensors import safe_open

    for file in sorted(directory.glob(pattern)):
        with safe_open(str(file), "np") as f:
            if key in f.keys():
                return f.get_tensor(key).astype(np.float32)
    raise KeyError(f"{directory / pattern}: no tensor {key!r}")


@dataclass(frozen=True, eq=False)
class TrainedModel:
    """What the server needs of a trained model directory besides vLLM's weights."""

    path: Path
    manifest: Manifest
    embed_tokens: np.ndarray  # (vocab, hidden): the prompt_embeds rows of item/special tokens
    query_weight: np.ndarray  # (hidden, text dim)
    query_bias: np.ndarray  # (hidden,)
    max_positions: int  # the model's context window (config.json)

    @classmethod
    def load(cls, path: Path) -> TrainedModel:
        manifest = Manifest.load(path)
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        projection = path / manifest.query_projection
        return cls(
            path=path, manifest=manifest,
            embed_tokens=_tensor(path, "*.safetensors", EMBED_KEY),
            query_weight=_tensor(projection.parent, projection.name, "weight"),
            query_bias=_tensor(projection.parent, projection.name, "bias"),
            max_positions=int(config.get("max_position_embeddings", 256)),
        )

    @functools.cached_property
    def model_id(self) -> str:  # cached: resolve() walks the filesystem, and every slate asks
        return self.path.resolve().name

    @property
    def special(self) -> dict[str, int]:
        return self.manifest.special_tokens

    @property
    def max_history(self) -> int:
        return int(self.manifest.prompt.get("max_history", 20))

    def project_query(self, vector: np.ndarray) -> np.ndarray:
        return (self.query_weight @ np.asarray(vector, dtype=np.float32) + self.query_bias).astype(np.float32)

    def embedding_problem(self, embedding_model: str, dim: int) -> str:
        """'' when the server's text embeddings are what the query projection reads."""
        if dim != self.query_weight.shape[1]:
            return (f"the query projection reads {self.query_weight.shape[1]}-d text embeddings, "
                    f"the embedding model {embedding_model!r} writes {dim}-d: queries are ignored")
        if embedding_model != self.manifest.embedding_model:
            return (f"trained with embedding model {self.manifest.embedding_model!r}, "
                    f"served with {embedding_model!r}: queries may be misread")
        return ""

    def catalogue_problem(self, items: Sequence[CatalogueItem]) -> str:
        """'' when ``items`` is the catalogue the model was trained on, else what differs."""
        if catalogue_fingerprint(items) == self.manifest.catalogue_fingerprint:
            return ""
        known = sum(it.id in self.manifest.item_tokens for it in items)
        return (f"the catalogue ({len(items)} items) is not the one the model was trained on "
                f"({self.manifest.catalogue_items} items): {known} of its items have a token, "
                f"{len(items) - known} never reach the model (served pointwise), "
                f"{len(self.manifest.item_tokens) - known} trained items are not in it; "
                f"items are mapped by id")


class ItemPromptPlanner:
    """Builds the :class:`ModelPlan` of a request for a trained model."""

    def __init__(self, model: TrainedModel, *, max_model_len: int, relevance_prior: float,
                 dpp: DppChoice) -> None:
        self.model = model
        self.tokens = model.manifest.item_tokens
        self.max_len = min(max_model_len, model.max_positions)
        self.relevance_prior = relevance_prior
        self.dpp = dpp

    def prompt(self, history_ids: Sequence[str], with_query: bool, room: int) -> list[int]:
        """[BOS] [query slot]? history [SEP] with the newest known history
        items that fit ``room`` tokens left for the slate (the slot holds PAD)."""
        history = [self.tokens[h] for h in history_ids if h in self.tokens]
        fixed = 2 + int(with_query)
        keep = max(0, min(self.model.max_history, self.max_len - fixed - room))
        return prompt_layout(history[-keep:] if keep else [], with_query, self.model.special)

    def plan(self, cset: CandidateSet) -> ModelPlan:
        request = cset.request
        allowed, handles, seen = [], [], set()
        for i, cand in enumerate(cset.candidates):
            token = self.tokens.get(cand.id)
            if token is not None and token not in seen:
                allowed.append(i)
                handles.append(token)
                seen.add(token)
        if not allowed:
            raise UnknownCandidates(f"none of the {len(cset)} candidates is in the model's vocabulary")
        # As many items as the known candidates can hold under the caps; the
        # pointwise fill writes the rest of the slate.
        k = min(request.k, capacity(request.k, cset.category_index[allowed].tolist(), list(cset.caps)))
        # A query embedding the projection cannot read (another embedding
        # model; warned at start) is left out: the prompt is then history-only.
        with_query = cset.query_vector is not None and len(cset.query_vector) == self.model.query_weight.shape[1]
        tokens = self.prompt(request.history_ids, with_query, room=k)
        embeds = None
        if with_query:
            embeds = self.model.embed_tokens[tokens].copy()
            embeds[1] = self.model.project_query(cset.query_vector)
        spec = slate_spec(cset, allowed, handles, k=k, eos_token_id=self.model.special["eos"],
                          default_prior=self.relevance_prior, dpp=self.dpp)
        return ModelPlan(tokens, spec, dict(zip(handles, allowed)), allowed, prompt_embeds=embeds)
