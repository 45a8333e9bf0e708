"""`slatewise train --events DIR`: the feedback log as training data.

The converter on a hand-written log (what becomes an interaction, a slate
example, a positive, a negative; what is counted instead of crashing; the
time split), then a tiny end-to-end run on a generated log where shoppers
always ignore one category they are shown: the unlikelihood term must make
those items less likely than training without it. Text embeddings are faked
as in test_train_small, so no embedding model is loaded."""

from __future__ import annotations

import asyncio
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from slatewise.catalogue.loader import embedded_catalogue_path, load_jsonl
from slatewise.feedback.log import HEADER, MAGIC, EventLog, segment_path
from slatewise.feedback.records import FeedbackEvent, ServedSlate
from slatewise.training import cli as train_cli
from slatewise.training.data import prompt_tokens, time_split
from slatewise.training.events import SlateFeedback, before_holdout, read_events
from slatewise.training.manifest import Manifest
from slatewise.training.model import load_model
from test_train_small import fake_embed  # the same deterministic stand-in for MiniLM

CATALOGUE = embedded_catalogue_path()
ITEMS = {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4}
CORRUPT = b'{"kind":"slate","slate_id":"lost","time":1,"items":["a"]}'


def _event(event_id: str, slate_id: str, kind: str, time: float, user: str, items: list[str]) -> FeedbackEvent:
    return FeedbackEvent(event_id, slate_id, kind, time, items, list(range(len(items))), user)


def write_log(directory: Path, payloads: list[bytes]) -> None:
    async def run() -> None:
        log = await EventLog.open(directory, fsync="never")
        await log.append(payloads)
        await log.close()

    asyncio.run(run())


HAND_WRITTEN = [
    ServedSlate("s1", 100, ["b", "c", "d", "e"], "u1", "red shoes", ["a", "zz"]),
    _event("i1", "s1", "impression", 101, "u1", []),  # the whole slate was shown
    _event("c1", "s1", "click", 102, "", ["c"]),  # no user: the slate's
    _event("c1", "s1", "click", 102, "", ["c"]),  # a retried append
    _event("x1", "s1", "dismiss", 103, "u1", ["e"]),
    _event("n1", "s1", "click", 104, "u1", ["nope"]),  # not in the catalogue
    _event("p1", "s1", "purchase", 110, "u1", ["c"]),
    ServedSlate("s2", 200, ["a", "b", "c"], "u2"),
    _event("i2", "s2", "impression", 201, "u2", ["a", "b"]),  # shown, nothing taken
    ServedSlate("s3", 300, ["a", "b"], "u3"),
    _event("c3", "s3", "click", 301, "u3", ["a"]),  # no impression: an interaction only
    _event("o1", "gone", "add_to_cart", 400, "u4", ["b"]),  # slate not in the log, user known
    _event("o2", "gone2", "click", 401, "", ["d"]),  # slate not in the log, no user
    _event("w1", "late", "click", 500, "", ["a"]),  # its slate comes later in the log
    ServedSlate("late", 499, ["a", "b"], "u5"),
    ServedSlate("s5", 105, ["d", "e"], "u1"),
    _event("i5", "s5", "impression", 106, "u1", ["d"]),
    _event("bad", "s1", "hover", 107, "u1", ["b"]),  # not an event type
    ServedSlate("s9", None, ["a"], "u1"),  # type: ignore[arg-type]  # no time
]


@pytest.fixture
def hand_log(tmp_path) -> Path:
    directory = tmp_path / "feedback"
    write_log(directory, [r.encode() for r in HAND_WRITTEN] + [b"not json", b'{"kind": "nope"}'])
    crc = zlib.crc32(CORRUPT) ^ 1  # a record damaged at rest
    with open(segment_path(directory, 0), "ab") as f:
        f.write(HEADER.pack(MAGIC, len(CORRUPT), crc) + CORRUPT)
    return directory


def _rows(log) -> set[tuple[str, int, float]]:
    return {(log.user_ids[u], int(i), float(t)) for u in range(len(log))
            for i, t in zip(log.sequence(u), log.timestamps[log.offsets[u]:log.offsets[u + 1]])}


def test_counts_interactions_and_slate_examples(hand_log):
    data = read_events([hand_log], ITEMS)
    r = data.report
    assert r.records == len(HAND_WRITTEN) and r.invalid == 2 and r.undecodable == 2
    assert r.damaged_bytes == HEADER.size + len(CORRUPT)
    assert r.slates == 5 and dict(r.events) == {"impression": 3, "click": 6, "dismiss": 1, "purchase": 1,
                                                 "add_to_cart": 1}
    assert _rows(data.log) == {("u1", 2, 102.0), ("u1", 2, 110.0), ("u3", 0, 301.0), ("u4", 1, 400.0),
                               ("u5", 0, 500.0)}
    assert r.interactions == r.interactions_used == 5 and r.repeated == 1
    assert r.unknown_items == 2 and r.no_user == 1 and r.events_without_slate == 2
    assert r.shown_slates == 3 and r.slate_examples == 3 and r.positives == 1 and r.negatives == 6
    assert data.slates == [
        SlateFeedback("s1", "u1", 110, (0,), "red shoes", positives=(2,), negatives=(1, 3, 4)),
        SlateFeedback("s2", "u2", 201, (), "", positives=(), negatives=(0, 1)),
        SlateFeedback("s5", "u1", 106, (), "", positives=(), negatives=(3,)),
    ]
    problems = r.problems()
    assert any("00000000000000000000.seg@" in p and "CRC mismatch" in p for p in problems), problems
    assert any(p.startswith(f"{hand_log}/record ") and "unreadable" in p for p in problems), problems
    assert "slate s1: unknown_item: item 'zz' is not in the catalogue" in problems
    assert "event n1: unknown_item: item 'nope' is not in the catalogue" in problems
    assert any(p.startswith("event bad: invalid: unknown event type") for p in problems), problems
    assert "event o2: no_user: neither the event nor its slate names a user" in problems
    json.dumps(r.as_dict())  # what the manifest stores


def test_weights_and_event_filters(hand_log):
    by_weight = read_events([hand_log], ITEMS, min_rating=2)  # add_to_cart 2, purchase 3; clicks 1
    assert _rows(by_weight.log) == {("u1", 2, 110.0), ("u4", 1, 400.0)}
    assert by_weight.report.filtered["below_min_rating"] == 5
    assert by_weight.slates[0].positives == (2,)  # the purchase still makes c a positive
    carts = read_events([hand_log], ITEMS, event_types={"add_to_cart"})
    assert _rows(carts.log) == {("u4", 1, 400.0)}
    # c was taken, by events the filter excludes: neither a positive nor ignored
    assert carts.slates[0] == SlateFeedback("s1", "u1", 110, (0,), "red shoes", (), (1, 3, 4))


def test_slate_examples_respect_the_time_split(hand_log):
    data = read_events([hand_log], ITEMS)
    split = time_split(data.log, holdout=1, min_history=1, max_valid_users=10)
    # u1 took c at 102 and 110: the purchase at 110 is held out, so s1 (served
    # at 100, bought from at 110) must not train; s5 (over at 106) may
    kept, held_out = before_holdout(data.slates, data.log, split)
    assert [s.slate_id for s in kept] == ["s2", "s5"] and held_out == 1


def test_missing_or_absent_inputs_are_usage_errors(tmp_path, capsys):
    args = ["--catalogue", str(CATALOGUE), "--out", str(tmp_path / "m")]
    with pytest.raises(SystemExit) as exc:
        train_cli.main(args)
    assert exc.value.code == 2 and "--interactions FILE, --events DIR, or both" in capsys.readouterr().err
    assert train_cli.main(["--events", str(tmp_path / "nowhere"), *args]) == 2
    assert "not a feedback log directory" in capsys.readouterr().err
    write_log(tmp_path / "empty", [ServedSlate("s", 1, ["tp-001"], "u").encode()])  # never shown
    assert train_cli.main(["--events", str(tmp_path / "empty"), *args]) == 2
    assert "no usable interaction or shown slate" in capsys.readouterr().err


# ---- end to end ---------------------------------------------------------------------------------

STYLES = (("tops", "shoes"), ("shoes", "tops"))  # (always taken, always ignored)
TRAIN_ARGS = ["--epochs", "2", "--max-steps", "60", "--batch-size", "32", "--threads", "1",
              "--max-valid-users", "60", "--patience", "5", "--max-history", "5", "--slate-k", "3",
              "--holdout", "2", "--warmup-steps", "5", "--seed", "0", "--json"]


def styled_log(users: int = 200, sessions: int = 6, seed: int = 0) -> list[bytes]:
    """Each user gets slates of three items of their style's category and
    three of the category the other style takes, and clicks one or two of
    the former, never the latter; a third of the slates carry a query."""
    by_category: dict[str, list[str]] = {}
    for it in load_jsonl(CATALOGUE):
        by_category.setdefault(it.category, []).append(it.id)
    rng = np.random.default_rng(seed)
    out, t = [], 1_700_000_000.0
    for u in range(users):
        taken, ignored = STYLES[u % 2]
        history: list[str] = []
        for s in range(sessions):
            shown = [*rng.choice(by_category[taken], 3, replace=False),
                     *rng.choice(by_category[ignored], 3, replace=False)]
            shown = [str(i) for i in rng.permutation(shown)]
            slate_id, user = f"u{u}-s{s}", f"user{u}"
            query = "something to wear" if s % 3 == 0 else ""
            out.append(ServedSlate(slate_id, t, shown, user, query, history[-5:]).encode())
            out.append(_event(f"{slate_id}-i", slate_id, "impression", t + 1, user, []).encode())
            clicks = [i for i in shown if i in by_category[taken]][:int(rng.integers(1, 3))]
            for n, item in enumerate(clicks):
                out.append(_event(f"{slate_id}-c{n}", slate_id, "click", t + 2 + n, user, [item]).encode())
            history += clicks
            t += 60
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, dict, str]]:
    root = tmp_path_factory.mktemp("events")
    write_log(root / "feedback", styled_log())
    mp = pytest.MonkeyPatch()
    mp.setattr(train_cli, "_embedder", lambda settings: fake_embed)
    out = {}
    try:
        for weight in ("0", "1"):
            capture = _Capture()
            with capture:
                code = train_cli.main(["--events", str(root / "feedback"), "--catalogue", str(CATALOGUE),
                                       "--out", str(root / weight), "--negative-weight", weight, *TRAIN_ARGS])
            assert code == 0, capture.err[-3000:]
            out[weight] = (root / weight, json.loads(capture.out), capture.err)
    finally:
        mp.undo()
    return out


class _Capture:
    """stdout/stderr of main() as strings (capsys is function-scoped)."""

    def __enter__(self) -> None:
        import contextlib
        import io

        self._out, self._err = io.StringIO(), io.StringIO()
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(contextlib.redirect_stdout(self._out))
        self._stack.enter_context(contextlib.redirect_stderr(self._err))

    def __exit__(self, *exc) -> None:
        self._stack.close()
        self.out, self.err = self._out.getvalue(), self._err.getvalue()


def test_the_run_records_the_event_summary(runs):
    out, printed, err = runs["1"]
    manifest = Manifest.load(out)
    events = manifest.data["events"]
    assert events == printed["data"]["events"]
    assert events["slates"] == events["shown_slates"] == events["slate_examples"] == 200 * 6
    assert events["events"]["impression"] == 1200 and events["interactions"] == events["events"]["click"]
    # every shown item is a positive (clicked) or a negative (not)
    assert events["positives"] == events["events"]["click"] and events["undecodable"] == 0
    assert events["positives"] + events["negatives"] == 1200 * 6
    assert "read" not in manifest.data  # no interaction file
    split = manifest.data["split"]
    assert split["slate_examples_held_out"] > 0  # validation users' last slates
    assert split["slate_examples"] + split["slate_examples_held_out"] == 1200
    assert manifest.settings["negative_weight"] == 1.0 and manifest.validation["best_step"] > 0
    read = [json.loads(line) for line in err.splitlines() if '"read_events"' in line]
    assert read and read[0]["slate_examples"] == 1200


def test_interactions_and_events_pool_their_users(runs, tmp_path):
    """A user id in the file and in the feedback log is one user."""
    file_rows = [{"user_id": f"user{u}", "item_id": item, "timestamp": 1_600_000_000 + n}
                 for u in range(10) for n, item in enumerate(("bt-001", "bt-002", "bt-003"))]
    file_rows.append({"user_id": "file-only", "item_id": "bt-004", "timestamp": 1_600_000_000})
    path = tmp_path / "interactions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in file_rows))
    feedback = runs["1"][1]["data"]["events"]["paths"][0]
    capture = _Capture()
    with capture, pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_cli, "_embedder", lambda settings: fake_embed)
        code = train_cli.main(["--interactions", str(path), "--events", feedback, "--catalogue", str(CATALOGUE),
                               "--out", str(tmp_path / "m"), *TRAIN_ARGS, "--max-steps", "5"])
    assert code == 0, capture.err[-3000:]
    data = Manifest.load(tmp_path / "m").data
    assert data["read"]["rows_used"] == len(file_rows)
    assert data["pooled"]["users"] == data["events"]["slates"] // 6 + 1  # 200 users + file-only
    assert data["pooled"]["rows_used"] == len(file_rows) + data["events"]["interactions_used"]


def _ignored_probability(model_dir: Path) -> float:
    """Mean first-step probability mass on a style's ignored category, for
    prompts of that style's users' taken items."""
    items = load_jsonl(CATALOGUE)
    model = load_model(model_dir).eval()
    mass = []
    for taken, ignored in STYLES:
        taken_ids = [i for i, it in enumerate(items) if it.category == taken]
        ignored_ids = [i for i, it in enumerate(items) if it.category == ignored]
        prompts = [taken_ids[j:j + 3] for j in range(0, 30, 3)]
        with torch.no_grad():
            logits = model(torch.tensor([prompt_tokens(h, False) for h in prompts]))[:, -1]
        mass.append(logits.softmax(-1)[:, ignored_ids].sum(-1).mean().item())
    return float(np.mean(mass))


def test_ignored_items_lose_probability_with_the_unlikelihood_term(runs):
    """Same data, same seed: only the term differs. Each style ignores the
    category the other style takes, so without negatives those items keep
    real probability (they are popular); measured on data seeds 0/1/2 the
    term cut it by 14% / 10% / 26% (ratio 1.0 exactly if it did nothing)."""
    without, with_ = _ignored_probability(runs["0"][0]), _ignored_probability(runs["1"][0])
    assert Manifest.load(runs["0"][0]).validation["best_step"] > 0  # both models were trained
    assert with_ < 0.95 * without, (with_, without)
