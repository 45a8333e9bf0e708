"""Compose a slate with the model: plan (prompt and slate spec), then the token stream.

Which planner plans a request depends on the model directory. A general LLM
sees a shared catalogue context (the whole catalogue when it is small, else
the request's candidates) as a text listing and may only emit handles of
the request's allowed candidates (planned here, with :mod:`.prompt`); a
model trained by ``slatewise train`` is prompted with item tokens
(:mod:`.item_prompts`). Either way the automaton's constraints, relevance
(pointwise scores as a z-scored logit prior) and diversity pressure (for
the LLM a penalty by max similarity to items already chosen, for a trained
model a greedy DPP, both scaled by the request's diversity) are applied
inside the engine at every step (:mod:`.plan`).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence

import numpy as np

from slatewise.candidates import CandidateSet
from slatewise.catalogue.items import CatalogueItem
from slatewise.config import Settings
from slatewise.decoding.automaton import is_feasible
from slatewise.model.engine import Engine
from slatewise.model.handles import HandleSet, single_token_handles
from slatewise.model.item_prompts import ItemPromptPlanner
from slatewise.model.plan import PRIOR_CLIP, CannotPlan, ContextTooLong, DppChoice, ModelPlan, slate_spec
from slatewise.model.prompt import ModelContext, PromptBuilder

__all__ = ["PRIOR_CLIP", "CannotPlan", "ContextTooLong", "ModelPlan", "SlateComposer"]
_request_ids = itertools.count()


class SlateComposer:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self._prompts: PromptBuilder | None = None
        self.handles: HandleSet | None = None
        # A trained model (the engine found a manifest) is prompted with item tokens.
        self.items: ItemPromptPlanner | None = None
        if engine.trained is not None:
            self.items = ItemPromptPlanner(
                engine.trained, max_model_len=settings.max_model_len,
                relevance_prior=settings.trained_relevance_prior,
                dpp=DppChoice(settings.trained_dpp_scale, settings.trained_dpp_category_weight))

    def prepare(self) -> None:
        """Once the engine is built: the text path needs its tokenizer (a
        trained model has none; its vocabulary is the manifest's)."""
        if self.items is None:
            self.attach_tokenizer(self.engine.tokenizer)

    def startup_problems(self, items: Sequence[CatalogueItem], embedding_model: str, dim: int) -> list[str]:
        """For a trained model: how the served catalogue and text embeddings
        differ from those it was trained with (served anyway; see README)."""
        if self.items is None:
            return []
        model = self.items.model
        return [p for p in (model.catalogue_problem(items), model.embedding_problem(embedding_model, dim)) if p]

    def attach_tokenizer(self, tokenizer) -> None:
        self.handles = single_token_handles(tokenizer)
        if not self.handles:
            raise RuntimeError("the tokenizer has no single-token two-letter handles")
        self._prompts = PromptBuilder(tokenizer, self.handles,
                                      align_tokens=self.settings.prefix_align_tokens)

    @property
    def prompts(self) -> PromptBuilder:
        if self._prompts is None:
            raise RuntimeError("composer has no tokenizer yet")
        return self._prompts

    # ---- planning (CPU, no engine) -----------------------------------------
    def _context(self, cset: CandidateSet) -> ModelContext:
        snap = cset.snapshot
        all_in_catalogue = all(c.catalogue_index is not None for c in cset.candidates)
        if all_in_catalogue and len(snap) <= min(self.settings.full_catalogue_context_max_items,
                                                 len(self.prompts.handles)):
            # Every request shares this context: one prefix, cached once per version.
            key = ("catalogue", id(snap), snap.version)
            items = [snap.candidate(i) for i in range(len(snap))]
            return self.prompts.context(items, cache_key=key)
        key = None
        if all_in_catalogue:
            key = ("candidates", id(snap), snap.version, tuple(sorted(c.id for c in cset.candidates)))
        return self.prompts.context(list(cset.candidates), cache_key=key)

    def _shrunk(self, cset: CandidateSet) -> list[int]:
        """Candidate indices shown to the model: all, or the best that fit the handles."""
        limit = len(self.prompts.handles)
        if len(cset) <= limit:
            return list(range(len(cset)))
        keep = sorted(np.argsort(-cset.scores, kind="stable")[:limit].tolist())
        cats = cset.category_index[keep].tolist()
        if not is_feasible(cset.request.k, cats, list(cset.caps)):
            raise ContextTooLong(f"{len(cset)} candidates exceed {limit} handles")
        return keep

    def plan(self, cset: CandidateSet) -> ModelPlan:
        """Prompt and slate spec for a candidate set; CannotPlan (with the
        fallback reason) when the model cannot take it."""
        if self.items is not None:
            return self.items.plan(cset)
        return self._plan_listing(cset)

    def _plan_listing(self, cset: CandidateSet) -> ModelPlan:
        """The text listing. A context too long for the model's window is
        shrunk to the best candidates by pointwise score (halving until it
        fits); ContextTooLong if even that fails."""
        request = cset.request
        allowed = self._shrunk(cset)
        history = [cset.snapshot.items[cset.snapshot.index[h]].title
                   for h in request.history_ids if h in cset.snapshot.index]
        ctx = (self._context(cset) if len(allowed) == len(cset)
               else self.prompts.context([cset.candidates[i] for i in allowed]))
        tokens = self.prompts.prompt_tokens(ctx, request, history)
        while len(tokens) + request.k > self.settings.max_model_len:
            keep = len(allowed) // 2
            by_score = sorted(allowed, key=lambda i: -float(cset.scores[i]))[:keep]
            allowed = sorted(by_score)
            cats = cset.category_index[allowed].tolist()
            if keep < request.k or not is_feasible(request.k, cats, list(cset.caps)):
                raise ContextTooLong(
                    f"prompt of {len(tokens)} tokens does not fit max_model_len {self.settings.max_model_len}")
            ctx = self.prompts.context([cset.candidates[i] for i in allowed])
            tokens = self.prompts.prompt_tokens(ctx, request, history)
        handle_tokens = [ctx.handle_token[cset.candidates[i].id] for i in allowed]
        spec = slate_spec(cset, allowed, handle_tokens, k=request.k,
                          eos_token_id=self.engine.tokenizer.eos_token_id,
                          default_prior=self.settings.relevance_prior,
                          diversity_penalty=self.settings.diversity_penalty)
        return ModelPlan(tokens, spec, {t: i for t, i in zip(handle_tokens, allowed)}, allowed, context=ctx)

    # ---- running -----------------------------------------------------------
    async def compose(self, plan: ModelPlan, *, request_id: str, temperature: float,
                      seed: int | None, allow_warming: bool = False) -> AsyncIterator[int]:
        """Yield candidate-set indices in slate order as the engine commits them.

        Every token is a handle: the request ends on its K-th
        (Engine.sampling_params), before the EOS the automaton would allow."""
        engine_id = f"{request_id}-{next(_request_ids)}"
        async for token in self.engine.stream(
            plan.prompt_tokens, plan.spec, prompt_embeds=plan.prompt_embeds, request_id=engine_id,
            temperature=temperature, seed=seed, allow_warming=allow_warming,
        ):
            yield plan.token_to_candidate[token]
