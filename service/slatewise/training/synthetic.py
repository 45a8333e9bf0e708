"""A small generated interaction log for the embedded catalogue (for CI).

    python -m slatewise.training.synthetic --out interactions.jsonl [--users 300 --seed 0]

The structure is one a slate model can learn and a text-similarity scorer
cannot: shoppers buy *outfits*. Each user has one or two styles and a colour
palette; a session picks one of the user's styles and buys a top, then
bottoms, then shoes, sometimes outerwear and an accessory, all of that style
(a neighbouring style where the catalogue has none), favouring the palette.
Before some purchases the user views an alternative from the same shelf
(``event: view``); a few views are random noise. So the next items after a
top are bottoms and shoes of the same style (complements), while "more items
like the last one" (what text similarity offers) are the alternatives the
user did *not* buy. Purchases carry a 3-5 rating, views none.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from slatewise.catalogue.items import CatalogueItem
from slatewise.catalogue.loader import embedded_catalogue_path, load_jsonl

OUTFIT = ("tops", "bottoms", "shoes")
EXTRAS = (("outerwear", 0.4), ("accessories", 0.5))
# where a style has no item of a category, borrow from the nearest style
NEIGHBOUR = {"formal": "business", "lounge": "casual", "streetwear": "casual",
             "evening": "formal", "business": "smart-casual", "sporty": "outdoor"}
PALETTES = (
    {"black", "charcoal", "navy", "grey", "dark brown", "oxblood", "burgundy"},
    {"white", "ivory", "cream", "beige", "light grey", "sand", "stone", "off-white", "oatmeal"},
    {"blue", "light blue", "mid blue", "sky blue", "indigo", "cobalt", "pale blue", "navy"},
    {"olive", "khaki", "tan", "camel", "brown", "green", "sage", "natural"},
)
START = 1_700_000_000  # 2023-11-14, seconds


def _shelves(items: list[CatalogueItem]) -> dict[tuple[str, str], list[int]]:
    shelves: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        shelves[(it.attributes.get("style", ""), it.category)].append(i)
    return shelves


def _shelf(shelves, style: str, category: str) -> list[int]:
    seen = set()
    while style not in seen:
        if shelves.get((style, category)):
            return shelves[(style, category)]
        seen.add(style)
        style = NEIGHBOUR.get(style, "casual")
    return shelves.get(("casual", category), [])


def generate(items: list[CatalogueItem], users: int = 300, seed: int = 0) -> list[dict]:
    """Events of every user, sorted by time (as a real log would be)."""
    rng = np.random.default_rng(seed)
    shelves = _shelves(items)
    styles = sorted({it.attributes.get("style", "") for it in items} - {""})
    style_weight = np.array([sum(1 for it in items if it.attributes.get("style") == s) for s in styles],
                            dtype=float)
    style_weight /= style_weight.sum()
    events: list[dict] = []
    for u in range(users):
        user = f"u{u:04d}"
        mine = list(rng.choice(styles, size=int(rng.integers(1, 3)), replace=False, p=style_weight))
        palette = PALETTES[int(rng.integers(len(PALETTES)))]
        owned: set[int] = set()
        t = START + int(rng.integers(0, 30 * 86400))

        def pick(shelf: list[int]) -> int | None:
            left = [i for i in shelf if i not in owned]
            if not left:
                return None
            w = np.array([3.0 if items[i].attributes.get("colour") in palette else 1.0 for i in left])
            return left[int(rng.choice(len(left), p=w / w.sum()))]

        for _ in range(int(rng.integers(2, 5))):
            style = mine[int(rng.integers(len(mine)))]
            cats = list(OUTFIT) + [c for c, p in EXTRAS if rng.random() < p]
            for cat in cats:
                shelf = _shelf(shelves, style, cat)
                bought = pick(shelf)
                if bought is None:
                    continue
                if rng.random() < 0.3:
                    alt = [i for i in shelf if i != bought]
                    if alt:
                        t += int(rng.integers(20, 120))
                        events.append({"user_id": user, "item_id": items[alt[int(rng.integers(len(alt)))]].id,
                                       "timestamp": t, "event": "view"})
                if rng.random() < 0.05:
                    t += int(rng.integers(20, 120))
                    events.append({"user_id": user, "item_id": items[int(rng.integers(len(items)))].id,
                                   "timestamp": t, "event": "view"})
                t += int(rng.integers(30, 300))
                owned.add(bought)
                events.append({"user_id": user, "item_id": items[bought].id, "timestamp": t,
                               "event": "purchase", "rating": int(rng.integers(3, 6))})
            t += int(rng.integers(2, 20)) * 86400
    events.sort(key=lambda e: e["timestamp"])  # stable: a user's same-second events keep order
    return events


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m slatewise.training.synthetic", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="JSONL file to write")
    p.add_argument("--catalogue", type=Path, default=None, help="default: the embedded catalogue")
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    items = load_jsonl(args.catalogue or embedded_catalogue_path())
    events = generate(items, users=args.users, seed=args.seed)
    with args.out.open("w", encoding="utf-8") as f:
        for e in events:
            f.write(json.dumps(e) + "\n")
    print(f"{len(events)} events of {args.users} users written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
