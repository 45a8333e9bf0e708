"""The server's side of the feedback loop: which slates were served, which
events were already taken, and the sink both go to.

Every served slate is appended (and durable) before its final message
leaves the server, so any slate a caller can report on is in the log, even
across a crash. Events are checked against the slate they name (items,
positions, time) so that the log a model is trained on says what was
really shown; valid events of a batch are kept even when others are bad.
Both indexes (slates for validation, event ids for idempotency) are bounded
windows, rebuilt from the log at start, so a restart changes nothing a
caller can observe within them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from slatewise.config import Settings
from slatewise.feedback.records import EVENT_TYPES, FeedbackEvent, ReadReport, ServedSlate, read_log
from slatewise.feedback.sinks import Sink
from slatewise.metrics import Metrics

log = logging.getLogger(__name__)
MAX_ID_CHARS = 128


@dataclass(frozen=True)
class IncomingEvent:
    """One event as the caller sent it (the API layer's conversion of the proto)."""

    event_id: str
    slate_id: str
    type: str  # one of EVENT_TYPES, or "" when unspecified
    item_ids: Sequence[str]
    positions: Sequence[int]
    timestamp: float
    user_id: str


@dataclass(frozen=True)
class ReportResult:
    accepted: int
    duplicates: int
    violations: list[tuple[str, str]]


class _Window:
    """An insertion-ordered map that forgets its oldest keys beyond ``size``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data: OrderedDict = OrderedDict()

    def put(self, key, value=None) -> None:
        self.data[key] = value
        self.data.move_to_end(key)
        if len(self.data) > self.size:
            self.data.popitem(last=False)

    def __contains__(self, key) -> bool:
        return key in self.data

    def get(self, key):
        return self.data.get(key)

    def discard(self, key) -> None:
        self.data.pop(key, None)


class FeedbackStore:
    def __init__(self, sink: Sink, settings: Settings, metrics: Metrics) -> None:
        self.sink = sink
        self.settings = settings
        self.metrics = metrics
        self.slates = _Window(settings.feedback_slate_window)  # slate_id -> items
        self.seen = _Window(settings.feedback_dedup_window)  # event ids appended or in flight

    @classmethod
    async def open(cls, settings: Settings, metrics: Metrics) -> FeedbackStore:
        """The configured sink, with both windows rebuilt from the log."""
        from slatewise.feedback.sinks import KafkaSink, LogSink

        if settings.feedback_sink == "kafka":
            sink: Sink = await KafkaSink.connect(settings.kafka_bootstrap_servers, settings.kafka_topic)
            return cls(sink, settings, metrics)
        from slatewise.feedback.log import EventLog

        assert settings.feedback_dir is not None
        t0 = time.monotonic()
        event_log = await EventLog.open(settings.feedback_dir, fsync=settings.feedback_fsync,
                                        segment_bytes=settings.feedback_segment_bytes)
        store = cls(LogSink(event_log), settings, metrics)
        # A torn tail was cut and reported by EventLog.open (segment, offset, bytes).
        report = await asyncio.to_thread(store._rebuild, ReadReport())
        log.info("feedback log %s: %d records (%d slates, %d event ids remembered) in %.1fs",
                 settings.feedback_dir, report.records, len(store.slates.data), len(store.seen.data),
                 time.monotonic() - t0)
        if report.undecodable or report.skipped_bytes:
            log.warning("feedback log %s: %d undecodable records, %d damaged bytes skipped: %s",
                        settings.feedback_dir, report.undecodable, report.skipped_bytes,
                        "; ".join(report.first_problems))
        return store

    def _rebuild(self, report: ReadReport) -> ReadReport:
        assert self.settings.feedback_dir is not None
        for record in read_log(self.settings.feedback_dir, report):
            if isinstance(record, ServedSlate):
                self.slates.put(record.slate_id, tuple(record.items))
            else:
                self.seen.put(record.event_id)
        return report

    async def close(self) -> None:
        await self.sink.close()

    # ---- served slates ---------------------------------------------------------
    def slate_id_taken(self, slate_id: str) -> bool:
        return slate_id in self.slates

    async def record_slate(self, slate: ServedSlate) -> None:
        """Durable before the caller gets the slate: it can only report on what is logged."""
        self.slates.put(slate.slate_id, tuple(slate.items))
        t0 = time.perf_counter()
        await self.sink.append([slate.encode()])
        self.metrics.feedback_append_seconds.observe(time.perf_counter() - t0)

    # ---- events ----------------------------------------------------------------
    def _check(self, i: int, ev: IncomingEvent, now: float, out: list[tuple[str, str]]) -> FeedbackEvent | None:
        """The event as logged, or None with its problems added to ``out``."""
        before = len(out)
        where = f"events[{i}]"
        if not ev.event_id:
            out.append((f"{where}.event_id", "must not be empty"))
        elif len(ev.event_id) > MAX_ID_CHARS:
            out.append((f"{where}.event_id", f"is {len(ev.event_id)} characters, the limit is {MAX_ID_CHARS}"))
        if ev.type not in EVENT_TYPES:
            out.append((f"{where}.type", "must be IMPRESSION, CLICK, ADD_TO_CART, PURCHASE or DISMISS"))
        items = self.slates.get(ev.slate_id) if ev.slate_id else None
        if not ev.slate_id:
            out.append((f"{where}.slate_id", "must not be empty"))
        elif items is None:
            out.append((f"{where}.slate_id", f"unknown slate {ev.slate_id[:64]!r} (not served here, or older "
                                              f"than the last {self.slates.size} slates)"))
        if not math.isfinite(ev.timestamp) or ev.timestamp < 0:
            out.append((f"{where}.timestamp", "must be seconds since the epoch (0 = now)"))
        elif ev.timestamp > now + self.settings.feedback_max_future_seconds:
            out.append((f"{where}.timestamp", f"is {ev.timestamp - now:.0f} s in the future, the limit is "
                                              f"{self.settings.feedback_max_future_seconds:g} s"))
        if len(ev.user_id) > MAX_ID_CHARS:
            out.append((f"{where}.user_id", f"is {len(ev.user_id)} characters, the limit is {MAX_ID_CHARS}"))
        if ev.positions and len(ev.positions) != len(ev.item_ids):
            out.append((f"{where}.positions", f"has {len(ev.positions)} entries for {len(ev.item_ids)} item_ids"))
        if ev.type and ev.type != "impression" and not ev.item_ids:
            out.append((f"{where}.item_ids", "must name the item(s) the event is about"))
        if items is not None:
            for j, item in enumerate(ev.item_ids):
                if item not in items:
                    out.append((f"{where}.item_ids[{j}]", f"{item[:64]!r} is not in slate {ev.slate_id[:64]!r}"))
                elif ev.positions and j < len(ev.positions) and items[ev.positions[j]:ev.positions[j] + 1] != (item,):
                    out.append((f"{where}.positions[{j}]",
                                f"{item[:64]!r} is at position {items.index(item)}, not {ev.positions[j]}"))
        if len(out) > before or items is None:
            return None
        shown = list(ev.item_ids) or list(items)
        positions = list(ev.positions) if ev.positions else [items.index(it) for it in shown]
        return FeedbackEvent(event_id=ev.event_id, slate_id=ev.slate_id, type=ev.type,
                             time=ev.timestamp or now, items=shown, positions=positions, user_id=ev.user_id)

    async def report(self, events: Sequence[IncomingEvent]) -> ReportResult:
        if len(events) > self.settings.feedback_max_batch:
            self.metrics.feedback_events.labels("invalid").inc(len(events))
            return ReportResult(0, 0, [("events", f"has {len(events)} events, the limit is "
                                                  f"{self.settings.feedback_max_batch}")])
        now = time.time()
        violations: list[tuple[str, str]] = []
        fresh: list[FeedbackEvent] = []
        duplicates = invalid = 0
        for i, ev in enumerate(events):
            checked = self._check(i, ev, now, violations)
            if checked is None:
                invalid += 1
            elif checked.event_id in self.seen:
                duplicates += 1
            else:
                self.seen.put(checked.event_id)  # in flight: a concurrent retry is a duplicate too
                fresh.append(checked)
        if fresh:
            t0 = time.perf_counter()
            try:
                await self.sink.append([ev.encode() for ev in fresh])
            except BaseException:
                for ev in fresh:  # not durable: a retry must be able to append them
                    self.seen.discard(ev.event_id)
                raise
            self.metrics.feedback_append_seconds.observe(time.perf_counter() - t0)
        self.metrics.feedback_events.labels("accepted").inc(len(fresh))
        self.metrics.feedback_events.labels("duplicate").inc(duplicates)
        self.metrics.feedback_events.labels("invalid").inc(invalid)
        return ReportResult(len(fresh), duplicates, violations)
