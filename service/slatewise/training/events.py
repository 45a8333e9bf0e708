"""The feedback event log (:mod:`slatewise.feedback`) as training data.

One streaming pass over the log (``slatewise train --events DIR``) yields two
kinds of data:

* **Interactions.** Every item of a ``click``, ``add_to_cart`` or
  ``purchase`` event is one interaction of the event's user (the slate's user
  when the event names none), at the event's time, with weight
  ``records.POSITIVE_WEIGHTS[type]``. They join the ``--interactions`` rows in
  one pool of per-user sequences (:func:`~slatewise.training.interactions.merge_logs`),
  so the time split and the next-item/set targets treat them alike. The
  reader's filters apply as they do to a file row: ``--min-rating`` compares
  the weight (``--min-rating 2`` keeps add-to-carts and purchases),
  ``--event-types`` the event type, and ``--max-events-per-user`` caps the pool.
  An event whose slate record is not in the log is still used when it names
  its user; otherwise it is counted as ``no_user``. The log is at-least-once
  (a retried append may store an event twice), so an item counts once per
  slate, user and event type.

* **Slate feedback.** A slate with an ``impression`` (the caller confirms it
  was shown) becomes a :class:`SlateFeedback`: the context the server had
  (the slate record's ``history``, newest ``max_history``, and ``query``),
  the *positives* (shown items with a click/add_to_cart/purchase on that
  slate that passes the filters, in the order they were first taken) and the
  *negatives* (shown items nobody took, plus dismissed ones). What was shown
  is the union of the impressions' ``items``, or the whole slate when an
  impression lists none. An item taken by an event the filters exclude is
  neither: the user did not ignore it. This is what item sequences cannot
  say: which slates worked, and what was passed over in them.

Split by time. Interactions go through the trainer's split like file rows.
A slate example is known only once its last event has happened, so its time
is the latest of the slate's time and its events' times, and
:func:`before_holdout` keeps an example of a user only when that time is
before the user's first held-out event (taken from the split itself: the
first event of the user's sequence that is not in training). A click on a
slate served before the cut but made after it would otherwise put a
held-out item into a training target. Examples without a user cannot be
validated on and are kept.

Memory: one small record per slate (ids mapped to catalogue indices, the
history cut to ``max_history``) plus the interaction columns; never the log's
bytes. Damaged frames and undecodable records are counted, never raised
(:func:`slatewise.feedback.records.read_log`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from slatewise.feedback import records
from slatewise.feedback.records import FeedbackEvent, ServedSlate
from slatewise.training.data import Split
from slatewise.training.interactions import InteractionLog, InteractionsError, ReadReport, SequenceBuilder


@dataclass(frozen=True)
class SlateFeedback:
    """One shown slate, as catalogue indices: the context it was served for
    and what the user did with it."""

    slate_id: str
    user_id: str  # "" when neither the slate nor its events name one
    time: float  # the latest of the slate's and its events' times
    history: tuple[int, ...]  # oldest first, the newest max_history
    query: str
    positives: tuple[int, ...]  # in the order first taken
    negatives: tuple[int, ...]  # in slate order


PROBLEM_KINDS = ("unreadable", "invalid", "unknown_item", "no_user")


@dataclass
class EventsReport:
    """What a pass over the feedback log found. Units: ``records``,
    ``invalid``, ``slates`` and ``events`` count log records; ``interactions``
    and ``filtered`` count (event, item) rows; ``unknown_items`` counts item
    ids per record; ``no_user`` and ``events_without_slate`` count events.
    ``examples`` keeps the first few places of each kind of problem."""

    paths: list[str]
    max_examples: int = 5
    records: int = 0  # decoded records
    undecodable: int = 0  # frames whose payload is not a record
    damaged_bytes: int = 0  # bytes of frames that failed the log's own checks
    invalid: int = 0  # records of the right shape with fields of the wrong type
    slates: int = 0
    events: Counter = field(default_factory=Counter)  # event records by type
    shown_slates: int = 0  # slates with a slate record and an impression
    interactions: int = 0  # rows added to the sequences (before the per-user cap)
    interactions_used: int = 0  # after the cap
    repeated: int = 0  # rows already taken from the same slate, user and type
    filtered: Counter = field(default_factory=Counter)
    unknown_items: int = 0
    no_user: int = 0
    events_without_slate: int = 0
    slate_examples: int = 0
    positives: int = 0
    negatives: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    def note(self, kind: str, where: str, message: str) -> None:
        shown = self.examples.setdefault(kind, [])
        if len(shown) < self.max_examples:
            shown.append(f"{where}: {kind}: {message}")

    def problems(self) -> list[str]:
        return [line for kind in PROBLEM_KINDS for line in self.examples.get(kind, [])]

    def as_dict(self) -> dict:
        return {
            "paths": self.paths, "records": self.records, "undecodable": self.undecodable,
            "damaged_bytes": self.damaged_bytes, "invalid": self.invalid, "slates": self.slates,
            "events": dict(self.events),
            "shown_slates": self.shown_slates, "interactions": self.interactions,
            "interactions_used": self.interactions_used, "repeated": self.repeated,
            "filtered": dict(self.filtered), "unknown_items": self.unknown_items, "no_user": self.no_user,
            "events_without_slate": self.events_without_slate, "slate_examples": self.slate_examples,
            "positives": self.positives, "negatives": self.negatives, "examples": self.examples,
        }


@dataclass
class FeedbackData:
    log: InteractionLog  # the interactions, as per-user sequences
    slates: list[SlateFeedback]
    report: EventsReport


@dataclass
class _Served:
    """The part of a slate record a training example needs."""

    user_id: str
    time: float
    query: str
    history: tuple[int, ...]
    items: tuple[int, ...]


@dataclass
class _SlateState:
    """Everything the log says about one slate id; its events may come
    before its record, so nothing is decided until the log has been read."""

    served: _Served | None = None
    impressed: bool = False
    shown: set[int] = field(default_factory=set)
    shown_whole: bool = False  # an impression that listed no items
    taken: dict[int, float] = field(default_factory=dict)  # positives passing the filters -> first time
    taken_any: set[int] = field(default_factory=set)  # by any positive event
    dismissed: set[int] = field(default_factory=set)
    rows: set[tuple[str, str, int]] = field(default_factory=set)  # (user, type, item) already added
    event_user: str = ""
    last_time: float = 0.0
    events: int = 0
    waiting: list[tuple[FeedbackEvent, tuple[int, ...]]] = field(default_factory=list)  # no user yet


class _Converter:
    """Turns records into interaction rows as they stream past, and keeps
    per slate only what its example needs."""

    def __init__(self, item_index: Mapping[str, int], report: EventsReport, builder: SequenceBuilder,
                 min_rating: float | None, event_types: frozenset[str] | None, max_history: int):
        self.item_index, self.report, self.builder = item_index, report, builder
        self.min_rating, self.event_types, self.max_history = min_rating, event_types, max_history
        self.slates: dict[str, _SlateState] = {}

    def known(self, ids: Iterable[str], where: str) -> tuple[int, ...]:
        """Catalogue indices of ``ids``; unknown ones are counted, never fatal."""
        out = []
        for item_id in ids:
            index = self.item_index.get(item_id)
            if index is None:
                self.report.unknown_items += 1
                self.report.note("unknown_item", where, f"item {item_id[:80]!r} is not in the catalogue")
            else:
                out.append(index)
        return tuple(out)

    def record(self, rec: ServedSlate | FeedbackEvent) -> None:
        problem = _invalid(rec)
        if problem:
            self.report.invalid += 1
            kind = "slate" if isinstance(rec, ServedSlate) else "event"
            self.report.note("invalid", f"{kind} {str(getattr(rec, kind + '_id'))[:80]}", problem)
        elif isinstance(rec, ServedSlate):
            self.slate(rec)
        else:
            self.event(rec)

    def slate(self, rec: ServedSlate) -> None:
        self.report.slates += 1
        state = self.slates.setdefault(rec.slate_id, _SlateState())
        if state.served is not None:  # a retried append: the first copy stands
            return
        where = f"slate {rec.slate_id}"
        history = self.known(rec.history, where)[-self.max_history:] if self.max_history else ()
        state.served = _Served(rec.user_id, rec.time, rec.query, history, self.known(rec.items, where))
        state.last_time = max(state.last_time, rec.time)

    def event(self, ev: FeedbackEvent) -> None:
        self.report.events[ev.type] += 1
        state = self.slates.setdefault(ev.slate_id, _SlateState())
        state.events += 1
        state.event_user = state.event_user or ev.user_id
        state.last_time = max(state.last_time, ev.time)
        items = self.known(ev.items, f"event {ev.event_id}")
        if ev.type == "impression":
            state.impressed = True
            state.shown.update(items)
            state.shown_whole = state.shown_whole or not ev.items
        elif ev.type == "dismiss":
            state.dismissed.update(items)
        elif ev.type in records.POSITIVE_WEIGHTS:
            self.positive(ev, items, state)

    def positive(self, ev: FeedbackEvent, items: tuple[int, ...], state: _SlateState) -> None:
        state.taken_any.update(items)
        if self.event_types is not None and ev.type not in self.event_types:
            self.report.filtered["event_not_allowed"] += len(items)
            return
        if self.min_rating is not None and records.POSITIVE_WEIGHTS[ev.type] < self.min_rating:
            self.report.filtered["below_min_rating"] += len(items)
            return
        for item in items:
            state.taken.setdefault(item, ev.time)
        user = ev.user_id or (state.served.user_id if state.served else "")
        if user:
            self.add_rows(ev, items, user, state)
        elif state.served is None:  # its slate may come later in the log
            state.waiting.append((ev, items))
        else:
            self.no_user(ev)

    def add_rows(self, ev: FeedbackEvent, items: tuple[int, ...], user: str, state: _SlateState) -> None:
        for item in items:
            key = (user, ev.type, item)
            if key in state.rows:
                self.report.repeated += 1
                continue
            state.rows.add(key)
            self.builder.add(user, item, ev.time)
            self.report.interactions += 1

    def no_user(self, ev: FeedbackEvent) -> None:
        self.report.no_user += 1
        self.report.note("no_user", f"event {ev.event_id}", "neither the event nor its slate names a user")

    def finish(self) -> list[SlateFeedback]:
        """Settle what had to wait for the whole log; the slate examples."""
        out = []
        for slate_id, state in self.slates.items():
            if state.served is None:
                self.report.events_without_slate += state.events
            for ev, items in state.waiting:
                if state.served is not None and state.served.user_id:
                    self.add_rows(ev, items, state.served.user_id, state)
                else:
                    self.no_user(ev)
            if not (state.impressed and state.served):
                continue
            self.report.shown_slates += 1
            example = _example(slate_id, state)
            if example is not None:
                out.append(example)
                self.report.positives += len(example.positives)
                self.report.negatives += len(example.negatives)
        self.report.slate_examples = len(out)
        return out


def _invalid(rec: ServedSlate | FeedbackEvent) -> str:
    """Why a decoded record cannot be used ("" if it can): the decoder
    checks the fields' names, not their types."""
    if isinstance(rec.time, bool) or not isinstance(rec.time, (int, float)) or not math.isfinite(rec.time):
        return f"time {rec.time!r} is not a number of seconds"
    lists = [rec.items, rec.history] if isinstance(rec, ServedSlate) else [rec.items]
    if not all(isinstance(ids, list) and all(isinstance(i, str) for i in ids) for ids in lists):
        return "items and history must be lists of item ids"
    strings = [rec.slate_id, rec.user_id, rec.query] if isinstance(rec, ServedSlate) else [rec.slate_id, rec.user_id]
    if not all(isinstance(v, str) for v in strings):
        return "slate_id, user_id and query must be strings"
    if isinstance(rec, FeedbackEvent) and rec.type not in records.EVENT_TYPES:
        return f"unknown event type {str(rec.type)[:40]!r}"
    return ""


def _example(slate_id: str, state: _SlateState) -> SlateFeedback | None:
    """A shown slate's example; None when it says nothing (every shown item
    was taken by an event the filters exclude)."""
    served = state.served
    assert served is not None
    shown = [i for i in dict.fromkeys(served.items) if state.shown_whole or i in state.shown]
    positives = sorted((i for i in shown if i in state.taken), key=lambda i: state.taken[i])
    negatives = [i for i in dict.fromkeys(served.items)
                 if i not in state.taken_any and (i in state.dismissed or i in shown)]
    if not positives and not negatives:
        return None
    return SlateFeedback(slate_id, served.user_id or state.event_user, state.last_time, served.history,
                         served.query, tuple(positives), tuple(negatives))


def read_events(
    directories: Sequence[Path],
    item_index: Mapping[str, int],
    *,
    min_rating: float | None = None,
    event_types: Collection[str] | None = None,
    max_events_per_user: int | None = None,
    max_history: int = 20,
) -> FeedbackData:
    """Read feedback logs (several directories form one log) against a
    catalogue (``item_index``: id -> index). Raises :class:`InteractionsError`
    only when a directory cannot be read at all."""
    report = EventsReport([str(d) for d in directories])
    builder = SequenceBuilder(max_events_per_user)
    conv = _Converter(item_index, report, builder, min_rating,
                      frozenset(event_types) if event_types else None, max_history)
    for directory in directories:
        _read_directory(Path(directory), conv)
    slates = conv.finish()
    log = builder.build(ReadReport(", ".join(report.paths)))
    report.interactions_used = log.report.rows_used
    report.filtered.update(log.report.filtered)
    return FeedbackData(log, slates, report)


def _read_directory(directory: Path, conv: _Converter) -> None:
    if not directory.is_dir():
        raise InteractionsError(f"{directory}: not a feedback log directory")
    found = records.ReadReport()
    try:
        for rec in records.read_log(directory, found):
            conv.record(rec)
    except OSError as exc:
        raise InteractionsError(f"{directory}: read failed: {exc.strerror or exc}") from exc
    report = conv.report
    report.records += found.records
    report.undecodable += found.undecodable
    report.damaged_bytes += found.skipped_bytes
    for problem in found.first_problems:
        where, _, message = problem.partition(": ")
        report.note("unreadable", f"{directory}/{where}", message)


def before_holdout(slates: Sequence[SlateFeedback], log: InteractionLog,
                   split: Split) -> tuple[list[SlateFeedback], int]:
    """The slate examples that may train: (kept, how many were held out).

    ``split.train[u]`` is a prefix of ``log.sequence(u)``, so a user whose
    training sequence is shorter had the rest held out, from the time of
    the first event not kept; an example of that user at or after it would
    show the model what validation asks for."""
    cut: dict[str, float] = {}
    for u, seq in enumerate(split.train):
        start = int(log.offsets[u]) + len(seq)
        if start < int(log.offsets[u + 1]):
            cut[log.user_ids[u]] = float(log.timestamps[start])
    kept = [s for s in slates if s.time < cut.get(s.user_id, np.inf)]
    return kept, len(slates) - len(kept)
