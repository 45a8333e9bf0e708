"""The slate automaton: which handle may come next, and how strongly.

It knows nothing of vLLM or torch so that it can be property-tested on its
own and shared by both vLLM runner interfaces (numpy only for the DPP). A slate is a path of exactly K
distinct candidate handles (one token each) followed by EOS. Per-category caps
form a partition matroid, so as long as the request was feasible to begin with
(checked up front by :func:`is_feasible`), every allowed step keeps it
feasible: the automaton can never dead-end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from slatewise.pointwise.select import EPS, GreedyDpp

EXTRA_ARGS_KEY = "slatewise"


@dataclass(frozen=True)
class SlateSpec:
    """Everything the engine needs to constrain one request.

    Travels inside ``SamplingParams.extra_args`` to the engine core process,
    so it is kept to plain lists and numbers.
    """

    k: int
    eos_token_id: int
    # One entry per allowed candidate, in the same order everywhere below.
    handle_tokens: Sequence[int]
    categories: Sequence[int]
    # Cap per category index; a category index >= len(caps) is unlimited.
    category_caps: Sequence[int] = ()
    # Additive logit bias per candidate (relevance prior), or empty.
    prior: Sequence[float] = ()
    # Row-major n*n cosine similarities among candidates, or empty; float32
    # bytes travel cheapest (vLLM deep-copies and walks a list's every float
    # in the server and decodes it again in the engine, per request).
    similarity: Sequence[float] | bytes = ()
    # Logits subtracted per unit of max-similarity to already chosen items.
    diversity_penalty: float = 0.0
    # Set: choose by greedy DPP instead of the penalty. ``similarity`` is then
    # the DPP kernel S, the quality is the model's first-step logits z-scored
    # over the handles plus ``prior``, and every step's logits become log
    # marginal gains with weights exp(dpp_beta * quality) (decoding.masking).
    dpp_beta: float | None = None

    def __post_init__(self) -> None:
        n = len(self.handle_tokens)
        if len(set(self.handle_tokens)) != n:
            raise ValueError("handle tokens must be distinct")
        if len(self.categories) != n:
            raise ValueError("one category per candidate")
        if self.prior and len(self.prior) != n:
            raise ValueError("one prior per candidate")
        if self.similarity and len(self.similarity_array()) != n * n:
            raise ValueError("similarity must be n*n")
        if self.eos_token_id in self.handle_tokens:
            raise ValueError("EOS cannot be a handle")
        if not 1 <= self.k <= n:
            raise ValueError("k must be between 1 and the number of candidates")
        if self.dpp_beta is not None and (self.dpp_beta < 0 or not self.similarity):
            raise ValueError("dpp_beta needs a similarity kernel and must be >= 0")

    def similarity_array(self) -> np.ndarray:
        sim = self.similarity
        return (np.frombuffer(sim, dtype=np.float32) if isinstance(sim, bytes)
                else np.asarray(sim, dtype=np.float32))

    def cap(self, category: int) -> int:
        caps = self.category_caps
        return caps[category] if category < len(caps) and caps[category] > 0 else self.k

    def to_extra_args(self) -> dict:
        return {
            EXTRA_ARGS_KEY: {
                "k": self.k,
                "eos": self.eos_token_id,
                "tokens": list(self.handle_tokens),
                "categories": list(self.categories),
                "caps": list(self.category_caps),
                "prior": list(self.prior),
                "similarity": self.similarity_array().tobytes() if self.similarity else b"",
                "penalty": self.diversity_penalty,
                "dpp_beta": self.dpp_beta,
            }
        }

    @classmethod
    def from_extra_args(cls, extra_args: dict | None) -> SlateSpec | None:
        data = (extra_args or {}).get(EXTRA_ARGS_KEY)
        if data is None:
            return None
        return cls(
            k=int(data["k"]),
            eos_token_id=int(data["eos"]),
            handle_tokens=tuple(int(t) for t in data["tokens"]),
            categories=tuple(int(c) for c in data["categories"]),
            category_caps=tuple(int(c) for c in data.get("caps", ())),
            prior=tuple(float(p) for p in data.get("prior", ())),
            similarity=_similarity(data.get("similarity", ())),
            diversity_penalty=float(data.get("penalty", 0.0)),
            dpp_beta=None if data.get("dpp_beta") is None else float(data["dpp_beta"]),
        )


def _similarity(value) -> tuple[float, ...] | bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value) or ()
    return tuple(float(s) for s in value)


def capacity(k: int, categories: Sequence[int], caps: Sequence[int]) -> int:
    """The most distinct items (up to K per category) the caps let a slate hold."""
    counts: dict[int, int] = {}
    for c in categories:
        counts[c] = counts.get(c, 0) + 1
    return sum(min(n, caps[c] if c < len(caps) and caps[c] > 0 else k) for c, n in counts.items())


def is_feasible(k: int, categories: Sequence[int], caps: Sequence[int]) -> bool:
    """Whether K distinct items exist that respect the caps (before any choice)."""
    return capacity(k, categories, caps) >= k


class SlateViolation(RuntimeError):
    """A token arrived that the automaton did not allow (a bug, never input)."""


@dataclass
class SlateAutomaton:
    """Tracks one request's slate as tokens are committed."""

    spec: SlateSpec
    chosen: list[int] = field(default_factory=list)
    finished: bool = False

    def __post_init__(self) -> None:
        spec = self.spec
        n = len(spec.handle_tokens)
        self._index = {t: i for i, t in enumerate(spec.handle_tokens)}
        self._categories = np.asarray(spec.categories, dtype=np.int64)
        # Whether each candidate may come next; kept up to date by _commit, so
        # a decoding step (run for every request in the batch) reads it
        # instead of walking the candidates and their caps again.
        self._available = np.ones(n, dtype=bool)
        self._per_category: dict[int, int] = {}
        self._prior = np.asarray(spec.prior, dtype=np.float32) if spec.prior else np.zeros(n, np.float32)
        self._max_sim = np.zeros(n, dtype=np.float32)
        self._similarity = spec.similarity_array().reshape(n, n) if spec.similarity else None
        self.dpp: GreedyDpp | None = None

    @property
    def done(self) -> bool:
        return len(self.chosen) == self.spec.k

    def allowed_mask(self) -> np.ndarray:
        """Per candidate, whether it may come next (all False once K are chosen)."""
        return np.zeros_like(self._available) if self.done else self._available.copy()

    def allowed(self) -> list[int]:
        """Candidate indices that may come next (empty once K are chosen)."""
        return np.flatnonzero(self.allowed_mask()).tolist()

    def allowed_tokens(self) -> list[int]:
        if self.finished:
            return []
        if self.done:
            return [self.spec.eos_token_id]
        tokens = self.spec.handle_tokens
        return [tokens[i] for i in self.allowed()]

    def biases(self) -> np.ndarray:
        """Logit bias of every candidate now: relevance prior minus redundancy."""
        if self.spec.diversity_penalty and self.chosen:
            return self._prior - np.float32(self.spec.diversity_penalty) * self._max_sim
        return self._prior

    def bias(self, candidate: int) -> float:
        return float(self.biases()[candidate])

    def start_dpp(self, logits: Sequence[float]) -> None:
        """Fix the DPP's quality from the first step's logits of the handles:
        the model's judgement of every candidate before any pick, which held
        up better as DPP quality than each step's conditional distribution
        (docs/QUALITY.md)."""
        spec = self.spec
        quality = np.asarray(logits, dtype=np.float32)
        quality = (quality - quality.mean()) / (quality.std() + EPS) + self._prior
        weights = np.exp(float(spec.dpp_beta) * quality)
        self.dpp = GreedyDpp(weights, self._similarity.__getitem__, spec.k)
        for i in self.chosen:
            self.dpp.add(i)

    def dpp_gains(self, candidates: Sequence[int] | np.ndarray) -> np.ndarray:
        """log marginal gain in det(L) of each candidate (indices or a mask) given the slate so far."""
        assert self.dpp is not None
        return np.log(self.dpp.residual[np.asarray(candidates)] + EPS).astype(np.float32)

    def advance(self, token: int) -> int | None:
        """Commit one token; returns the chosen candidate index, None for EOS."""
        if self.finished:
            raise SlateViolation("token after EOS")
        if self.done:
            if token != self.spec.eos_token_id:
                raise SlateViolation(f"expected EOS, got token {token}")
            self.finished = True
            return None
        i = self._index.get(token)
        if i is None or not self._available[i]:
            raise SlateViolation(f"token {token} is not an allowed handle")
        self._commit(i)
        return i

    def _commit(self, i: int) -> None:
        spec = self.spec
        self.chosen.append(i)
        self._available[i] = False
        c = spec.categories[i]
        self._per_category[c] = self._per_category.get(c, 0) + 1
        if self._per_category[c] >= spec.cap(c):
            self._available[self._categories == c] = False
        if self.dpp is not None:
            self.dpp.add(i)
        if self._similarity is not None and spec.dpp_beta is None:
            np.maximum(self._max_sim, self._similarity[i], out=self._max_sim)

    def sync(self, output_tokens: Sequence[int]) -> None:
        """Catch up with the tokens the engine has committed so far."""
        seen = len(self.chosen) + (1 if self.finished else 0)
        for token in output_tokens[seen:]:
            self.advance(token)
