"""Time split and training examples: history (and maybe a query) -> the next slate.

One example is a cut point in a user's time-ordered sequence. Its tokens are
exactly what the server will prompt with, followed by the slate:

    [BOS] [query]? h_1 .. h_m [SEP] t_1 .. t_K

``h`` are the last ``max_history`` items before the cut, ``t`` the next K
distinct items after it, ``[query]`` a soft token (the projected text
embedding of a query) that is present in some examples only.

Targets, per position (softmax over item tokens only: the server's automaton
never lets the model emit anything else inside a slate, and it ends the slate
with EOS after exactly K items, so EOS is never a target either):

* **next item** (cross-entropy): [SEP] predicts t_1, t_j predicts t_{j+1};
  h_j predicts h_{j+1} at ``history_weight`` (a cheap extra signal: every
  history position is a next-item example too).
* **set** (multi-label softmax, the mean of -log p over a window): [SEP]
  and t_j target *all the slate items not yet written* {t_{j+1} .. t_K}, in
  any order; h_j targets the next K items after it. Cross-entropy alone says
  "t_{j+1} and nothing else", so the model learns one order; the set target
  says "any of what the user took next that is not in the slate yet", which is
  what a greedy decoder needs when its own picks come out in another order,
  and already-written items are never a target, so picks push away from more
  of the same instead of towards it. Measured on the generated log (2000
  users, seeds 0 and 1): nDCG@10 of the greedy slate 0.454 / 0.445 with it,
  0.440 / 0.430 with cross-entropy alone; of the first-step top-10 0.467 /
  0.465 against 0.438 / 0.426.

Queries. Logs carry no queries, so a share ``p_query + p_query_only`` of the
examples gets a *pseudo-query*: half the time (when there is one) the text
embedding of an attribute value or category shared by at least two slate
items (``casual``, ``winter hiking``: what a shopper types), otherwise the
mean text embedding of a random subset of the slate items. In the
``p_query_only`` share the history is dropped as well, so a request with only
a query is a case the model has seen; the other examples have no query slot
at all, as a history-only request has none.

Feedback slates (``slatewise train --events``, :mod:`.events`). A served
slate that was shown is an example with the context it was served for (its
own history and query: no pseudo-query, nothing dropped) and the items the
user took as the slate, so the same targets apply. Shown items nobody took
are *negatives*: the loss adds an unlikelihood term, -log(1 - p(item)), on
the first-step ([SEP]) distribution, the one that ranks candidates when the
server writes a slate. A slate where nothing was taken has no targets, only
negatives. History positions of these examples carry no weight: the
history is the user's sequence, which the interactions already train on.

Randomness comes from ``(seed, epoch, example)`` only, so an epoch is the
same whatever the batch order, the number of workers or of ranks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from slatewise.catalogue.items import CatalogueItem
from slatewise.training.interactions import InteractionLog
from slatewise.training.manifest import prompt_layout

if TYPE_CHECKING:
    from slatewise.training.events import SlateFeedback

PAD, BOS, EOS, SEP = 0, 1, 2, 3
N_SPECIAL = 4  # item i is token N_SPECIAL + i


@dataclass
class Split:
    """Per-user training sequences and the held-out validation users.

    Only the sampled validation users lose their last ``holdout`` items to
    validation; every other user trains on everything, so a large log keeps
    its data and validation stays a fixed, cheap size."""

    train: list[np.ndarray]  # per user: item indices in time order
    valid_users: np.ndarray  # user indices
    valid_relevant: list[np.ndarray]  # held-out items the user had not had before
    holdout: int
    eligible_users: int  # users with enough history to be validated on

    def valid_history(self, i: int) -> np.ndarray:
        return self.train[int(self.valid_users[i])]

    def summary(self) -> dict:
        return {
            "holdout": self.holdout, "eligible_users": self.eligible_users,
            "valid_users": len(self.valid_users),
            "valid_items": int(sum(len(r) for r in self.valid_relevant)),
            "train_events": int(sum(len(s) for s in self.train)),
        }


def time_split(log: InteractionLog, holdout: int, min_history: int = 2,
               max_valid_users: int = 2000, seed: int = 0) -> Split:
    """Hold out the last ``holdout`` events of up to ``max_valid_users`` users
    with at least ``holdout + min_history`` events (sampled with ``seed``).
    Relevant = the held-out items not already in the user's history (unique),
    because the candidates of the comparison exclude what the user has had;
    users with none left are not validated on."""
    lengths = np.diff(log.offsets)
    eligible = np.flatnonzero(lengths >= holdout + min_history)
    rng = np.random.default_rng(seed)
    chosen = eligible if len(eligible) <= max_valid_users else np.sort(
        rng.choice(eligible, size=max_valid_users, replace=False))
    train = [log.sequence(u) for u in range(len(log))]
    valid_users, relevant = [], []
    for u in chosen:
        seq = train[u]
        history, held = seq[:-holdout], seq[-holdout:]
        seen = set(history.tolist())
        rel = np.array(list(dict.fromkeys(i for i in held.tolist() if i not in seen)), dtype=np.int64)
        train[u] = history
        if len(rel):
            valid_users.append(int(u))
            relevant.append(rel)
    return Split(train, np.array(valid_users, dtype=np.int64), relevant, holdout, len(eligible))


class QueryBank:
    """Pseudo-queries from item text: phrases the catalogue's items share
    (attribute values, categories) and item text embeddings."""

    def __init__(self, items: Sequence[CatalogueItem], item_vectors: np.ndarray,
                 embed: Callable[[list[str]], np.ndarray], max_phrases: int = 5000):
        per_item = [self._phrases(it) for it in items]
        counts = Counter(p for ps in per_item for p in set(ps))
        phrases = sorted(p for p, c in counts.items() if c >= 2)
        phrases = sorted(phrases, key=lambda p: -counts[p])[:max_phrases]
        index = {p: i for i, p in enumerate(phrases)}
        self.item_phrases = [sorted({index[p] for p in ps if p in index}) for ps in per_item]
        self.phrase_vectors = (embed(phrases) if phrases
                               else np.zeros((0, item_vectors.shape[1]), np.float32))
        self.item_vectors = item_vectors

    @staticmethod
    def _phrases(item: CatalogueItem) -> list[str]:
        values = [v for k, v in item.attributes.items() if k != "price"]
        return [item.category, *(v.strip().lower() for v in values if v.strip() and not _numeric(v))]

    def pseudo_query(self, window: Sequence[int], rng: np.random.Generator) -> np.ndarray:
        shared = Counter(p for i in window for p in self.item_phrases[i])
        top = max(shared.values(), default=0)
        if top >= 2 and rng.random() < 0.5:
            best = sorted(p for p, c in shared.items() if c == top)
            return self.phrase_vectors[best[int(rng.integers(len(best)))]]
        keep = [i for i in window if rng.random() < 0.7] or [window[int(rng.integers(len(window)))]]
        vec = self.item_vectors[keep].mean(axis=0)
        return (vec / (np.linalg.norm(vec) + 1e-8)).astype(np.float32)


def _numeric(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def first_distinct(seq: np.ndarray, k: int) -> list[int]:
    out: list[int] = []
    for i in seq.tolist():
        if i not in out:
            out.append(i)
            if len(out) == k:
                break
    return out


class SlateExamples(Dataset):
    """Every cut point (every ``stride``-th) of every training sequence with
    at least one item before and after it."""

    def __init__(self, split: Split, queries: QueryBank | None, *, max_history: int, slate_k: int,
                 stride: int = 1, p_query: float = 0.35, p_query_only: float = 0.15,
                 history_weight: float = 0.5, seed: int = 0):
        users, cuts = [], []
        for u, seq in enumerate(split.train):
            c = np.arange(1, len(seq), stride, dtype=np.int32)
            users.append(np.full(len(c), u, dtype=np.int32))
            cuts.append(c)
        self.users = np.concatenate(users) if users else np.zeros(0, np.int32)
        self.cuts = np.concatenate(cuts) if cuts else np.zeros(0, np.int32)
        self.train = split.train
        self.queries = queries
        self.max_history, self.slate_k = max_history, slate_k
        self.p_query = p_query if queries is not None else 0.0
        self.p_query_only = p_query_only if queries is not None else 0.0
        self.history_weight = history_weight
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.cuts)

    def __getitem__(self, i: int) -> dict:
        seq = self.train[int(self.users[i])]
        cut = int(self.cuts[i])
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        history = seq[max(0, cut - self.max_history):cut].tolist()
        slate = first_distinct(seq[cut:cut + 2 * self.slate_k], self.slate_k)
        u = rng.random()
        query = None
        if u < self.p_query_only + self.p_query:
            query = self.queries.pseudo_query(slate, rng)
            if u < self.p_query_only:
                history = []
        return build_example(history, slate, query, self.slate_k, self.history_weight)


class FeedbackExamples(Dataset):
    """One example per shown slate of the feedback log: its served context,
    the items taken as the slate, the ignored ones as negatives. Queries are
    embedded once, as the server embeds a request's query."""

    def __init__(self, slates: Sequence[SlateFeedback], embed: Callable[[list[str]], np.ndarray], *,
                 slate_k: int):
        texts = sorted({s.query for s in slates if s.query})
        vectors = np.asarray(embed(texts), dtype=np.float32) if texts else []
        self.query_vectors = dict(zip(texts, vectors))
        self.slates, self.slate_k = list(slates), slate_k

    def __len__(self) -> int:
        return len(self.slates)

    def __getitem__(self, i: int) -> dict:
        s = self.slates[i]
        return build_example(list(s.history), list(s.positives[:self.slate_k]), self.query_vectors.get(s.query),
                             self.slate_k, history_weight=0.0, negatives=s.negatives)


SPECIAL_TOKENS = {"pad": PAD, "bos": BOS, "eos": EOS, "sep": SEP}


def prompt_tokens(history: Sequence[int], with_query: bool) -> list[int]:
    """The server's prompt (manifest.prompt_layout) for item indices."""
    return prompt_layout([N_SPECIAL + h for h in history], with_query, SPECIAL_TOKENS)


def build_example(history: list[int], slate: list[int], query: np.ndarray | None, k: int,
                  history_weight: float, negatives: Sequence[int] = ()) -> dict:
    """Token ids and per-position targets; ``negatives`` are items the
    first-step distribution (at [SEP]) should move away from."""
    prompt = prompt_tokens(history, query is not None)
    ids = prompt + [N_SPECIAL + t for t in slate]
    n = len(ids)
    labels = np.full(n, -1, dtype=np.int64)
    sets = np.full((n, k), -1, dtype=np.int64)
    weights = np.zeros(n, dtype=np.float32)
    first_h = 2 if query is not None else 1
    chron = history + slate
    for j in range(len(history) - 1):  # h_j -> h_{j+1}; window: the next K items
        p = first_h + j
        labels[p] = history[j + 1]
        window = list(dict.fromkeys(chron[j + 1:j + 1 + k]))
        sets[p, :len(window)] = window
        weights[p] = history_weight
    sep = len(prompt) - 1
    for j in range(len(slate)):  # [SEP] / t_j -> the rest of the slate
        p = sep + j
        labels[p] = slate[j]
        rest = slate[j:]
        sets[p, :len(rest)] = rest
        weights[p] = 1.0
    return {"ids": np.array(ids, dtype=np.int64), "labels": labels, "sets": sets, "weights": weights,
            "query": query, "query_at": 1 if query is not None else -1,
            "negatives": np.array(negatives, dtype=np.int64), "negatives_at": sep if len(negatives) else -1}


def collate(batch: list[dict]) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example (PAD, label -1, weight 0, negative -1)."""
    n = max(len(b["ids"]) for b in batch)
    k = batch[0]["sets"].shape[1]
    m = max(len(b["negatives"]) for b in batch)
    dim = next((len(b["query"]) for b in batch if b["query"] is not None), 1)
    out = {
        "ids": torch.full((len(batch), n), PAD, dtype=torch.long),
        "attention_mask": torch.zeros((len(batch), n), dtype=torch.long),
        "labels": torch.full((len(batch), n), -1, dtype=torch.long),
        "sets": torch.full((len(batch), n, k), -1, dtype=torch.long),
        "weights": torch.zeros((len(batch), n), dtype=torch.float32),
        "query": torch.zeros((len(batch), dim), dtype=torch.float32),
        "query_at": torch.full((len(batch),), -1, dtype=torch.long),
        "negatives": torch.full((len(batch), m), -1, dtype=torch.long),
        "negatives_at": torch.full((len(batch),), -1, dtype=torch.long),
    }
    for r, b in enumerate(batch):
        m = len(b["ids"])
        out["ids"][r, :m] = torch.from_numpy(b["ids"])
        out["attention_mask"][r, :m] = 1
        out["labels"][r, :m] = torch.from_numpy(b["labels"])
        out["sets"][r, :m] = torch.from_numpy(b["sets"])
        out["weights"][r, :m] = torch.from_numpy(b["weights"])
        if b["query"] is not None:
            out["query"][r] = torch.from_numpy(np.asarray(b["query"], dtype=np.float32))
            out["query_at"][r] = b["query_at"]
        out["negatives"][r, :len(b["negatives"])] = torch.from_numpy(b["negatives"])
        out["negatives_at"][r] = b["negatives_at"]
    return out
