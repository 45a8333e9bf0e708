"""What a planner hands the engine for one request, whatever the model.

Two planners exist: the text listing for a general LLM (:mod:`.composer`
with :mod:`.prompt` and :mod:`.handles`) and item tokens for a model
trained by ``slatewise train`` (:mod:`.item_prompts`). Both produce a
:class:`ModelPlan` whose :class:`SlateSpec` is built here, so the relevance
prior and the diversity pressure mean the same on both paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from slatewise.candidates import CandidateSet
from slatewise.decoding.automaton import SlateSpec
from slatewise.domain import FallbackReason

PRIOR_CLIP = 3.0


class CannotPlan(RuntimeError):
    """The model cannot take this request; the pointwise path serves it with ``reason``."""

    reason = FallbackReason.ENGINE_ERROR


class ContextTooLong(CannotPlan):
    """The candidate context cannot be shown to the model within its window."""

    reason = FallbackReason.CONTEXT_TOO_LONG


class UnknownCandidates(CannotPlan):
    """None of the allowed candidates has a token in the trained model's vocabulary."""

    reason = FallbackReason.UNKNOWN_CANDIDATES


@dataclass(frozen=True, eq=False)
class ModelPlan:
    """Everything needed to run one request through the engine.

    ``prompt_embeds`` (one row per prompt position, the model's hidden size)
    replaces ``prompt_tokens`` as the engine's input when set: a trained
    model's query is a soft token that no token id names."""

    prompt_tokens: list[int]
    spec: SlateSpec
    token_to_candidate: dict[int, int]
    allowed: list[int]  # candidate-set indices the model may choose
    context: object | None = None  # the text path's ModelContext (listing, handles)
    prompt_embeds: np.ndarray | None = None


@dataclass(frozen=True)
class DppChoice:
    """Choose by greedy DPP inside the engine (trained models): quality =
    the model's first-step logits (+ the prior), kernel = (1 - a) cosine +
    a [same category], beta = ``scale`` * (1 - diversity)."""

    scale: float
    category_weight: float


def slate_spec(cset: CandidateSet, allowed: Sequence[int], handle_tokens: Sequence[int], *, k: int,
               eos_token_id: int, default_prior: float, diversity_penalty: float = 0.0,
               dpp: DppChoice | None = None) -> SlateSpec:
    """The automaton's spec for ``allowed`` candidates named by ``handle_tokens``:
    category caps, the pointwise score as a z-scored logit prior (the
    request's ``relevance_prior``, else ``default_prior``) and, with
    ``request.diversity`` > 0, either a penalty of ``request.diversity *
    diversity_penalty`` per unit of max cosine to the items already chosen
    or, with ``dpp``, the greedy DPP."""
    request = cset.request
    allowed = list(allowed)
    weight = request.relevance_prior if request.relevance_prior is not None else default_prior
    prior: list[float] = []
    if weight > 0:
        s = cset.scores[allowed].astype(np.float64)
        z = (s - s.mean()) / (s.std() + 1e-6) if len(s) > 1 else np.zeros_like(s)
        prior = np.round(weight * np.clip(z, -PRIOR_CLIP, PRIOR_CLIP), 4).tolist()
    categories = cset.category_index[allowed]
    e = cset.embeddings[allowed]
    similarity = b""
    penalty, beta = 0.0, None
    if dpp is not None and request.diversity > 0:
        a = dpp.category_weight
        kernel = (1 - a) * (e @ e.T) + a * (categories[:, None] == categories[None, :])
        similarity = kernel.astype(np.float32).tobytes()
        beta = dpp.scale * (1 - request.diversity)
    elif dpp is None and request.diversity * diversity_penalty > 0:
        penalty = request.diversity * diversity_penalty
        similarity = np.clip(e @ e.T, 0.0, 1.0).astype(np.float32).tobytes()
    return SlateSpec(
        k=k,
        eos_token_id=eos_token_id,
        handle_tokens=list(handle_tokens),
        categories=categories.tolist(),
        category_caps=list(cset.caps),
        prior=prior,
        similarity=similarity,
        diversity_penalty=penalty,
        dpp_beta=beta,
    )
