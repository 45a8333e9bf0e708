"""The interaction-log reader: every bad row is counted under its kind with
its line number, nothing crashes, and rows_read = used + bad + filtered."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slatewise.training.interactions import InteractionsError, read_interactions

ITEMS = {"a": 0, "b": 1, "c": 2, "42": 3}


def _row(**kw) -> str:
    base = {"user_id": "u1", "item_id": "a", "timestamp": 100}
    base.update(kw)
    return json.dumps({k: v for k, v in base.items() if v is not ...})


def _write(tmp_path: Path, lines: list) -> Path:
    path = tmp_path / "log.jsonl"
    with path.open("wb") as f:
        for line in lines:
            f.write((line if isinstance(line, bytes) else line.encode()) + b"\n")
    return path


# (line content, kind) in file order; line numbers are positions + 1
BAD = [
    (b'{"user_id": "u1", "item_id": "a", "timestamp": 1, "note": "\xff\xfe"}', "not_utf8"),
    ('{"user_id": "u1", "item_id": ', "malformed_json"),
    ("not json at all", "malformed_json"),
    ("[1, 2, 3]", "not_an_object"),
    ('"just a string"', "not_an_object"),
    (_row(user_id=...), "missing_field"),
    (_row(item_id=None), "missing_field"),
    (_row(user_id=["u1"]), "wrong_type"),
    (_row(item_id=True), "wrong_type"),
    (_row(user_id="   "), "wrong_type"),
    (_row(rating="five"), "wrong_type"),
    (_row(weight=[1]), "wrong_type"),
    (_row(event=7), "wrong_type"),
    (_row(timestamp=...), "bad_timestamp"),
    (_row(timestamp="2024-01-01"), "bad_timestamp"),
    (_row(timestamp=-5), "bad_timestamp"),
    (_row(timestamp=True), "bad_timestamp"),
    ('{"user_id": "u1", "item_id": "a", "timestamp": NaN}', "bad_timestamp"),
    ('{"user_id": "u1", "item_id": "a", "timestamp": Infinity}', "bad_timestamp"),
    (_row(item_id="zzz"), "unknown_item"),
    ("x" * 300, "line_too_long"),
]


def test_every_kind_of_bad_row_is_counted_with_its_line(tmp_path):
    good = [_row(user_id="u1", item_id="a", timestamp=10), _row(user_id=7, item_id=42, timestamp=11)]
    lines = [content for content, _ in BAD] + good + ["", "   "]
    log = read_interactions(_write(tmp_path, lines), ITEMS, max_line_bytes=200)
    r = log.report
    expected: dict[str, list[int]] = {}
    for lineno, (_, kind) in enumerate(BAD, start=1):
        expected.setdefault(kind, []).append(lineno)
    assert dict(r.bad) == {k: len(v) for k, v in expected.items()}
    for kind, lines_ in expected.items():
        assert [ln for ln, _ in r.examples[kind]] == lines_[:5], kind
    assert r.rows_read == len(BAD) + 2  # blank lines are not rows
    assert r.rows_used == 2 and r.users == 2 and r.items == 2
    assert r.rows_read == r.rows_used + sum(r.bad.values()) + sum(r.filtered.values())
    assert log.user_ids == ["u1", "7"]  # integer ids are read as strings
    assert log.sequence(1).tolist() == [3]
    problems = r.problems()
    assert any(p.startswith(f"{tmp_path / 'log.jsonl'}:20: unknown_item: ") for p in problems)


def test_only_the_first_few_lines_are_kept_but_all_are_counted(tmp_path):
    lines = [_row(item_id=f"nope{i}") for i in range(12)]
    r = read_interactions(_write(tmp_path, lines), ITEMS).report
    assert r.bad["unknown_item"] == 12
    assert [ln for ln, _ in r.examples["unknown_item"]] == [1, 2, 3, 4, 5]
    assert r.problems()[-1].endswith("unknown_item: 12 rows in all")


def test_filters_are_counted_not_silently_dropped(tmp_path):
    lines = [
        _row(rating=1, event="purchase"),  # below min rating
        _row(weight=0.5, event="purchase"),  # weight stands in for a missing rating
        _row(rating=4, event="view"),  # event not allowed
        _row(rating=4),  # no event: the filter cannot vouch for it
        _row(rating=5, event="purchase"),
        _row(event="purchase"),  # neither rating nor weight: kept
    ]
    log = read_interactions(_write(tmp_path, lines), ITEMS, min_rating=3, events={"purchase"})
    r = log.report
    assert dict(r.filtered) == {"below_min_rating": 2, "event_not_allowed": 2}
    assert [ln for ln, _ in r.examples["event_not_allowed"]] == [3, 4]
    assert r.rows_used == 2 and not r.bad


def test_sequences_are_sorted_by_time_with_file_order_on_ties(tmp_path):
    lines = [
        _row(user_id="u2", item_id="c", timestamp=50),
        _row(user_id="u1", item_id="b", timestamp=30),
        _row(user_id="u1", item_id="a", timestamp=10),
        _row(user_id="u1", item_id="c", timestamp=30),
        _row(user_id="u1", item_id="a", timestamp=20.5),
    ]
    log = read_interactions(_write(tmp_path, lines), ITEMS)
    assert log.user_ids == ["u2", "u1"]
    assert log.sequence(1).tolist() == [0, 0, 1, 2]  # a@10, a@20.5, b@30, c@30
    assert log.timestamps[log.offsets[1]:log.offsets[2]].tolist() == [10, 20.5, 30, 30]
    assert log.items.dtype == np.int32
    assert (log.report.first_timestamp, log.report.last_timestamp) == (10, 50)


def test_per_user_cap_keeps_the_newest_events_across_compactions(tmp_path):
    rng = np.random.default_rng(0)
    lines = [_row(user_id=f"u{int(u)}", item_id="abc"[int(i)], timestamp=int(t))
             for u, i, t in zip(rng.integers(0, 5, 300), rng.integers(0, 3, 300), rng.permutation(300))]
    path = _write(tmp_path, lines)
    full = read_interactions(path, ITEMS)
    capped = read_interactions(path, ITEMS, max_events_per_user=7, compact_every=16)
    assert capped.report.filtered["over_user_cap"] == 300 - capped.report.rows_used
    assert capped.report.rows_used == 7 * len(full)
    for u in range(len(full)):
        assert capped.sequence(u).tolist() == full.sequence(u)[-7:].tolist()


def test_missing_file_is_an_error_with_the_path(tmp_path):
    with pytest.raises(InteractionsError, match="nope.jsonl"):
        read_interactions(tmp_path / "nope.jsonl", ITEMS)


def test_empty_and_all_bad_files_do_not_crash(tmp_path):
    assert read_interactions(_write(tmp_path, []), ITEMS).report.rows_read == 0
    log = read_interactions(_write(tmp_path, ["{", "[]", "1"]), ITEMS)
    assert len(log) == 0 and log.report.rows_used == 0 and sum(log.report.bad.values()) == 3
