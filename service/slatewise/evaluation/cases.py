"""The evaluation case format (JSONL, one case per line) and its loader.

A case::

    {"id": "office-1",
     "context": {"query": "what to wear to the office", "history": [item, ...]},
     "candidates": [item, ...],
     "k": 5,
     "relevant": ["tp-004", "bt-002"]}

with items ``{"id", "title", "category", "attributes": {str: str}, "score"}``
(``score``, the upstream pointwise score, is optional; so are ``history`` and
``relevant``). Relevant ids need not be among the candidates: held-out logs
list what the user took, and an upstream retrieval stage may have missed it.
Such items count as misses for every strategy (the ideal DCG still counts
them), and the report shows the share of relevant items the candidates
contain, the ceiling of any re-ranker. A bad line fails the whole file with
``path:line: field: why``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class CaseFileError(ValueError):
    """A case file that cannot be evaluated; the message names the line."""


class CaseItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    title: str = Field(min_length=1)
    category: str = Field(min_length=1)
    attributes: dict[str, str] = Field(default_factory=dict)
    score: float | None = None

    @field_validator("score")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    def as_request_item(self) -> dict:
        """The dict slatewise_client.build_request takes as an inline candidate."""
        out: dict = {"id": self.id, "title": self.title, "category": self.category,
                     "attributes": dict(self.attributes)}
        if self.score is not None:
            out["score"] = self.score
        return out


class CaseContext(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    query: str = ""
    history: list[CaseItem] = Field(default_factory=list)


class EvalCase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    context: CaseContext = Field(default_factory=CaseContext)
    candidates: list[CaseItem] = Field(min_length=1)
    k: int = Field(ge=1)
    relevant: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> EvalCase:
        seen: set[str] = set()
        for i, cand in enumerate(self.candidates):
            if cand.id in seen:
                raise ValueError(f"candidates[{i}]: duplicate candidate id {cand.id!r}")
            seen.add(cand.id)
        if self.k > len(self.candidates):
            raise ValueError(f"k is {self.k} but there are only {len(self.candidates)} candidates")
        if len(set(self.relevant)) != len(self.relevant):
            raise ValueError("relevant lists an id twice")
        return self

    @property
    def has_relevance(self) -> bool:
        return bool(self.relevant)

    @property
    def relevant_in_candidates(self) -> int:
        """How many of the relevant ids are among the candidates (the most
        any re-ranking of these candidates can get right)."""
        ids = {c.id for c in self.candidates}
        return sum(r in ids for r in self.relevant)

    @property
    def has_scores(self) -> bool:
        """Every candidate carries an upstream score."""
        return all(c.score is not None for c in self.candidates)


def parse_case(line: str) -> EvalCase:
    return EvalCase.model_validate(json.loads(line))


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "case"
    msg = first["msg"].removeprefix("Value error, ")
    more = len(exc.errors()) - 1
    return f"{loc}: {msg}" + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


def load_cases(path: Path | str, limit: int | None = None) -> list[EvalCase]:
    """All cases of a JSONL file (the first ``limit`` if given); blank lines
    are skipped. Raises CaseFileError naming the first bad line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CaseFileError(f"{path}: cannot read cases: {exc}") from exc
    cases: list[EvalCase] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            case = parse_case(line)
        except json.JSONDecodeError as exc:
            raise CaseFileError(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})") from exc
        except ValidationError as exc:
            raise CaseFileError(f"{where}: {_describe(exc)}") from exc
        if case.id in seen:
            raise CaseFileError(f"{where}: duplicate case id {case.id!r} (first on line {seen[case.id]})")
        seen[case.id] = lineno
        cases.append(case)
        if limit is not None and len(cases) >= limit:
            break
    if not cases:
        raise CaseFileError(f"{path}: no cases")
    return cases
