"""Plain types a request passes through once it has left protobuf behind."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class Strategy(enum.Enum):
    AUTO = "auto"
    MODEL = "model"
    POINTWISE = "pointwise"
    PARTIAL = "partial"
    FALLBACK = "fallback"


class FallbackReason(enum.Enum):
    NONE = "none"
    ENGINE_NOT_READY = "engine_not_ready"
    ENGINE_ERROR = "engine_error"
    ENGINE_DEAD = "engine_dead"
    OVERLOAD = "overload"
    DEADLINE = "deadline"
    CONTEXT_TOO_LONG = "context_too_long"
    CIRCUIT_OPEN = "circuit_open"
    UNKNOWN_CANDIDATES = "unknown_candidates"


class Source(enum.Enum):
    MODEL = "model"
    FALLBACK = "fallback"


@dataclass(frozen=True)
class Candidate:
    id: str
    title: str
    category: str
    attributes: Mapping[str, str]
    upstream_score: float | None = None
    catalogue_index: int | None = None  # None for inline items


@dataclass(frozen=True)
class SlateRequest:
    """A request that passed validation: every field is within limits."""

    request_id: str
    query: str
    k: int
    # None = retrieve from the catalogue; otherwise the caller's candidates.
    candidates: tuple[Candidate, ...] | None
    user_id: str = ""
    history_ids: tuple[str, ...] = ()
    context_attributes: Mapping[str, str] = field(default_factory=dict)
    max_per_category: int = 0
    category_limits: Mapping[str, int] = field(default_factory=dict)
    exclude_ids: frozenset[str] = frozenset()
    diversity: float = 0.0
    strategy: Strategy = Strategy.AUTO
    temperature: float = 0.0
    seed: int | None = None
    relevance_prior: float | None = None
    reject_on_overload: bool = False
    slate_id: str = ""  # what feedback events will name (generated if the caller gave none)

    def cap(self, category: str) -> int:
        """0 = unlimited."""
        return self.category_limits.get(category, self.max_per_category)


@dataclass(frozen=True)
class Decision:
    """One committed slate position."""

    candidate: int  # index into the candidate set
    item: Candidate
    score: float  # pointwise relevance of the item
    source: Source
    at: float  # seconds since the request arrived
