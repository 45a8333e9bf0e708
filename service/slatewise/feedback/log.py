"""An embedded, append-only segment log: the durable home of feedback events.

Feedback becomes the next model's training data, and a client told "recorded"
must be able to rely on that: an event lost after its acknowledgement biases
the data without anyone noticing. So an append is acknowledged only once its
records are as durable as the fsync policy promises, and opening the log
repairs what a crash can leave behind.

On disk: a directory of segment files, each named by the sequence number of
its first record, zero-padded to 20 digits (``00000000000000000000.seg``), so
that names sort in log order and a record's sequence number is its segment's
plus its index there; nothing else has to be stored. A new segment starts when
the next record would take the current one past ``segment_bytes``. A segment
is a run of records, each a 9-byte little-endian header (``<BII``: format byte
0xA1, payload length, CRC-32 of the payload) followed by the payload. The
format byte makes a zero-filled tail (what some filesystems leave after a
crash) invalid at its first byte; length and CRC tell a complete record from a
torn or corrupt one.

Only the newest segment is ever written, so only its tail can be torn by a
crash: opening the log truncates it to its last valid record and says so.
Damage anywhere else happened at rest; readers skip it and report it rather
than stop there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import AsyncGenerator, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Literal

logger = logging.getLogger(__name__)

FsyncPolicy = Literal["always", "group", "never"]
"""When an append is acknowledged.

``always``: after a write and an fsync of its own, so throughput is one append
call per disk flush. ``group`` (the default): after an fsync that covers it and
every other append that arrived while the previous fsync ran; the same promise
as ``always`` for a fraction of the flushes when appends are concurrent.
``never``: once written to the OS. That survives the process being killed, but
not a power loss or kernel crash, which lose whatever the page cache had not
yet written back (on Linux up to ~30 s by default).
"""

DEFAULT_SEGMENT_BYTES = 64 << 20
MAX_RECORD_BYTES = 16 << 20
"""Larger records are refused, so a corrupt length field can never make a
reader allocate more than this."""
HEADER = struct.Struct("<BII")
MAGIC = 0xA1
SEGMENT_SUFFIX = ".seg"
_SEGMENT_NAME = re.compile(r"^(\d{20})\.seg$")
_READ_BUFFER = 256 << 10


class LogClosedError(RuntimeError):
    """An append after close()."""


class LogFailedError(RuntimeError):
    """A write or fsync failed.

    After a failed fsync the kernel may already have dropped the dirty pages,
    so a retry could report success for data that is gone (Linux does exactly
    that). The log therefore takes no more appends; reopening it re-reads the
    newest segment and truncates whatever did not make it.
    """


@dataclass(frozen=True)
class RecoveryReport:
    """What opening the log found at the end of its newest segment."""

    segment: Path
    valid_end: int
    """Offset just past the last valid record: where appending continues."""
    discarded_bytes: int
    records_recovered: int
    """Valid records in the newest segment."""
    reason: str | None
    """Why the tail was discarded, or None if the segment ended cleanly."""


@dataclass(frozen=True)
class Skip:
    """A stretch of a segment that a reader could not read, or a sequence gap."""

    segment: Path
    offset: int
    nbytes: int
    reason: str


@dataclass
class Skipped:
    """What a reader passed over, for its caller to report: totals, plus the
    first ``keep`` places so that a badly damaged log cannot grow this."""

    keep: int = 8
    count: int = 0
    nbytes: int = 0
    first: list[Skip] = field(default_factory=list)

    def add(self, skip: Skip) -> None:
        self.count += 1
        self.nbytes += skip.nbytes
        if len(self.first) < self.keep:
            self.first.append(skip)


def segment_path(directory: Path, first_seq: int) -> Path:
    return directory / f"{first_seq:020d}{SEGMENT_SUFFIX}"


def list_segments(directory: Path) -> list[int]:
    """The first sequence numbers of the segments in `directory`, ascending."""
    with os.scandir(directory) as entries:
        return sorted(int(m[1]) for e in entries if (m := _SEGMENT_NAME.match(e.name)))


@dataclass(frozen=True)
class _Stop:
    """Where a segment stops being readable, and why."""

    offset: int
    kind: Literal["end", "incomplete", "corrupt"]
    reason: str = ""


def _read_record(f: BinaryIO, offset: int) -> bytes | _Stop:
    """The payload of the record at `offset` (where `f` is positioned)."""
    header = f.read(HEADER.size)
    if not header:
        return _Stop(offset, "end")
    if len(header) < HEADER.size:
        return _Stop(offset, "incomplete", f"incomplete header ({len(header)} of {HEADER.size} bytes)")
    magic, length, crc = HEADER.unpack(header)
    if magic != MAGIC:
        return _Stop(offset, "corrupt", f"bad format byte 0x{magic:02x}")
    if length > MAX_RECORD_BYTES:
        return _Stop(offset, "corrupt", f"length {length} over the {MAX_RECORD_BYTES}-byte limit")
    payload = f.read(length)
    if len(payload) < length:
        return _Stop(offset, "incomplete", f"short payload ({len(payload)} of {length} bytes)")
    if zlib.crc32(payload) != crc:
        return _Stop(offset, "corrupt", "CRC mismatch")
    return payload


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@dataclass
class _Segment:
    """The newest segment, open for appending; the writer thread's alone."""

    fd: int
    first_seq: int
    size: int


def _create_segment(directory: Path, first_seq: int, *, durable: bool) -> _Segment:
    """A new, empty newest segment. Its directory entry is fsynced too: a file
    whose data was fsynced but whose name was not can still vanish in a crash."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
    fd = os.open(segment_path(directory, first_seq), flags, 0o644)
    if durable:
        _fsync_dir(directory)
    return _Segment(fd, first_seq, 0)


def _recover(path: Path) -> RecoveryReport:
    """Truncate a torn or corrupt tail off the newest segment, so that new
    records follow the last valid one instead of garbage that would hide them
    from every reader."""
    count, offset = 0, 0
    with open(path, "rb", buffering=_READ_BUFFER) as f:
        while isinstance(record := _read_record(f, offset), bytes):
            count += 1
            offset += HEADER.size + len(record)
        size = os.fstat(f.fileno()).st_size
    report = RecoveryReport(path, offset, size - offset, count, record.reason or None)
    if report.discarded_bytes:
        logger.warning("event log recovery: %s: %s at offset %d; discarded %d bytes, kept %d records",
                       path, report.reason, offset, report.discarded_bytes, count)
        with open(path, "r+b") as f:
            f.truncate(offset)
            os.fsync(f.fileno())
    return report


def _open_newest(directory: Path, *, durable: bool) -> tuple[_Segment, RecoveryReport]:
    if not directory.is_dir():
        directory.mkdir(parents=True, exist_ok=True)
        if durable:
            _fsync_dir(directory.parent)
    segments = list_segments(directory)
    if not segments:
        segment = _create_segment(directory, 0, durable=durable)
        return segment, RecoveryReport(segment_path(directory, 0), 0, 0, 0, None)
    path = segment_path(directory, segments[-1])
    report = _recover(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    return _Segment(fd, segments[-1], report.valid_end), report


@dataclass(eq=False)
class _Append:
    first_seq: int
    records: tuple[bytes, ...]
    future: asyncio.Future[int]
    arrived: float  # time.monotonic()


class EventLog:
    """The writing side of the log; create it with ``await EventLog.open(...)``.

    One writer thread does all file I/O, so the event loop never waits on the
    disk: ``append`` only enqueues under a lock that is never held across I/O,
    then awaits a future the thread resolves. Sequence numbers are assigned at
    enqueue time and the thread writes in that order, so concurrent appends
    never interleave and each caller's records keep their order.

    Cancelling an ``append`` does not withdraw its records: they are written
    anyway. A failed append (``LogFailedError``) may still have reached the
    disk, so the contract is at-least-once: a caller that retries may store
    duplicates, never lose an acknowledged record.

    One process may write a directory at a time; nothing here locks it.
    """

    def __init__(self, directory: Path, segment: _Segment, recovery: RecoveryReport, *,
                 fsync: FsyncPolicy, segment_bytes: int, group_commit_ms: float,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.directory = directory
        self.fsync_policy: FsyncPolicy = fsync
        self.segment_bytes = segment_bytes
        self.recovery = recovery
        self._group_wait_s = group_commit_ms / 1000
        self._last_fsync_s = self._group_wait_s  # the writer thread's, like _synced_at
        self._synced_at = 0.0
        self._loop = loop
        self._segment = segment
        self._next_seq = segment.first_seq + recovery.records_recovered  # guarded by _wakeup
        self._written_seq = self._next_seq  # the writer thread's
        self._pending: deque[_Append] = deque()
        self._closing = False
        self._failure: Exception | None = None
        self._wakeup = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"event-log:{directory.name}", daemon=True)
        self._thread.start()

    @classmethod
    async def open(cls, directory: str | os.PathLike[str], *, fsync: FsyncPolicy = "group",
                   segment_bytes: int = DEFAULT_SEGMENT_BYTES, group_commit_ms: float = 0.0) -> EventLog:
        """Open (or create) the log in `directory`, recovering its newest
        segment first (see ``recovery``). The log belongs to the running
        event loop: append from that loop only.

        ``group_commit_ms``: the longest an idle writer waits for more
        appends before its next fsync (``group`` policy only). A backlog is
        written at once, so this only delays appends that would otherwise
        have an fsync to themselves; and the wait never exceeds the last
        fsync's duration, since waiting longer than a second fsync would take
        costs more than it saves. 0 never waits.
        """
        if fsync not in ("always", "group", "never"):
            raise ValueError(f"fsync must be 'always', 'group' or 'never', not {fsync!r}")
        if segment_bytes <= 0 or group_commit_ms < 0:
            raise ValueError("segment_bytes must be positive and group_commit_ms not negative")
        path = Path(directory)
        segment, recovery = await asyncio.to_thread(_open_newest, path, durable=fsync != "never")
        return cls(path, segment, recovery, fsync=fsync, segment_bytes=segment_bytes,
                   group_commit_ms=group_commit_ms, loop=asyncio.get_running_loop())

    @property
    def next_seq(self) -> int:
        """The sequence number the next appended record will get."""
        with self._wakeup:
            return self._next_seq

    async def append(self, records: Sequence[bytes]) -> int:
        """Append `records` in order; return the first one's sequence number
        once all are durable under the fsync policy."""
        if isinstance(records, (bytes, bytearray)):
            raise TypeError("append takes a sequence of records, e.g. [payload]")
        batch = tuple(records)
        if not batch:
            raise ValueError("append needs at least one record")
        for record in batch:
            if not isinstance(record, bytes):
                raise TypeError(f"records must be bytes, not {type(record).__name__}")
            if len(record) > MAX_RECORD_BYTES:
                raise ValueError(f"a record of {len(record)} bytes is over the {MAX_RECORD_BYTES}-byte limit")
        if asyncio.get_running_loop() is not self._loop:
            raise RuntimeError("append from the event loop that opened the log")
        future: asyncio.Future[int] = self._loop.create_future()
        with self._wakeup:
            self._check_open()
            self._pending.append(_Append(self._next_seq, batch, future, time.monotonic()))
            self._next_seq += len(batch)
            self._wakeup.notify()
        return await future

    async def close(self) -> None:
        """Write and fsync everything pending (whatever the policy), then stop
        the writer thread. Raises ``LogFailedError`` if the log has failed,
        since then not everything is durable."""
        with self._wakeup:
            self._closing = True
            self._wakeup.notify()
        await asyncio.to_thread(self._thread.join)
        if self._failure is not None:
            raise self._failed_error()

    async def __aenter__(self) -> EventLog:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._failure is not None:
            raise self._failed_error()
        if self._closing:
            raise LogClosedError(f"event log {self.directory} is closed")

    def _failed_error(self) -> LogFailedError:
        error = LogFailedError(f"event log {self.directory} failed ({self._failure}); reopen it to recover")
        error.__cause__ = self._failure
        return error

    # The writer thread.

    def _run(self) -> None:
        batch: list[_Append] = []
        try:
            while batch := self._take():
                self._write(batch)
                self._settle_threadsafe(batch, ok=True)
            os.fsync(self._segment.fd)
        except Exception as exc:  # noqa: BLE001 - any failure stops the log; appenders are told
            logger.error("event log %s failed: %r", self.directory, exc)
            with self._wakeup:
                self._failure = exc
                batch += self._pending
                self._pending.clear()
            self._settle_threadsafe(batch, ok=False)
        finally:
            os.close(self._segment.fd)

    def _take(self) -> list[_Append]:
        """The next appends to write together; [] once closed and drained."""
        with self._wakeup:
            self._wakeup.wait_for(lambda: self._pending or self._closing)
            if not self._pending:
                return []
            if (self.fsync_policy == "group" and self._group_wait_s
                    and self._pending[0].arrived > self._synced_at):
                # Nothing waited through the last fsync, so this append would
                # get an fsync to itself; company arriving meanwhile shares it.
                wait = min(self._group_wait_s, self._last_fsync_s)
                self._wakeup.wait_for(lambda: self._closing, timeout=wait)
            if self.fsync_policy == "always":
                return [self._pending.popleft()]
            batch = list(self._pending)
            self._pending.clear()
            return batch

    def _write(self, batch: list[_Append]) -> None:
        """One write and (policy permitting) one fsync per segment touched."""
        chunk: list[bytes] = []
        chunk_bytes = 0
        for item in batch:
            for payload in item.records:
                size = HEADER.size + len(payload)
                filled = self._segment.size + chunk_bytes
                if filled and filled + size > self.segment_bytes:
                    self._flush(chunk, chunk_bytes)
                    chunk, chunk_bytes = [], 0
                    self._rotate()
                chunk += (HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)), payload)
                chunk_bytes += size
                self._written_seq += 1
        self._flush(chunk, chunk_bytes)

    def _flush(self, chunk: list[bytes], nbytes: int) -> None:
        _write_all(self._segment.fd, b"".join(chunk))
        self._segment.size += nbytes
        if self.fsync_policy != "never":
            start = time.monotonic()
            os.fsync(self._segment.fd)
            self._synced_at = time.monotonic()
            self._last_fsync_s = self._synced_at - start

    def _rotate(self) -> None:
        new = _create_segment(self.directory, self._written_seq, durable=self.fsync_policy != "never")
        os.close(self._segment.fd)
        self._segment = new

    def _settle_threadsafe(self, batch: list[_Append], *, ok: bool) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._settle, batch, ok)

    def _settle(self, batch: list[_Append], ok: bool) -> None:
        for item in batch:
            if item.future.done():  # its caller was cancelled; the records stand
                continue
            if ok:
                item.future.set_result(item.first_seq)
            else:
                item.future.set_exception(self._failed_error())


class LogReader:
    """Reads a log's records in order, safely beside a live writer.

    The newest segment may be mid-append, so a record cut short at its end is
    "not written yet": iteration ends there, and the next iteration resumes
    from it (so one reader can poll, or ``follow``). A segment that has a
    successor is complete, so anything unreadable in it is damage: it goes to
    ``skipped`` (and the log) and reading continues with the next segment,
    because one bad sector should not hide the rest of the log. Reading
    streams: memory is one buffer and one record.

    Iteration does blocking file I/O; from async code use ``follow`` or a
    worker thread.
    """

    def __init__(self, directory: str | os.PathLike[str], *, start_seq: int = 0,
                 skipped: Skipped | None = None) -> None:
        self.directory = Path(directory)
        self.skipped = skipped if skipped is not None else Skipped()
        self._start_seq = start_seq
        self._file: BinaryIO | None = None
        self._path = Path()
        self._first_seq = 0
        self._offset = 0
        self._seq = 0
        self._last_skip: tuple[Path, int] | None = None

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """(sequence number, payload) for every record written so far, from
        where the previous iteration ended."""
        if self._file is None and not self._open_first():
            return
        while True:
            stop = yield from self._records()
            successor = next((s for s in list_segments(self.directory) if s > self._first_seq), None)
            if successor is None:
                if stop.kind == "corrupt":  # complete but wrong: no writer will fix that
                    self._skip(stop.offset, self._size() - stop.offset, stop.reason)
                return
            # The writer moves on only once it is done with a segment, so this
            # one is complete now: read what arrived since, then judge its end.
            stop = yield from self._records()
            if stop.kind != "end":
                self._skip(stop.offset, self._size() - stop.offset, stop.reason)
            elif successor != self._seq:
                self._skip(stop.offset, 0, f"sequence jumps from {self._seq} to {successor}")
            self._open(successor)

    async def follow(self, *, poll_s: float = 0.05, batch: int = 1024) -> AsyncGenerator[tuple[int, bytes], None]:
        """Records as they are appended, forever; reading runs in a worker thread."""
        while True:
            records = await asyncio.to_thread(lambda: list(islice(self, batch)))
            for record in records:
                yield record
            if not records:
                await asyncio.sleep(poll_s)

    def close(self) -> None:
        """Release the open segment; a later iteration starts over."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> LogReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _records(self) -> Generator[tuple[int, bytes], None, _Stop]:
        assert self._file is not None
        f = self._file
        f.seek(self._offset)
        while isinstance(record := _read_record(f, self._offset), bytes):
            seq = self._seq
            self._offset += HEADER.size + len(record)  # before yielding, so an abandoned
            self._seq += 1  # iteration resumes after the last record it handed out
            if seq >= self._start_seq:
                yield seq, record
        return record

    def _open_first(self) -> bool:
        segments = list_segments(self.directory)
        if not segments:
            return False
        self._open(max((s for s in segments if s <= self._start_seq), default=segments[0]))
        return True

    def _open(self, first_seq: int) -> None:
        self.close()
        self._path = segment_path(self.directory, first_seq)
        self._file = open(self._path, "rb", buffering=_READ_BUFFER)  # noqa: SIM115 - kept across iterations
        self._first_seq = self._seq = first_seq
        self._offset = 0

    def _size(self) -> int:
        assert self._file is not None
        return os.fstat(self._file.fileno()).st_size

    def _skip(self, offset: int, nbytes: int, reason: str) -> None:
        if self._last_skip == (self._path, offset):  # already reported while this was the newest segment
            return
        self._last_skip = (self._path, offset)
        logger.warning("event log reader: skipped %d bytes at offset %d of %s: %s",
                       nbytes, offset, self._path, reason)
        self.skipped.add(Skip(self._path, offset, nbytes, reason))


def read_records(directory: str | os.PathLike[str], *, start_seq: int = 0,
                 skipped: Skipped | None = None) -> Iterator[tuple[int, bytes]]:
    """(sequence number, payload) for the records written so far, from
    `start_seq` on; what had to be skipped is added to `skipped`."""
    with LogReader(directory, start_seq=start_seq, skipped=skipped) as reader:
        yield from reader
