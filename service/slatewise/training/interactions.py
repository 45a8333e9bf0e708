"""Streaming reader of interaction logs (JSONL, one event per line).

A line is ``{"user_id", "item_id", "timestamp", "rating"?, "weight"?, "event"?}``
with ``timestamp`` in seconds (a JSON number). Logs come from other systems
and are never clean, so a bad row is counted under its kind and the first few
line numbers of each kind are kept for the report: nothing crashes, and nothing
disappears without a count. ``rows_read == rows_used + sum(bad) + sum(filtered)``
always holds, which is what "never silently dropped" means here.

Memory bound. The file is read line by line (a line longer than
``max_line_bytes`` is skipped in pieces, never held whole). Kept events live
in flat typed arrays, 16 bytes each (int32 user, int32 item, float64 time).
With ``max_events_per_user`` set, the arrays are compacted whenever they grow
by ``compact_every`` rows, keeping each user's most recent events, so the
peak is about ``16 B * (users * max_events_per_user + compact_every)`` times
~3 while sorting, plus the user-id dictionary (~100 B + the id per user).
The users themselves are therefore the limit: a log of 10M users needs ~1 GB
for their ids alone. Without the cap, memory grows with the kept events.
"""

from __future__ import annotations

import json
import math
from array import array
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Kinds of bad rows (input that is wrong) and of filtered rows (input that is
# fine but excluded by an option or by the per-user cap).
BAD_KINDS = (
    "line_too_long", "not_utf8", "malformed_json", "not_an_object", "missing_field",
    "wrong_type", "bad_timestamp", "unknown_item",
)
FILTERED_KINDS = ("below_min_rating", "event_not_allowed", "over_user_cap")


class InteractionsError(ValueError):
    """An interaction log that cannot be used at all (unreadable, nothing usable)."""


@dataclass
class ReadReport:
    """What the reader saw: counts per kind and the first lines of each."""

    path: str
    max_examples: int = 5
    rows_read: int = 0  # non-blank lines
    rows_used: int = 0
    bad: Counter = field(default_factory=Counter)
    filtered: Counter = field(default_factory=Counter)
    examples: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    users: int = 0
    items: int = 0
    first_timestamp: float | None = None
    last_timestamp: float | None = None

    def count(self, counter: Counter, kind: str, lineno: int, message: str) -> None:
        counter[kind] += 1
        shown = self.examples.setdefault(kind, [])
        if len(shown) < self.max_examples:
            shown.append((lineno, message))

    def problems(self) -> list[str]:
        """``file:line: kind: message`` for the first rows of every kind."""
        out = []
        for kind in (*BAD_KINDS, *FILTERED_KINDS):
            n = self.bad.get(kind, 0) + self.filtered.get(kind, 0)
            for lineno, message in self.examples.get(kind, []):
                out.append(f"{self.path}:{lineno}: {kind}: {message}")
            if n > len(self.examples.get(kind, [])):
                out.append(f"{self.path}: {kind}: {n} rows in all")
        return out

    def as_dict(self) -> dict:
        return {
            "path": self.path, "rows_read": self.rows_read, "rows_used": self.rows_used,
            "bad": dict(self.bad), "filtered": dict(self.filtered),
            "examples": {k: [[ln, msg] for ln, msg in v] for k, v in self.examples.items()},
            "users": self.users, "items": self.items,
            "first_timestamp": self.first_timestamp, "last_timestamp": self.last_timestamp,
        }


@dataclass
class InteractionLog:
    """Per-user event sequences in CSR form, each user's events in time order
    (ties keep file order, so a log written in order reads back in order)."""

    user_ids: list[str]  # user index -> id as in the file (ints become strings)
    offsets: np.ndarray  # int64 (users + 1,): user u owns [offsets[u], offsets[u+1])
    items: np.ndarray  # int32 catalogue index
    timestamps: np.ndarray  # float64 seconds
    report: ReadReport

    def __len__(self) -> int:
        return len(self.user_ids)

    def sequence(self, user: int) -> np.ndarray:
        return self.items[self.offsets[user]:self.offsets[user + 1]]


def _as_id(value) -> str | None:
    """Ids may be strings or integers (many public logs use ints)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    return None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_lines(f, max_line_bytes: int):
    """(lineno, bytes or None) per line; None for a line over the limit,
    which is consumed in pieces rather than held."""
    lineno = 0
    while True:
        line = f.readline(max_line_bytes + 1)
        if not line:
            return
        lineno += 1
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):
                line = f.readline(max_line_bytes + 1)
            yield lineno, None
        else:
            yield lineno, line


class _Columns:
    """Append-only typed columns with a per-user cap applied by compaction."""

    def __init__(self, cap: int | None, compact_every: int):
        self.cap = cap
        self.compact_every = compact_every
        self.users, self.items, self.times = array("i"), array("i"), array("d")
        self.kept: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.dropped = 0

    def append(self, user: int, item: int, ts: float) -> None:
        self.users.append(user)
        self.items.append(item)
        self.times.append(ts)
        if self.cap is not None and len(self.users) >= self.compact_every:
            self.compact()

    def extend(self, users: np.ndarray, items: np.ndarray, times: np.ndarray) -> None:
        self.users.frombytes(users.astype(np.int32).tobytes())
        self.items.frombytes(items.astype(np.int32).tobytes())
        self.times.frombytes(times.astype(np.float64).tobytes())
        if self.cap is not None and len(self.users) >= self.compact_every:
            self.compact()

    def compact(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        new = (np.frombuffer(self.users, dtype=np.int32), np.frombuffer(self.items, dtype=np.int32),
               np.frombuffer(self.times, dtype=np.float64))
        if self.kept is not None:
            new = tuple(np.concatenate([a, b]) for a, b in zip(self.kept, new))
        users, items, times = new
        order = np.lexsort((times, users))  # stable: file order among ties
        users, items, times = users[order], items[order], times[order]
        if self.cap is not None and len(users):
            # rank from the end within each user's run: keep the newest `cap`
            starts = np.r_[0, np.flatnonzero(np.diff(users)) + 1]
            ends = np.r_[starts[1:], len(users)]
            from_end = np.repeat(ends, ends - starts) - np.arange(len(users))
            keep = from_end <= self.cap
            self.dropped += int((~keep).sum())
            users, items, times = users[keep], items[keep], times[keep]
        self.kept = (users, items, times)
        self.users, self.items, self.times = array("i"), array("i"), array("d")
        return self.kept


class SequenceBuilder:
    """Rows from any source -> an :class:`InteractionLog`, under the per-user
    cap: the file reader below, the feedback-log reader
    (:mod:`slatewise.training.events`) and :func:`merge_logs` all build
    their sequences here, so they order and cap events the same way."""

    def __init__(self, max_events_per_user: int | None = None, compact_every: int = 1 << 22):
        self.users: dict[str, int] = {}
        self._cols = _Columns(max_events_per_user, compact_every)

    def add(self, user_id: str, item: int, ts: float) -> None:
        self._cols.append(self.users.setdefault(user_id, len(self.users)), item, ts)

    def add_log(self, log: InteractionLog) -> None:
        index = np.array([self.users.setdefault(u, len(self.users)) for u in log.user_ids], dtype=np.int32)
        self._cols.extend(np.repeat(index, np.diff(log.offsets)), log.items, log.timestamps)

    def build(self, report: ReadReport) -> InteractionLog:
        """The CSR log; fills in the report's totals (rows used, users,
        items, time range, rows over the per-user cap)."""
        user_col, item_col, time_col = self._cols.compact()
        if self._cols.dropped:
            report.filtered["over_user_cap"] += self._cols.dropped
        # users whose events were all capped away cannot happen (the newest stay),
        # so every user index owns at least one event
        n_users = len(self.users)
        counts = np.bincount(user_col, minlength=n_users) if n_users else np.zeros(0, np.int64)
        offsets = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        report.rows_used = len(item_col)
        report.users = n_users
        report.items = int(len(np.unique(item_col)))
        if len(time_col):
            report.first_timestamp, report.last_timestamp = float(time_col.min()), float(time_col.max())
        return InteractionLog(list(self.users), offsets, item_col.astype(np.int32, copy=False),
                              time_col, report)


def merge_logs(logs: Sequence[InteractionLog], max_events_per_user: int | None = None) -> InteractionLog:
    """One pool of users from several sources (an interaction file and the
    feedback log): a user id found in both is one user whose events
    interleave by time (ties: the earlier source first), and the per-user cap
    applies to the pool. The report counts the pool, not the sources."""
    builder = SequenceBuilder(max_events_per_user)
    for log in logs:
        builder.add_log(log)
    report = ReadReport(" + ".join(log.report.path for log in logs))
    report.rows_read = sum(len(log.items) for log in logs)
    return builder.build(report)


def read_interactions(
    path: Path,
    item_index: Mapping[str, int],
    *,
    min_rating: float | None = None,
    events: Collection[str] | None = None,
    max_events_per_user: int | None = None,
    compact_every: int = 1 << 22,
    max_line_bytes: int = 1 << 20,
    max_examples: int = 5,
) -> InteractionLog:
    """Read a JSONL log against a catalogue (``item_index``: id -> index).

    ``min_rating`` keeps rows whose ``rating`` (else ``weight``) is at least
    that; rows carrying neither are kept (a purchase log has no ratings).
    ``events`` keeps only rows whose ``event`` is listed; rows without an
    event name are then excluded too, since the filter cannot vouch for them.
    Raises :class:`InteractionsError` only when the file cannot be read.
    """
    report = ReadReport(str(path), max_examples=max_examples)
    allowed = frozenset(events) if events else None
    builder = SequenceBuilder(max_events_per_user, compact_every)
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InteractionsError(f"{path}: cannot read interactions: {exc.strerror or exc}") from exc
    with f:
        try:
            for lineno, line in _read_lines(f, max_line_bytes):
                if line is not None and not line.strip():
                    continue
                report.rows_read += 1
                if line is None:
                    report.count(report.bad, "line_too_long", lineno, f"longer than {max_line_bytes} bytes")
                    continue
                row = _parse(line, lineno, report, item_index, min_rating, allowed)
                if row is not None:
                    builder.add(*row)
        except OSError as exc:
            raise InteractionsError(f"{path}: read failed: {exc.strerror or exc}") from exc
    return builder.build(report)


def _parse(line: bytes, lineno: int, report: ReadReport, item_index: Mapping[str, int],
           min_rating: float | None, allowed: frozenset[str] | None) -> tuple[str, int, float] | None:
    bad = report.bad
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        report.count(bad, "not_utf8", lineno, f"byte {exc.start}: not UTF-8")
        return None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        report.count(bad, "malformed_json", lineno, getattr(exc, "msg", type(exc).__name__))
        return None
    if not isinstance(obj, dict):
        report.count(bad, "not_an_object", lineno, f"a JSON {type(obj).__name__}, not an object")
        return None
    for name in ("user_id", "item_id"):
        if obj.get(name) is None:
            report.count(bad, "missing_field", lineno, f"no {name}")
            return None
    user_id, item_id = _as_id(obj["user_id"]), _as_id(obj["item_id"])
    if user_id is None or item_id is None:
        name = "user_id" if user_id is None else "item_id"
        report.count(bad, "wrong_type", lineno, f"{name} must be a non-blank string or an integer")
        return None
    ts = obj.get("timestamp")
    if ts is None:
        report.count(bad, "bad_timestamp", lineno, "no timestamp")
        return None
    if not _is_number(ts) or not math.isfinite(ts) or ts < 0:
        report.count(bad, "bad_timestamp", lineno, f"timestamp {ts!r} is not a non-negative number of seconds")
        return None
    for name in ("rating", "weight"):
        value = obj.get(name)
        if value is not None and (not _is_number(value) or not math.isfinite(value)):
            report.count(bad, "wrong_type", lineno, f"{name} must be a number")
            return None
    event = obj.get("event")
    if event is not None and not isinstance(event, str):
        report.count(bad, "wrong_type", lineno, "event must be a string")
        return None
    item = item_index.get(item_id)
    if item is None:
        report.count(bad, "unknown_item", lineno, f"item {item_id[:80]!r} is not in the catalogue")
        return None
    if min_rating is not None:
        value = obj.get("rating")
        value = obj.get("weight") if value is None else value
        if value is not None and value < min_rating:
            report.count(report.filtered, "below_min_rating", lineno, f"{value} < {min_rating}")
            return None
    if allowed is not None and event not in allowed:
        report.count(report.filtered, "event_not_allowed", lineno, f"event {event!r}")
        return None
    return user_id, item, float(ts)
