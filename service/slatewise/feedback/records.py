"""What the feedback log holds: one JSON object per record, two kinds.

JSON rather than protobuf so that any tool (jq, a Spark job, `slatewise
train --events`) reads the log without Slatewise's generated code; a record
is ~200 bytes and encodes in microseconds, far below the fsync it waits for.

``slate`` records are written by the server for every slate it serves, so
the log knows what was shown and for which context even when a caller only
ever reports clicks. ``event`` records are what callers report through
``FeedbackService.ReportEvents``, validated against the slate they name:

    {"kind": "slate", "slate_id": "...", "time": 1764500000.0, "user_id": "u1",
     "query": "...", "history": ["a", "b"], "items": ["x", "y", "z"],
     "model_id": "slates-v2", "strategy": "MODEL"}
    {"kind": "event", "event_id": "...", "slate_id": "...", "type": "click",
     "time": 1764500003.2, "user_id": "u1", "items": ["y"], "positions": [1]}

``type`` is one of :data:`EVENT_TYPES`; ``positions`` are 0-based slate
positions, one per item; ``time`` is seconds since the epoch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

EVENT_TYPES = ("impression", "click", "add_to_cart", "purchase", "dismiss")
# Interactions a trainer may read as "the user wanted this item", and how much.
POSITIVE_WEIGHTS = {"click": 1.0, "add_to_cart": 2.0, "purchase": 3.0}


@dataclass(frozen=True)
class ServedSlate:
    slate_id: str
    time: float
    items: list[str]
    user_id: str = ""
    query: str = ""
    history: list[str] = field(default_factory=list)
    model_id: str = ""
    strategy: str = ""

    def encode(self) -> bytes:
        return json.dumps({"kind": "slate", **asdict(self)}, separators=(",", ":")).encode()


@dataclass(frozen=True)
class FeedbackEvent:
    event_id: str
    slate_id: str
    type: str
    time: float
    items: list[str]
    positions: list[int]
    user_id: str = ""

    def encode(self) -> bytes:
        return json.dumps({"kind": "event", **asdict(self)}, separators=(",", ":")).encode()


def decode(payload: bytes) -> ServedSlate | FeedbackEvent:
    """One record; ValueError for anything that is not one of the two kinds."""
    data = json.loads(payload)
    kind = data.pop("kind", None)
    if kind == "slate":
        return ServedSlate(**data)
    if kind == "event":
        return FeedbackEvent(**data)
    raise ValueError(f"unknown record kind {kind!r}")


@dataclass
class ReadReport:
    """What a pass over the log found besides the records it yielded."""

    records: int = 0
    undecodable: int = 0
    first_problems: list[str] = field(default_factory=list)
    skipped_bytes: int = 0

    def note(self, where: str, problem: str) -> None:
        self.undecodable += 1
        if len(self.first_problems) < 5:
            self.first_problems.append(f"{where}: {problem}")


def read_log(directory: Path, report: ReadReport | None = None) -> Iterator[ServedSlate | FeedbackEvent]:
    """Every decodable record in log order, streaming; damaged frames (the
    log's own CRC check) and undecodable payloads are counted in ``report``,
    never raised, so one bad record cannot stop a training run."""
    from slatewise.feedback.log import Skipped, read_records

    report = report if report is not None else ReadReport()
    skipped = Skipped()
    for seq, payload in read_records(directory, skipped=skipped):
        try:
            record = decode(payload)
        except (ValueError, TypeError) as exc:
            report.note(f"record {seq}", str(exc))
            continue
        report.records += 1
        yield record
    report.skipped_bytes = skipped.nbytes
    for skip in skipped.first:
        if len(report.first_problems) < 5:
            report.first_problems.append(f"{skip.segment.name}@{skip.offset}: {skip.reason}")
