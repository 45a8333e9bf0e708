"""Feedback over gRPC against the real server (pointwise path: fast to start):
slates carry ids, events are checked against them and kept durably,
idempotently, across a restart and across a SIGKILL under load."""

from __future__ import annotations

import json
import signal
import threading
import time

import grpc
import pytest

from conftest import start_server, stop_server
from slatewise.feedback.records import FeedbackEvent, ServedSlate, read_log
from slatewise_client import SlateClient, build_event, build_request, field_violations


def _serve(tmp_path, log_dir, *args):
    return start_server(tmp_path, "--model", "", "--feedback-dir", str(log_dir), *args)


def _records(log_dir):
    return list(read_log(log_dir))


def test_events_are_checked_logged_and_idempotent(tmp_path):
    log_dir = tmp_path / "feedback"
    server = _serve(tmp_path, log_dir, "--feedback-max-batch", "50")
    try:
        with SlateClient(server.target) as client:
            slate = client.recommend("casual outfit", 4, user_id="u1", history=["tp-001"])
            assert len(slate.slate_id) >= 16
            mine = client.recommend("winter hiking", 3, slate_id="my-slate-1")
            assert mine.slate_id == "my-slate-1"
            with pytest.raises(grpc.RpcError) as err:
                client.recommend("winter hiking", 3, slate_id="my-slate-1")
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert field_violations(err.value)[0][0] == "slate_id"

            items = [it.item_id for it in slate.items]
            ok = [build_event("e1", slate.slate_id, "impression"),
                  build_event("e2", slate.slate_id, "click", [items[2]], positions=[2])]
            assert client.report_events(ok).accepted == 2
            again = client.report_events(ok)
            assert (again.accepted, again.duplicates) == (0, 2)

            bad = [
                build_event("e3", slate.slate_id, "purchase", [items[0]]),           # valid
                build_event("e4", "no-such-slate", "click", [items[0]]),             # unknown slate
                build_event("e5", slate.slate_id, "click", ["bt-001"]),              # not in the slate
                build_event("e6", slate.slate_id, "click", [items[1]], positions=[3]),  # wrong position
                build_event("e7", slate.slate_id, "dismiss", [items[1]], timestamp=time.time() + 86400),
                build_event("", slate.slate_id, "click", [items[1]]),                # no id
                build_event("e8", mine.slate_id, "add_to_cart", [mine.items[0].item_id], user_id="u9"),  # valid
            ]
            with pytest.raises(grpc.RpcError) as err:
                client.report_events(bad)
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details().startswith("2 of 7 events accepted")
            fields = [f for f, _ in field_violations(err.value)]
            assert fields == ["events[1].slate_id", "events[2].item_ids[0]", "events[3].positions[0]",
                              "events[4].timestamp", "events[5].event_id"]
            # The valid ones are in: a retry of the whole batch finds them as duplicates.
            with pytest.raises(grpc.RpcError) as err:
                client.report_events(bad)
            assert err.value.details().startswith("0 of 7 events accepted, 2 duplicates")

            with pytest.raises(grpc.RpcError) as err:
                client.report_events([build_event(f"x{i}", slate.slate_id, "impression") for i in range(51)])
            assert field_violations(err.value) == [("events", "has 51 events, the limit is 50")]
    finally:
        stop_server(server)

    records = _records(log_dir)
    slates = {r.slate_id: r for r in records if isinstance(r, ServedSlate)}
    events = {r.event_id: r for r in records if isinstance(r, FeedbackEvent)}
    assert set(slates) == {slate.slate_id, "my-slate-1"}
    assert slates[slate.slate_id].items == items and slates[slate.slate_id].history == ["tp-001"]
    assert slates[slate.slate_id].user_id == "u1" and slates[slate.slate_id].query == "casual outfit"
    assert sorted(events) == ["e1", "e2", "e3", "e8"]
    assert events["e1"].items == items and events["e1"].positions == [0, 1, 2, 3]  # the whole slate shown
    assert events["e2"].type == "click" and events["e2"].positions == [2]
    assert events["e8"].user_id == "u9" and events["e3"].time > 0

    # A torn last record (a write cut short by a crash): detected, cut off and
    # reported at the next start, and nothing before it is lost.
    segment = sorted(log_dir.glob("*.seg"))[-1]
    with segment.open("ab") as f:
        f.write(records[-1].encode()[:5])  # not even a whole header
    # A restart rebuilds what was served and which events were taken.
    server = _serve(tmp_path, log_dir)
    try:
        assert "event log recovery" in server.log_path.read_text()
        with SlateClient(server.target) as client:
            resp = client.report_events([build_event("e2", slate.slate_id, "click", [items[2]]),
                                         build_event("e9", slate.slate_id, "click", [items[3]])])
            assert (resp.accepted, resp.duplicates) == (1, 1)
            with pytest.raises(grpc.RpcError):
                client.recommend("again", 2, slate_id="my-slate-1")
    finally:
        stop_server(server)
    assert len(_records(log_dir)) == len(records) + 1  # e9


def test_feedback_is_off_without_a_directory(pointwise_server):
    with SlateClient(pointwise_server.target) as client:
        slate = client.recommend("casual outfit", 2)
        assert slate.slate_id  # slates carry an id whether or not feedback is on
        with pytest.raises(grpc.RpcError) as err:
            client.report_events([build_event("e1", slate.slate_id, "impression")])
        assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION


def test_sigkill_under_feedback_load_loses_no_acknowledged_event(tmp_path):
    """4 callers send batches of 100 as fast as they can; the server is killed
    with SIGKILL mid-stream. Every event acknowledged before the kill is in
    the log when a new server opens it."""
    log_dir = tmp_path / "feedback"
    server = _serve(tmp_path, log_dir)
    acked: list[str] = []
    stop = threading.Event()
    with SlateClient(server.target) as client:
        slate = client.recommend("casual outfit", 3)

    def caller(n: int) -> None:
        with SlateClient(server.target) as c:
            for b in range(10_000):
                if stop.is_set():
                    return
                batch = [build_event(f"c{n}-{b}-{i}", slate.slate_id, "click", [slate.items[i % 3].item_id])
                         for i in range(100)]
                try:
                    c.report_events(batch, deadline=10)
                except grpc.RpcError:
                    return  # the server is gone
                acked.extend(e.event_id for e in batch)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(3.0)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(30)
    stop.set()
    for t in threads:
        t.join(30)
    assert len(acked) >= 1000, f"only {len(acked)} events acknowledged before the kill"

    server = _serve(tmp_path, log_dir)  # recovers the log (a torn tail is cut and reported)
    stop_server(server)
    logged = {r.event_id for r in _records(log_dir) if isinstance(r, FeedbackEvent)}
    lost = set(acked) - logged
    print(json.dumps({"acknowledged": len(acked), "logged": len(logged), "lost": len(lost)}))
    assert not lost, f"{len(lost)} acknowledged events lost, e.g. {sorted(lost)[:3]}"
