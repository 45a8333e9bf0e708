"""The feedback event log: round trips, concurrency, each fsync policy's
promise, recovery from torn and corrupt data, readers beside a live writer,
a writer killed mid-append, and the sinks (Kafka through a fake producer)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

from slatewise.feedback import log as log_module
from slatewise.feedback.log import (
    HEADER,
    MAGIC,
    MAX_RECORD_BYTES,
    EventLog,
    LogClosedError,
    LogFailedError,
    LogReader,
    Skip,
    Skipped,
    list_segments,
    read_records,
    segment_path,
)
from slatewise.feedback.sinks import KafkaSink, LogSink, Sink

REPO = Path(__file__).resolve().parents[2]
POLICIES = ["always", "group", "never"]


def records_in(path: Path) -> int:
    """How many records a segment holds, walking its headers."""
    data, offset, count = path.read_bytes(), 0, 0
    while offset < len(data):
        _, length, _ = HEADER.unpack_from(data, offset)
        offset += HEADER.size + length
        count += 1
    assert offset == len(data)
    return count


class Fsyncs:
    """Records every fsync as (path, size of the file at that moment)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Path, int]] = []
        self.real = os.fsync
        self.delay_s = 0.0  # a slower disk

    def __call__(self, fd: int) -> None:
        time.sleep(self.delay_s)
        self.real(fd)
        self.calls.append((Path(os.readlink(f"/proc/self/fd/{fd}")), os.fstat(fd).st_size))

    def synced_size(self, path: Path) -> int:
        return max((size for p, size in self.calls if p == path.resolve()), default=0)

    def count(self, path: Path) -> int:
        return sum(p == path.resolve() for p, _ in self.calls)


@pytest.fixture
def fsyncs(monkeypatch) -> Fsyncs:
    spy = Fsyncs()
    monkeypatch.setattr(os, "fsync", spy)
    return spy


async def test_round_trip_across_segments_and_a_reopen(tmp_path):
    rng = random.Random(7)
    records = [rng.randbytes(rng.randint(0, 300)) for _ in range(3000)]
    log = await EventLog.open(tmp_path, segment_bytes=8192)
    firsts = [await log.append(records[i:i + 50]) for i in range(0, 2000, 50)]
    assert firsts == list(range(0, 2000, 50))
    await log.close()

    log = await EventLog.open(tmp_path, segment_bytes=8192)
    assert (log.recovery.discarded_bytes, log.recovery.reason, log.next_seq) == (0, None, 2000)
    assert await log.append(records[2000:]) == 2000
    await log.close()

    assert list(read_records(tmp_path)) == list(enumerate(records))
    assert list(read_records(tmp_path, start_seq=1234)) == list(enumerate(records))[1234:]
    segments = list_segments(tmp_path)
    assert len(segments) > 20 and segments[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [segment_path(tmp_path, s).name for s in segments]
    for first, successor in zip(segments, [*segments[1:], len(records)]):
        path = segment_path(tmp_path, first)
        assert path.stat().st_size <= 8192
        assert records_in(path) == successor - first  # the name is the first record's number


@pytest.mark.parametrize("policy", POLICIES)
async def test_concurrent_appends_neither_lose_nor_interleave(tmp_path, policy):
    log = await EventLog.open(tmp_path, fsync=policy, segment_bytes=16384)

    async def writer(w: int) -> list[tuple[int, list[bytes]]]:
        acks = []
        for i in range(25):
            batch = [f"<{w}:{i}:{k}>".encode() * (1 + k) for k in range(1 + (w + i) % 4)]
            acks.append((await log.append(batch), batch))
        return acks

    results = await asyncio.gather(*(writer(w) for w in range(16)))
    await log.close()
    stored = dict(read_records(tmp_path))
    total = sum(len(batch) for acks in results for _, batch in acks)
    assert sorted(stored) == list(range(total))
    for acks in results:
        firsts = [first for first, _ in acks]
        assert firsts == sorted(firsts)  # each coroutine's appends keep their order
        for first, batch in acks:
            assert [stored[first + k] for k in range(len(batch))] == batch


@pytest.mark.parametrize("policy", POLICIES)
async def test_each_policy_acknowledges_only_what_it_promises(tmp_path, fsyncs, policy):
    log = await EventLog.open(tmp_path, fsync=policy, group_commit_ms=5)
    segment = segment_path(tmp_path, 0)
    frame = HEADER.size + 64
    at_ack: list[int] = []

    async def one(i: int) -> None:
        first = await log.append([bytes([i]) * 64])
        assert first == i
        at_ack.append(fsyncs.synced_size(segment) - (first + 1) * frame)

    await asyncio.gather(*(one(i) for i in range(40)))
    synced_before_close = fsyncs.count(segment)
    await log.close()

    if policy == "never":
        assert synced_before_close == 0
    else:  # every record was covered by an fsync before its append returned
        assert min(at_ack) >= 0
    if policy == "always":
        assert synced_before_close == 40
    if policy == "group":
        assert 1 <= synced_before_close <= 10  # 40 concurrent appends share a few fsyncs
    assert fsyncs.synced_size(segment) == 40 * frame  # close() makes everything durable
    assert [p for _, p in read_records(tmp_path)] == [bytes([i]) * 64 for i in range(40)]


@pytest.mark.parametrize(("wait_ms", "fsync_s", "shared"), [(300, 0.2, True), (300, 0, False), (0, 0.2, False)])
async def test_an_idle_group_writer_waits_for_company_no_longer_than_an_fsync(tmp_path, fsyncs, wait_ms, fsync_s,
                                                                              shared):
    log = await EventLog.open(tmp_path, fsync="group", group_commit_ms=wait_ms)
    fsyncs.delay_s = fsync_s
    await log.append([b"warm-up"])  # the writer learns how long an fsync takes
    before = fsyncs.count(segment_path(tmp_path, 0))
    first = asyncio.ensure_future(log.append([b"first"]))
    await asyncio.sleep(0.05)
    assert await log.append([b"second"]) == 2 and await first == 1
    assert fsyncs.count(segment_path(tmp_path, 0)) - before == (1 if shared else 2)
    await log.close()


@pytest.mark.parametrize("policy", POLICIES)
async def test_a_new_segment_is_made_durable_in_its_directory(tmp_path, fsyncs, policy):
    log = await EventLog.open(tmp_path / "log", fsync=policy, segment_bytes=1024)
    for i in range(20):
        await log.append([bytes(100)])
    await log.close()
    assert len(list_segments(tmp_path / "log")) >= 2
    dir_syncs = fsyncs.count(tmp_path / "log")
    assert dir_syncs == (0 if policy == "never" else len(list_segments(tmp_path / "log")))
    assert fsyncs.count(tmp_path) == (0 if policy == "never" else 1)  # the new log directory itself


DAMAGE = {
    "mid_header": lambda data, frame: data[:9 * frame + 4],
    "mid_payload": lambda data, frame: data[:9 * frame + HEADER.size + 50],
    "flipped_byte": lambda data, frame: data[:-1] + bytes([data[-1] ^ 0x01]),
    "zero_filled": lambda data, frame: data + bytes(4096),  # size grew, data never landed
}


@pytest.mark.parametrize("damage", DAMAGE)
async def test_a_torn_or_corrupt_tail_is_cut_and_appending_continues(tmp_path, caplog, damage):
    log = await EventLog.open(tmp_path)
    await log.append([bytes([i]) * 100 for i in range(10)])
    await log.close()
    segment = segment_path(tmp_path, 0)
    frame = HEADER.size + 100
    damaged = DAMAGE[damage](segment.read_bytes(), frame)
    segment.write_bytes(damaged)
    kept = 10 if damage == "zero_filled" else 9

    # Before recovery a reader stops at the tail: silently where the record is
    # merely incomplete (it may still be being written), reporting it where
    # the bytes are all there but wrong.
    skipped = Skipped()
    assert len(list(read_records(tmp_path, skipped=skipped))) == kept
    incomplete = damage in ("mid_header", "mid_payload")
    assert skipped.count == (0 if incomplete else 1)

    log = await EventLog.open(tmp_path)
    report = log.recovery
    assert (report.segment, report.valid_end, report.records_recovered) == (segment, kept * frame, kept)
    assert report.discarded_bytes == len(damaged) - kept * frame > 0
    assert report.reason and "discarded" in caplog.text and str(segment) in caplog.text
    assert segment.stat().st_size == kept * frame
    assert await log.append([b"after"]) == kept
    await log.close()
    assert list(read_records(tmp_path)) == [*((i, bytes([i]) * 100) for i in range(kept)), (kept, b"after")]


SEALED_DAMAGE = ["flipped_byte", "truncated", "deleted"]


@pytest.mark.parametrize("damage", SEALED_DAMAGE)
async def test_damage_in_a_sealed_segment_is_skipped_and_reported(tmp_path, caplog, damage):
    records = [bytes([i]) * 100 for i in range(100)]
    log = await EventLog.open(tmp_path, segment_bytes=2048)
    await log.append(records)
    await log.close()
    segments = list_segments(tmp_path)
    assert len(segments) >= 4
    victim, frame = segment_path(tmp_path, segments[1]), HEADER.size + 100
    data = victim.read_bytes()
    if damage == "flipped_byte":
        victim.write_bytes(data[:3 * frame + 20] + bytes([data[3 * frame + 20] ^ 0x80]) + data[3 * frame + 21:])
        lost, expected = range(segments[1] + 3, segments[2]), Skip(victim, 3 * frame, len(data) - 3 * frame, "CRC mismatch")
    elif damage == "truncated":
        victim.write_bytes(data[:3 * frame + 20])
        lost = range(segments[1] + 3, segments[2])
        expected = Skip(victim, 3 * frame, 20, "short payload (11 of 100 bytes)")
    else:
        victim.unlink()
        lost = range(segments[1], segments[2])
        expected = Skip(segment_path(tmp_path, segments[0]), segments[1] * frame, 0,
                        f"sequence jumps from {segments[1]} to {segments[2]}")

    skipped = Skipped()
    stored = dict(read_records(tmp_path, skipped=skipped))
    assert sorted(stored) == [s for s in range(100) if s not in lost]
    assert all(stored[s] == records[s] for s in stored)  # numbering survives the damage
    assert (skipped.count, skipped.first) == (1, [expected])
    assert "skipped" in caplog.text

    log = await EventLog.open(tmp_path, segment_bytes=2048)  # the writer only recovers the newest segment
    assert log.recovery.discarded_bytes == 0
    assert await log.append([b"more"]) == 100
    await log.close()


async def test_a_reader_beside_a_live_writer_sees_only_prefixes(tmp_path):
    def content(seq: int) -> bytes:
        return f"record-{seq}|".encode() * (1 + seq % 9)

    total = 3000
    log = await EventLog.open(tmp_path, segment_bytes=4096, group_commit_ms=0)
    writer_done = threading.Event()

    def read_while_writing() -> tuple[list[int], int]:
        lengths, follower, followed = [], LogReader(tmp_path), 0
        while True:
            finished = writer_done.is_set()  # before reading, so the last pass sees everything
            skipped = Skipped()
            seen = list(read_records(tmp_path, skipped=skipped))
            assert [s for s, _ in seen] == list(range(len(seen)))
            assert all(payload == content(seq) for seq, payload in seen)
            assert skipped.count == 0 and follower.skipped.count == 0
            lengths.append(len(seen))
            for seq, payload in follower:  # one reader resuming where it stopped
                assert (seq, payload) == (followed, content(followed))
                followed += 1
            if finished:
                follower.close()
                return lengths, followed

    reading = asyncio.ensure_future(asyncio.to_thread(read_while_writing))
    try:
        seq = 0
        while seq < total:
            n = min(1 + seq % 7, total - seq)
            assert await log.append([content(s) for s in range(seq, seq + n)]) == seq
            seq += n
        await log.close()
    finally:
        writer_done.set()  # the reader's last pass; it would wait forever otherwise
    lengths, followed = await reading
    assert lengths[-1] == followed == total
    assert any(0 < n < total for n in lengths)  # some passes really ran mid-write
    assert len(list_segments(tmp_path)) > 10


def frame(payload: bytes) -> bytes:
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def test_a_segment_finished_just_before_rotating_is_read_to_its_end(tmp_path, monkeypatch):
    """The race a reader must survive: it stops at a half-written record in
    the newest segment; before it looks for a successor, the writer completes
    the record and rotates. The segment is sealed now, and its last record
    is neither lost nor reported as torn."""
    newest = segment_path(tmp_path, 0)
    newest.write_bytes(frame(b"r0") + frame(b"r1")[:5])
    listings = 0

    def listing_after_the_writer_moved_on(directory: Path) -> list[int]:
        nonlocal listings
        listings += 1
        if listings == 2:  # the first is the reader finding where to start
            with newest.open("ab") as f:
                f.write(frame(b"r1")[5:])
            segment_path(tmp_path, 2).write_bytes(frame(b"r2"))
        return list_segments(directory)

    monkeypatch.setattr(log_module, "list_segments", listing_after_the_writer_moved_on)
    skipped = Skipped()
    assert list(read_records(tmp_path, skipped=skipped)) == [(0, b"r0"), (1, b"r1"), (2, b"r2")]
    assert listings >= 2 and skipped.count == 0


async def test_follow_tails_the_log(tmp_path):
    log = await EventLog.open(tmp_path, segment_bytes=512)
    expected = [(i, f"event {i}".encode()) for i in range(120)]
    reader = LogReader(tmp_path, start_seq=5)

    async def tail() -> list[tuple[int, bytes]]:
        got = []
        async with contextlib.aclosing(reader.follow(poll_s=0.005, batch=16)) as records:
            async for record in records:
                got.append(record)
                if len(got) == len(expected) - 5:
                    return got
        return got

    tailing = asyncio.ensure_future(tail())
    for i in range(0, 120, 8):
        await log.append([p for _, p in expected[i:i + 8]])
        await asyncio.sleep(0.002)
    assert await asyncio.wait_for(tailing, 10) == expected[5:]
    reader.close()
    await log.close()


async def test_appends_after_close_or_malformed_are_refused(tmp_path):
    log = await EventLog.open(tmp_path)
    for bad, error in [([], ValueError), (b"raw bytes", TypeError), (["text"], TypeError),
                       ([bytes(MAX_RECORD_BYTES + 1)], ValueError)]:
        with pytest.raises(error):
            await log.append(bad)
    assert await log.append([b"kept"]) == 0
    await log.close()
    with pytest.raises(LogClosedError, match="closed"):
        await log.append([b"late"])
    await log.close()  # closing twice is harmless
    assert list(read_records(tmp_path)) == [(0, b"kept")]


async def test_a_failed_fsync_stops_the_log(tmp_path, monkeypatch):
    log = await EventLog.open(tmp_path)
    assert await log.append([b"durable"]) == 0

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "simulated I/O error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(LogFailedError, match="simulated I/O error"):
        await log.append([b"unknown fate"])
    with pytest.raises(LogFailedError):  # no retrying past a failed fsync
        await log.append([b"refused"])
    with pytest.raises(LogFailedError):
        await log.close()
    monkeypatch.undo()
    log = await EventLog.open(tmp_path)
    await log.close()
    assert [p for _, p in read_records(tmp_path)][:1] == [b"durable"]
    assert b"refused" not in [p for _, p in read_records(tmp_path)]


KILLED_WRITER = r"""
import asyncio, sys
from slatewise.feedback.log import EventLog

async def main(directory, policy):
    log = await EventLog.open(directory, fsync=policy, segment_bytes=32768)

    async def writer(w):
        i = 0
        while True:
            batch = [f"<{w}:{i}:{k}>".encode() * 8 for k in range(1 + i % 3)]
            first = await log.append(batch)
            print(w, i, first, len(batch), flush=True)
            i += 1

    await asyncio.gather(*(writer(w) for w in range(4)))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.mark.parametrize("policy", POLICIES)
def test_records_acknowledged_before_a_kill_survive_it(tmp_path, policy):
    directory = tmp_path / "log"
    stderr = (tmp_path / "stderr").open("w")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(directory), policy],
                            stdout=subprocess.PIPE, stderr=stderr, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO / "service")})
    assert proc.stdout is not None
    try:
        first_line = proc.stdout.readline()  # the first acknowledgement (or "" if it died)
        time.sleep(0.5)
        proc.kill()
        out = proc.stdout.read()  # not communicate(timeout=...): it would skip what readline() buffered
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr.close()
    assert first_line, (tmp_path / "stderr").read_text()
    assert proc.returncode == -9
    acks = [line.split() for line in (first_line + out).split("\n")[:-1]]  # the last may be cut off

    skipped = Skipped()
    stored = dict(read_records(directory, skipped=skipped))
    assert skipped.count == 0
    assert len(acks) > 50
    for w, i, first, n in acks:
        for k in range(int(n)):
            assert stored[int(first) + k] == f"<{w}:{i}:{k}>".encode() * 8

    async def reopen_and_append() -> None:
        log = await EventLog.open(directory)  # a torn tail, if any, is cut
        await log.append([b"after the kill"])
        await log.close()

    asyncio.run(reopen_and_append())
    assert list(read_records(directory))[-1][1] == b"after the kill"


# Sinks.


async def test_the_log_sink_is_a_sink(tmp_path):
    sink: Sink = LogSink(await EventLog.open(tmp_path))
    await sink.append([b"a", b"b"])
    await sink.close()
    with pytest.raises(LogClosedError):
        await sink.append([b"c"])
    assert list(read_records(tmp_path)) == [(0, b"a"), (1, b"b")]


class FakeProducer:
    """Stands in for aiokafka's producer: send() queues, the test acks."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, asyncio.Future[object]]] = []
        self.stopped = False

    async def send(self, topic: str, value: bytes) -> asyncio.Future[object]:
        ack: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, value, ack))
        return ack

    async def stop(self) -> None:
        self.stopped = True


async def test_the_kafka_sink_returns_only_once_the_broker_acks():
    producer = FakeProducer()
    sink: Sink = KafkaSink(producer, "feedback")
    appending = asyncio.ensure_future(sink.append([b"x", b"y"]))
    for _ in range(5):
        await asyncio.sleep(0)
    assert [(t, v) for t, v, _ in producer.sent] == [("feedback", b"x"), ("feedback", b"y")]
    producer.sent[0][2].set_result("x acked")
    await asyncio.sleep(0)
    assert not appending.done()  # y is not acknowledged yet
    producer.sent[1][2].set_result("y acked")
    await asyncio.wait_for(appending, 1)

    failing = asyncio.ensure_future(sink.append([b"z"]))
    for _ in range(5):
        await asyncio.sleep(0)
    producer.sent[2][2].set_exception(ConnectionError("not enough in-sync replicas"))
    with pytest.raises(ConnectionError):
        await failing

    await sink.close()
    assert producer.stopped
    with pytest.raises(LogClosedError):
        await sink.append([b"late"])


async def test_the_kafka_sink_says_which_package_it_needs(monkeypatch):
    monkeypatch.setitem(sys.modules, "aiokafka", None)  # as if not installed
    with pytest.raises(ImportError, match="aiokafka"):
        await KafkaSink.connect("localhost:9092", "feedback")
