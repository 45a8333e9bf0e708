"""Build the two evaluation case sets of `slatewise eval` (deterministic).

    .venv/bin/python tests/eval_data/build_cases.py            # both files
    .venv/bin/python tests/eval_data/build_cases.py --only obp --obp-wheel obp-0.4.1-py3-none-any.whl

outfit_cases.jsonl -- outfit intents over the embedded apparel catalogue
-------------------------------------------------------------------------
One case per hand-written intent (INTENTS below: a query plus the rule of
what fits it). K = 5.

* candidates: the 40 catalogue items nearest to the query (cosine between
  all-MiniLM-L6-v2 embeddings of the query and of the item text the server
  embeds), plus the relevant items below when they are not among those 40,
  plus 5 other catalogue items drawn with a per-intent seed (distractors).
  score = that cosine, rounded to 4 decimals. Candidates are listed by id,
  so their order says nothing about relevance.
* relevant: one plausible outfit per intent, picked by rule, not by hand, so
  that it is reproducible: for each category the intent's outfit needs (by
  default tops, bottoms, shoes, outerwear, accessories), among the catalogue
  items that *fit* the intent -- style in the intent's styles or occasion in
  its occasions, and season not among those it rules out -- the one that
  best matches it: the intent's colour first (when it names colours), then
  an occasion match before a style-only match, then the nearest to the
  query. A category with no fitting item is left out, so an
  outfit has 3 to 5 items. This rewards a slate that covers the outfit's
  categories with items that suit the intent; a slate of five similar shirts
  can hit at most one of them.
* history: every third intent carries two "recently viewed" catalogue items
  (the two fitting items nearest to the query outside the outfit), to exercise the history
  path; they are catalogue ids, so the runner sends them as history ids.

obp_cases.jsonl -- logged clicks from the Open Bandit Dataset sample
---------------------------------------------------------------------
The `obp==0.4.1` wheel on PyPI bundles the small sample of the Open Bandit
Dataset (ZOZOTOWN fashion e-commerce, Saito et al. 2021, CC BY 4.0): 10,000
logged impressions per behaviour policy (uniform random and Bernoulli TS) of
the "all" campaign, which recommends 3 of 80 items (positions left, centre,
right) and records clicks. The wheel is downloaded with
`pip download --no-deps obp==0.4.1`, checked against OBP_WHEEL_SHA256 and
read as a zip file; obp itself is never installed.

The sample keeps single (impression, position) rows -- subsampling broke the
3-item slates apart (9,991 distinct timestamps in 10,000 rows) -- and has 80
clicks in 20,000 rows. So a case is one logged click:

* context: the user's four (hashed) user features as an opaque segment in the
  query, and as history the items the user had clicked before (the row's
  user-item affinity > 0), sent as titles since they are not catalogue ids.
* candidates: all 80 items. Item features are anonymised (one number, three
  hashes), so an item is {"title": "item 12", "category": "group-5c1e29",
  "attributes": {"feature_0": "-0.50", "feature_1": "aed790", "feature_2":
  "67503f"}}: category = hashed item_feature_3 (7 groups, the only
  category-like feature), hashes cut to 6 hex digits (still unique) to keep
  the text the server embeds per request short. score = the item's click-through rate over both logs *up to
  the moment of the click* (prequential, so no future clicks leak in),
  smoothed towards the running global CTR with SMOOTHING pseudo-impressions.
  Bernoulli TS is context-free, so per-impression CTR is a fair popularity
  estimate under either policy (position effects are ignored).
* k = 3 (the interface's slate size); relevant = [the clicked item].
* which clicks: the latest OBP_CASES clicks in time order; the earlier ones
  (and all rows before them) only warm up the CTR estimates.

This is a next-click task on popularity-style scores with text that means
nothing to a language model: it measures whether a strategy keeps the
upstream relevance, not whether it understands fashion. Caveats: a click is
only observed on items the logging policy showed; one clicked item per case
makes nDCG@3 equal to 1/log2(1 + rank) of that item when hit.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wheels import check_wheel, fetch_wheel  # noqa: E402

HERE = Path(__file__).resolve().parent
OUTFIT_FILE = HERE / "outfit_cases.jsonl"
OBP_FILE = HERE / "obp_cases.jsonl"

OUTFIT_K = 5
NEAREST = 40
DISTRACTORS = 5
ALL_CATEGORIES = ("tops", "bottoms", "shoes", "outerwear", "accessories")

OBP_REQUIREMENT = "obp==0.4.1"
OBP_WHEEL = "obp-0.4.1-py3-none-any.whl"
OBP_WHEEL_SHA256 = "87dec9caf4283c25ab13036532e0a24566f1c7bdcad1653a8ded43b2f5ef8208"
OBP_LOGS = ("random", "bts")
OBP_DIR = "obp/dataset/obd"
OBP_CASES = 50
OBP_K = 3
SMOOTHING = 100.0  # pseudo-impressions at the global CTR
N_ITEMS = 80


# ---- outfit intents -------------------------------------------------------------

@dataclass(frozen=True)
class Intent:
    id: str
    query: str
    styles: frozenset[str]
    occasions: frozenset[str] = frozenset()
    avoid_seasons: frozenset[str] = frozenset()
    colours: frozenset[str] = frozenset()
    categories: tuple[str, ...] = ALL_CATEGORIES


def intent(id, query, styles, occasions=(), avoid=(), colours=(), categories=ALL_CATEGORIES):
    return Intent(id, query, frozenset(styles), frozenset(occasions), frozenset(avoid),
                  frozenset(colours), tuple(categories))


NO_OUTERWEAR = ("tops", "bottoms", "shoes", "accessories")
WARM = ("summer",)
COLD = ("winter", "autumn")

INTENTS = [
    intent("office-monday", "what to wear to the office on a Monday", {"business"}, {"office", "business meeting"}),
    intent("job-interview", "a sharp outfit for a job interview", {"business", "formal"}, {"business meeting", "office"}),
    intent("black-tie", "black tie gala outfit", {"formal"}, {"black tie"}),
    intent("summer-wedding", "what to wear as a guest at a summer wedding", {"formal", "smart-casual"}, {"wedding guest"}, avoid=COLD),
    intent("date-night", "date night outfit for dinner in town", {"evening", "smart-casual"}, {"date night", "party"}),
    intent("saturday-party", "going out to a party on Saturday night", {"evening"}, {"party"}),
    intent("relaxed-weekend", "relaxed casual weekend outfit", {"casual"}, {"weekend", "everyday"}),
    intent("beach-holiday", "beach holiday outfit for hot days", {"casual"}, {"beach", "holiday"}, avoid=COLD, categories=NO_OUTERWEAR),
    intent("summer-hike", "a day hike in the hills in summer", {"outdoor"}, {"hiking"}, avoid=("winter",)),
    intent("winter-hike", "winter hiking in the snow", {"outdoor"}, {"winter hiking"}, avoid=WARM),
    intent("morning-run", "running kit for a morning run", {"sporty"}, {"running", "trail running"}),
    intent("gym-session", "clothes for a gym workout", {"sporty"}, {"gym"}),
    intent("yoga-class", "comfortable outfit for a yoga class", {"sporty", "lounge"}, {"yoga", "gym", "home"}),
    intent("day-at-home", "comfy clothes for a lazy day at home", {"lounge"}, {"home"}, categories=("tops", "bottoms", "shoes", "outerwear")),
    intent("streetwear", "a streetwear look with sneakers and a hoodie", {"streetwear"}),
    intent("rainy-commute", "staying dry on a rainy commute to work", {"business", "smart-casual", "outdoor"}, {"commute"}),
    intent("casual-friday", "smart casual Friday at the office", {"smart-casual"}, {"office"}),
    intent("autumn-city", "autumn weekend walking around the city", {"smart-casual", "casual"}, {"weekend"}, avoid=WARM),
    intent("winter-commute", "a warm winter outfit for commuting", {"business", "smart-casual"}, avoid=WARM),
    intent("hot-day-casual", "light casual clothes for a very hot summer day", {"casual"}, avoid=COLD, categories=NO_OUTERWEAR),
    intent("long-flight", "comfortable clothes for a long flight", {"lounge", "casual"}, {"travel", "home"}),
    intent("golf-round", "what to wear for a round of golf", {"sporty", "smart-casual"}, {"golf"}, avoid=("winter",)),
    intent("all-black-evening", "an all-black evening look", {"evening", "formal"}, {"party", "black tie"}, colours={"black"}),
    intent("client-meeting", "meeting an important client in a suit", {"business", "formal"}, {"business meeting"}),
    intent("music-festival", "summer music festival outfit", {"casual", "streetwear"}, avoid=COLD),
    intent("weekend-brunch", "weekend brunch with friends", {"smart-casual", "casual"}, {"weekend"}),
    intent("cold-day-casual", "a cosy casual outfit for a cold day", {"casual", "smart-casual"}, avoid=WARM),
    intent("navy-smart", "a navy smart-casual outfit", {"smart-casual", "business"}, colours={"navy"}),
    intent("trail-run", "trail running in the mountains", {"sporty", "outdoor"}, {"trail running", "running"}),
    intent("garden-party", "spring garden party", {"smart-casual", "evening"}, {"wedding guest", "party"}, avoid=("winter",)),
]


def fits(item, it: Intent) -> bool:
    a = item.attributes
    if a.get("season") in it.avoid_seasons:
        return False
    return a.get("style") in it.styles or a.get("occasion") in it.occasions


def preference(item, it: Intent, cosine: float) -> tuple:
    """Among fitting items of a category: the intent's colour first (when it
    names colours), then an occasion match over a style-only match, then the
    nearest to the query."""
    a = item.attributes
    return (bool(it.colours) and a.get("colour") not in it.colours,
            bool(it.occasions) and a.get("occasion") not in it.occasions,
            -float(cosine))


def case_item(item, score: float | None = None) -> dict:
    out = {"id": item.id, "title": item.title, "category": item.category,
           "attributes": dict(item.attributes)}
    if score is not None:
        out["score"] = round(float(score), 4)
    return out


def build_outfit_cases(embedder) -> list[dict]:
    from slatewise.catalogue.loader import embedded_catalogue_path, load_jsonl

    items = load_jsonl(embedded_catalogue_path())
    item_vecs = embedder.encode([it.text() for it in items])
    query_vecs = embedder.encode([it.query for it in INTENTS])
    cases = []
    for n, (it, qv) in enumerate(zip(INTENTS, query_vecs)):
        cos = item_vecs @ qv
        order = [int(i) for i in np.argsort(-cos, kind="stable")]
        fitting = [i for i in order if fits(items[i], it)]  # nearest first
        relevant: list[int] = []
        for cat in it.categories:
            in_cat = [i for i in fitting if items[i].category == cat]
            if in_cat:
                relevant.append(min(in_cat, key=lambda i: preference(items[i], it, cos[i])))
        if len(relevant) < 3:
            raise SystemExit(f"intent {it.id}: only {len(relevant)} outfit items fit; loosen its rule")
        chosen = order[:NEAREST]
        chosen += [i for i in relevant if i not in chosen]
        rest = [i for i in order if i not in chosen]
        chosen += random.Random(f"distractors:{it.id}").sample(rest, DISTRACTORS)
        history = []
        if n % 3 == 2:
            history = [case_item(items[i]) for i in fitting if i not in relevant][:2]
        cases.append({
            "id": f"outfit-{it.id}",
            "context": {"query": it.query, "history": history},
            "candidates": [case_item(items[i], cos[i]) for i in sorted(chosen, key=lambda i: items[i].id)],
            "k": OUTFIT_K,
            "relevant": [items[i].id for i in relevant],
        })
    return cases


# ---- Open Bandit Dataset ------------------------------------------------------------

def _csv(zf: zipfile.ZipFile, name: str) -> list[dict]:
    with zf.open(f"{OBP_DIR}/{name}") as f:
        return list(csv.DictReader(io.TextIOWrapper(f, encoding="utf-8")))


HASH_CHARS = 6  # hashed feature values are cut to this many hex digits (still unique)


def obp_item(row: dict) -> dict:
    i = int(row["item_id"])
    f0, f1, f2, f3 = (row[f"item_feature_{j}"] for j in range(4))
    return {
        "id": f"obd-{i}",
        "title": f"item {i}",
        "category": f"group-{f3[:HASH_CHARS]}",
        "attributes": {"feature_0": f"{float(f0):.2f}", "feature_1": f1[:HASH_CHARS],
                       "feature_2": f2[:HASH_CHARS]},
    }


def build_obp_cases(wheel: Path) -> list[dict]:
    check_wheel(wheel, OBP_WHEEL_SHA256)
    with zipfile.ZipFile(wheel) as zf:
        catalogue = _csv(zf, "random/all/item_context.csv")
        logs = {policy: _csv(zf, f"{policy}/all/all.csv") for policy in OBP_LOGS}
    items = {int(r["item_id"]): obp_item(r) for r in catalogue}
    for j in (1, 2, 3):
        values = {r[f"item_feature_{j}"] for r in catalogue}
        if len({v[:HASH_CHARS] for v in values}) != len(values):
            raise SystemExit(f"item_feature_{j}: {HASH_CHARS} hex digits no longer tell values apart")
    if sorted(items) != list(range(N_ITEMS)):
        raise SystemExit(f"expected items 0..{N_ITEMS - 1}, got {len(items)}")
    rows = [(r["timestamp"], policy, int(r[""]), r) for policy, rs in logs.items() for r in rs]
    rows.sort(key=lambda t: (t[0], t[1], t[2]))

    imps = np.zeros(N_ITEMS)
    clicks = np.zeros(N_ITEMS)
    events = []
    for timestamp, policy, index, r in rows:
        item = int(r["item_id"])
        if r["click"] == "1":
            total_imps, total_clicks = imps.sum(), clicks.sum()
            prior = total_clicks / total_imps if total_clicks > 0 else 0.004
            ctr = (clicks + SMOOTHING * prior) / (imps + SMOOTHING)
            events.append((timestamp, policy, index, r, ctr))
        imps[item] += 1
        clicks[item] += int(r["click"])

    cases = []
    for timestamp, policy, index, r, ctr in events[-OBP_CASES:]:
        segment = "-".join(r[f"user_feature_{j}"][:6] for j in range(4))
        affinity = {i: float(r[f"user-item_affinity_{i}"]) for i in range(N_ITEMS)}
        history = [items[i] for i in sorted(affinity, key=lambda i: (affinity[i], i)) if affinity[i] > 0]
        cases.append({
            "id": f"obd-{policy}-{index}",
            "context": {
                "query": f"fashion items for a ZOZOTOWN shopper of user segment {segment}",
                "history": history,
            },
            "candidates": [{**items[i], "score": round(float(ctr[i]), 6)} for i in range(N_ITEMS)],
            "k": OBP_K,
            "relevant": [f"obd-{int(r['item_id'])}"],
        })
    return cases


# ---- main -----------------------------------------------------------------

def write_jsonl(path: Path, cases: list[dict]) -> None:
    path.write_text("".join(json.dumps(c, ensure_ascii=False, sort_keys=False) + "\n" for c in cases),
                    encoding="utf-8")
    print(f"{path}: {len(cases)} cases")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=["outfit", "obp"], help="build one file only")
    p.add_argument("--obp-wheel", type=Path, help=f"a local {OBP_WHEEL} (else pip downloads it)")
    p.add_argument("--out-dir", type=Path, default=HERE)
    args = p.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "outfit"):
        from slatewise.embeddings import Embedder

        write_jsonl(args.out_dir / OUTFIT_FILE.name, build_outfit_cases(Embedder()))
    if args.only in (None, "obp"):
        if args.obp_wheel:
            cases = build_obp_cases(args.obp_wheel)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                cases = build_obp_cases(fetch_wheel(OBP_REQUIREMENT, OBP_WHEEL, Path(tmp)))
        write_jsonl(args.out_dir / OBP_FILE.name, cases)
    # Everything written must load with the evaluator's own validation.
    from slatewise.evaluation.cases import load_cases

    for name in ([OUTFIT_FILE.name] if args.only == "outfit" else [OBP_FILE.name] if args.only == "obp"
                 else [OUTFIT_FILE.name, OBP_FILE.name]):
        load_cases(args.out_dir / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
