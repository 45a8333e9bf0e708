"""The training loop: config, epochs, early stopping, checkpoints, final table.

Runs the same on one CPU, one GPU, or many: launch this entry point under an
existing launcher and it wraps the model in DistributedDataParallel with a
DistributedSampler (rank 0 evaluates, checkpoints and writes the manifest;
the early-stopping decision is broadcast):

    torchrun --nproc-per-node 4 -m slatewise train --interactions ... --out DIR
    torchrun --nnodes 2 --node-rank R --rdzv-endpoint HOST:29500 --nproc-per-node 8 -m slatewise train ...
    accelerate launch -m slatewise train ...          # sets the same WORLD_SIZE/RANK variables

``device=auto`` takes the GPU of the local rank when CUDA is present, else
the CPU (gloo). The per-rank batch is ``batch_size``; the effective one is
``batch_size * world size``.

Determinism: ``seed`` seeds Python, NumPy and torch, the example randomness is
a function of (seed, epoch, example), the shuffle uses a seeded generator and
torch runs with deterministic algorithms, so the same seed on the same
machine and thread count gives the same losses and the same weights.

Early stopping watches nDCG@10 of the greedy autoregressive slate on the
validation users (the slate is what is served, and the first-step ranking
can improve while the slate does not); the best epoch's weights are
checkpointed to the output directory as soon as they are found.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from slatewise.catalogue.items import CatalogueItem
from slatewise.catalogue.loader import load_jsonl
from slatewise.evaluation.metrics import METRIC_NAMES, nanmean, ndcg_at_k, slate_quality
from slatewise.pointwise.select import select
from slatewise.training.data import (
    N_SPECIAL, SPECIAL_TOKENS, FeedbackExamples, QueryBank, SlateExamples, Split, collate, prompt_tokens,
    time_split,
)
from slatewise.training.events import FeedbackData, before_holdout, read_events
from slatewise.training.interactions import InteractionLog, InteractionsError, merge_logs, read_interactions
from slatewise.training.manifest import MANIFEST_FILE, Manifest, catalogue_fingerprint
from slatewise.training.model import QUERY_PROJECTION_FILE, ModelShape, SlateModel, build_model, save_model

Embed = Callable[[list[str]], np.ndarray]
LOG_EVERY = 10  # optimiser steps between progress events


@dataclass
class TrainConfig:
    """Every knob of a run (``slatewise train --kebab-case`` flags)."""

    seed: int = 0
    epochs: int = 30
    max_steps: int = 0  # stop after this many optimiser steps (0 = no limit)
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.0  # decay would pull rarely seen items' text-initialised tokens to 0
    warmup_steps: int = 50
    max_history: int = 20
    slate_k: int = 10  # the target window: the next K distinct items
    holdout: int = 5  # validation: each validation user's last `holdout` events
    min_history: int = 2  # events a validation user keeps for its prompt
    max_valid_users: int = 2000
    patience: int = 3  # evaluations without improvement before stopping
    # Optimiser steps between evaluations (0 = at the end of every epoch). On
    # MovieLens 100K the best validation point came within the first quarter
    # of the first epoch (~160 of 659 steps), so per-epoch evaluation trained
    # 3 epochs past it before stopping; every 100 steps stopped at step 400 and
    # the whole run took 102 s on one core.
    eval_every: int = 100
    set_weight: float = 1.0  # weight of the set (any-order slate) target beside next-item CE
    negative_weight: float = 1.0  # weight of the unlikelihood term on shown-but-ignored items (--events)
    history_weight: float = 0.5  # weight of next-item targets inside the history
    p_query: float = 0.35  # examples with a pseudo-query and the history
    p_query_only: float = 0.15  # examples with a pseudo-query and no history
    stride: int = 1  # use every stride-th cut point of a sequence
    min_rating: float | None = None
    event_types: tuple[str, ...] = ()  # event names to keep (empty = all)
    max_events_per_user: int = 500  # newest events kept per user (memory bound)
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    head_dim: int = 32
    intermediate: int = 128
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # torch CPU threads (0 = torch's default: every core). One by default: the
    # model's matrices are tiny (hidden 64), so a second intra-op thread costs
    # more in synchronisation than it gains; on 2 idle cores, 100 steps of
    # MovieLens 100K took 36.8 s with 1 thread and 136.3 s with 2 (same result).
    threads: int = 1
    eval_k: int = 10
    diversity: float = 0.5  # of the DPP baselines in the final table
    max_candidates: int = 500  # per validation user: unseen items, best pointwise first

    def shape(self) -> ModelShape:
        return ModelShape(hidden=self.hidden, layers=self.layers, heads=self.heads,
                          head_dim=self.head_dim, intermediate=self.intermediate,
                          max_positions=max(256, 2 * (self.max_history + self.slate_k + 3)))


@dataclass
class TrainResult:
    out: Path
    manifest: Manifest | None  # None on the ranks other than 0 of a distributed run
    losses: list[float] = field(default_factory=list)  # per optimiser step
    table: list[dict] = field(default_factory=list)


# ---- infrastructure ---------------------------------------------------------------

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    torch.use_deterministic_algorithms(True, warn_only=True)


@dataclass
class Dist:
    """torch.distributed as set up by torchrun/accelerate (WORLD_SIZE > 1)."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, cuda: bool) -> Dist:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as td

        if not td.is_initialized():
            td.init_process_group("nccl" if cuda else "gloo")
        return cls(world, td.get_rank(), int(os.environ.get("LOCAL_RANK", "0")))

    def broadcast_flag(self, flag: bool) -> bool:
        if self.world == 1:
            return flag
        import torch.distributed as td

        t = torch.tensor([int(flag)], device="cuda" if td.get_backend() == "nccl" else "cpu")
        td.broadcast(t, 0)
        return bool(t.item())


def resolve_device(name: str, dist: Dist) -> torch.device:
    if name == "auto":
        name = f"cuda:{dist.local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


class Progress:
    """A tqdm bar on a terminal; JSON lines on stderr otherwise (logs, CI)."""

    def __init__(self, enabled: bool, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.total = 0
        self.bar = None

    def event(self, kind: str, **fields) -> None:
        if not self.enabled:
            return
        if not self.tty:
            print(json.dumps({"event": kind, **fields}, default=_json_default), file=self.stream, flush=True)
            return
        if kind == "step":
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=self.total or None, file=self.stream, unit="step", dynamic_ncols=True)
            self.bar.update(fields["steps"])
            self.bar.set_postfix(loss=f"{fields['loss']:.3f}", epoch=fields["epoch"])
            return
        if kind == "read":
            text = "\n".join([f"read {fields['rows_read']} rows, used {fields['rows_used']}",
                              *fields["problems"]])
        elif kind == "read_events":
            text = "\n".join([
                f"read {fields['records']} feedback records: {fields['slates']} slates, events "
                f"{fields['events']}, {fields['interactions_used']} interactions used, "
                f"{fields['slate_examples']} slate examples ({fields['positives']} positives, "
                f"{fields['negatives']} negatives)", *fields["problems"]])
        elif kind == "start":
            text = (f"training on {fields['device']} (world {fields['world']}): {fields['examples']} examples, "
                    f"{fields['steps_per_epoch']} steps per epoch, {fields['valid_users']} validation users")
        elif kind == "done":
            text = f"best validation nDCG@10 {fields['best_ndcg']:.4f} at step {fields['best_step']}"
        elif kind == "eval":
            text = (f"epoch {fields['epoch']}: validation nDCG@10 {fields['ndcg']:.4f} "
                    f"hit@10 {fields['hit']:.3f}{'  (best)' if fields['best'] else ''}")
        else:
            text = json.dumps({"event": kind, **fields}, default=_json_default)
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(type(o).__name__)


# ---- loss -----------------------------------------------------------------------------

def slate_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor], set_weight: float,
               negative_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted mean over target positions of next-item CE + set_weight x set
    NLL (mean -log p over the window: a multi-label softmax), plus
    negative_weight x the unlikelihood of the batch's negatives."""
    logp = logits.float().log_softmax(-1)
    labels, sets, w = batch["labels"], batch["sets"], batch["weights"]
    ce = -logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * (labels >= 0)
    valid = sets >= 0
    set_nll = -(logp.gather(-1, sets.clamp(min=0)) * valid).sum(-1) / valid.sum(-1).clamp(min=1)
    total = w.sum().clamp(min=1e-8)
    ce_mean, set_mean = (ce * w).sum() / total, (set_nll * w).sum() / total
    loss = ce_mean + set_weight * set_mean
    ul = unlikelihood(logp, batch["negatives"], batch["negatives_at"]) if negative_weight else None
    if ul is not None:
        loss = loss + negative_weight * ul
    return loss, {"ce": ce_mean.item(), "set": set_mean.item(), "ul": ul.item() if ul is not None else 0.0}


def unlikelihood(logp: torch.Tensor, negatives: torch.Tensor, at: torch.Tensor) -> torch.Tensor | None:
    """Token-level unlikelihood (Welleck et al. 2019): at each row's position
    ``at`` (the first step), the sum over its negatives of -log(1 - p(item)),
    averaged over the rows that have negatives; None when none has. Unlike
    pushing log p(item) down without end, it fades as the item becomes
    unlikely, so an ignored item is demoted, not erased."""
    valid = negatives >= 0
    rows = valid.any(-1).sum()
    if not rows:
        return None
    first = logp[torch.arange(len(at), device=at.device), at.clamp(min=0)]
    p = first.gather(-1, negatives.clamp(min=0)).exp().clamp(max=1 - 1e-6)  # finite log and gradient
    return -(torch.log1p(-p) * valid).sum() / rows


# ---- decoding and evaluation ---------------------------------------------------------------

@torch.no_grad()
def _forward_last(model: SlateModel, ids: torch.Tensor) -> torch.Tensor:
    return model(ids)[:, -1]


@torch.no_grad()
def first_step_and_greedy(model: SlateModel, prompts: Sequence[list[int]], allowed: np.ndarray,
                          k: int, device: torch.device, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Item logits of the first step and greedy slates of k distinct allowed
    items, for token prompts ending in [SEP]. Prompts of equal length are
    batched together, so there is no padding to get wrong."""
    model.eval()
    n, n_items = len(prompts), model.n_items
    first = np.zeros((n, n_items), dtype=np.float32)
    slates = np.full((n, k), -1, dtype=np.int64)
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    for rows_all in by_len.values():
        for s in range(0, len(rows_all), batch):
            rows = rows_all[s:s + batch]
            ids = torch.tensor([prompts[r] for r in rows], device=device)
            mask = torch.from_numpy(allowed[rows]).to(device)
            for step in range(k):
                logits = _forward_last(model, ids).float()
                if step == 0:
                    first[rows] = logits.cpu().numpy()
                logits = logits.masked_fill(~mask, -math.inf)
                pick = logits.argmax(-1)
                ok = torch.isfinite(logits.gather(-1, pick[:, None]).squeeze(-1))
                slates[rows, step] = torch.where(ok, pick, -1).cpu().numpy()
                mask[torch.arange(len(rows), device=device), pick] = False
                ids = torch.cat([ids, (pick + N_SPECIAL)[:, None]], 1)
    model.train()
    return first, slates


class Evaluator:
    """The validation split as the server would see it: history-only
    prompts, candidates = the items the user has not had (at most
    ``max_candidates``, the best by pointwise score first).

    Memory is O(validation users x catalogue items) floats (pointwise scores,
    first-step logits): 2000 users x 10k items is 80 MB each; lower
    ``max_valid_users`` for larger catalogues."""

    def __init__(self, split: Split, items: Sequence[CatalogueItem], vectors: np.ndarray,
                 cfg: TrainConfig):
        self.items, self.vectors, self.cfg = items, vectors, cfg
        n_items = len(items)
        self.histories = [split.valid_history(i)[-cfg.max_history:] for i in range(len(split.valid_users))]
        self.relevant = split.valid_relevant
        self.prompts = [prompt_tokens(h.tolist(), False) for h in self.histories]
        # pointwise: the server's history-only context vector, cosine to every item
        ctx = np.stack([vectors[h].mean(axis=0) for h in self.histories])
        ctx /= np.linalg.norm(ctx, axis=1, keepdims=True) + 1e-12
        self.pointwise = ctx @ vectors.T
        self.popularity = np.bincount(np.concatenate(split.train), minlength=n_items).astype(np.float32)
        self.allowed = np.ones((len(self.histories), n_items), dtype=bool)
        for r, u in enumerate(split.valid_users):
            self.allowed[r, split.train[int(u)]] = False
            if self.allowed[r].sum() > cfg.max_candidates:
                order = np.argsort(-np.where(self.allowed[r], self.pointwise[r], -np.inf), kind="stable")
                self.allowed[r] = False
                self.allowed[r, order[:cfg.max_candidates]] = True

    def quick(self, model: SlateModel, device: torch.device) -> dict[str, float]:
        """nDCG@10 / hit@10 of the greedy slates (early stopping)."""
        _, slates = first_step_and_greedy(model, self.prompts, self.allowed, self.cfg.eval_k, device)
        from slatewise.evaluation.metrics import hit_rate

        rel = [set(r.tolist()) for r in self.relevant]
        return {"ndcg": nanmean([ndcg_at_k(s.tolist(), r, self.cfg.eval_k) for s, r in zip(slates, rel)]),
                "hit": nanmean([hit_rate(s.tolist(), r, self.cfg.eval_k) for s, r in zip(slates, rel)])}

    def table(self, model: SlateModel, device: torch.device) -> list[dict]:
        """Every strategy on the same candidates, scored by
        slatewise.evaluation.metrics.slate_quality (relevant = held-out items)."""
        k, d = self.cfg.eval_k, self.cfg.diversity
        first, greedy = first_step_and_greedy(model, self.prompts, self.allowed, k, device)
        ids = [it.id for it in self.items]
        rows = {
            "model (greedy slate)": "the trained model writing the slate item by item, greedy, distinct items",
            "model (first-step top-10)": "top-10 of the model's distribution at [SEP]",
            f"model + DPP (d={d:g})": "fast greedy DPP, quality = the model's first-step logits",
            "pointwise (text similarity)": "top-10 by cosine(mean history text embedding, item): "
                                           "the server's history-only pointwise score",
            f"pointwise + DPP (d={d:g})": "fast greedy DPP on the text-similarity score (select('dpp'))",
            "popularity": "top-10 by training interactions",
        }
        per: dict[str, list] = {name: [] for name in rows}
        for r in range(len(self.prompts)):
            cand = np.flatnonzero(self.allowed[r])
            emb = self.vectors[cand]
            slates = {
                "model (greedy slate)": [int(i) for i in greedy[r] if i >= 0],
                "model (first-step top-10)": _top(first[r], cand, k),
                f"model + DPP (d={d:g})": [int(cand[j]) for j in select("dpp", emb, first[r][cand], k, d)],
                "pointwise (text similarity)": _top(self.pointwise[r], cand, k),
                f"pointwise + DPP (d={d:g})": [int(cand[j]) for j in select("dpp", emb, self.pointwise[r][cand], k, d)],
                "popularity": _top(self.popularity, cand, k),
            }
            cats = {ids[i]: self.items[i].category for i in cand}
            embs = {ids[i]: self.vectors[i] for i in cand}
            scores = {ids[i]: float(self.pointwise[r, i]) for i in cand}
            relevant = {ids[i] for i in self.relevant[r]}
            for name, slate in slates.items():
                per[name].append(slate_quality([ids[i] for i in slate], k=k, relevant=relevant,
                                               categories=cats, scores=scores, embeddings=embs))
        out = []
        for name, desc in rows.items():
            row = {"strategy": name, "description": desc, "users": len(per[name])}
            for metric in METRIC_NAMES:
                if metric != "mean_score":
                    row[metric] = round(nanmean([getattr(q, metric) for q in per[name]]), 4)
            out.append(row)
        return out


def _top(scores: np.ndarray, cand: np.ndarray, k: int) -> list[int]:
    return [int(cand[j]) for j in np.argsort(-scores[cand], kind="stable")[:k]]


def markdown_table(table: list[dict], k: int = 10) -> str:
    lines = [f"| strategy | nDCG@{k} | hit rate@{k} | ILD | category coverage | redundancy |",
             "|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['strategy']} | {r['ndcg']:.4f} | {r['hit']:.4f} | {r['ild']:.4f} "
                     f"| {r['coverage']:.4f} | {r['redundancy']:.4f} |")
    return "\n".join(lines)


# ---- the run ------------------------------------------------------------------------------------

def train(cfg: TrainConfig, interactions: Path | None, catalogue: Path, out: Path, embed: Embed,
          embedding_model: str = "embedded", progress: bool = True,
          event_logs: Sequence[Path] = ()) -> TrainResult:
    """Read, split, train with early stopping, write the model directory.

    The data is an interaction file, feedback logs (``event_logs``, see
    slatewise.training.events) or both, pooled. Raises CatalogueError /
    InteractionsError for unusable input. Torch's global settings (threads,
    deterministic algorithms) are restored after."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        seed_everything(cfg.seed)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        return _train(cfg, interactions, list(event_logs), catalogue, out, embed, embedding_model, progress)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _read_interaction_file(cfg: TrainConfig, path: Path, item_index: dict[str, int],
                           prog: Progress) -> InteractionLog:
    log = read_interactions(path, item_index, min_rating=cfg.min_rating,
                            events=cfg.event_types or None, max_events_per_user=cfg.max_events_per_user)
    report = log.report
    prog.event("read", rows_read=report.rows_read, rows_used=report.rows_used, bad=dict(report.bad),
               filtered=dict(report.filtered), problems=report.problems())
    if report.rows_used == 0:
        detail = "\n".join(report.problems()[:20])
        raise InteractionsError(f"{path}: no usable rows among {report.rows_read}"
                                + (f":\n{detail}" if detail else ""))
    return log


def _read_feedback(cfg: TrainConfig, directories: list[Path], item_index: dict[str, int],
                   prog: Progress) -> FeedbackData:
    feedback = read_events(directories, item_index, min_rating=cfg.min_rating,
                           event_types=cfg.event_types or None, max_events_per_user=cfg.max_events_per_user,
                           max_history=cfg.max_history)
    report = feedback.report
    prog.event("read_events", **report.as_dict(), problems=report.problems())
    if not report.interactions_used and not feedback.slates:
        detail = "\n".join(report.problems()[:20])
        raise InteractionsError(f"{', '.join(report.paths)}: no usable interaction or shown slate among "
                                f"{report.records} records" + (f":\n{detail}" if detail else ""))
    return feedback


def _read_data(cfg: TrainConfig, interactions: Path | None, event_logs: list[Path],
               item_index: dict[str, int], prog: Progress) -> tuple[InteractionLog, FeedbackData | None, dict]:
    """The interaction file and the feedback logs as one pool of users, the
    feedback slates, and the data summary for the manifest."""
    logs, data, feedback = [], {}, None
    if interactions is not None:
        logs.append(_read_interaction_file(cfg, interactions, item_index, prog))
        data["read"] = logs[-1].report.as_dict()
    if event_logs:
        feedback = _read_feedback(cfg, event_logs, item_index, prog)
        logs.append(feedback.log)
        data["events"] = feedback.report.as_dict()
    if len(logs) == 1:
        return logs[0], feedback, data
    pooled = merge_logs(logs, cfg.max_events_per_user)
    data["pooled"] = pooled.report.as_dict()
    return pooled, feedback, data


def _train(cfg: TrainConfig, interactions: Path | None, event_logs: list[Path], catalogue: Path, out: Path,
           embed: Embed, embedding_model: str, progress: bool) -> TrainResult:
    dist = Dist.from_env(cuda=cfg.device != "cpu" and torch.cuda.is_available())
    device = resolve_device(cfg.device, dist)
    items = load_jsonl(catalogue)
    item_index = {it.id: i for i, it in enumerate(items)}
    prog = Progress(progress and dist.main)
    log, feedback, data = _read_data(cfg, interactions, event_logs, item_index, prog)
    source = ", ".join(str(p) for p in ([interactions] if interactions else []) + event_logs)
    split = time_split(log, cfg.holdout, cfg.min_history, cfg.max_valid_users, cfg.seed)
    if len(split.valid_users) == 0:
        raise InteractionsError(
            f"{source}: no user has {cfg.holdout + cfg.min_history} events with a new item among "
            f"the last {cfg.holdout}: nothing to validate on (try a smaller --holdout)")
    split_summary = split.summary()
    vectors = np.asarray(embed([it.text() for it in items]), dtype=np.float32)
    queries = QueryBank(items, vectors, embed) if cfg.p_query + cfg.p_query_only > 0 else None

    model = build_model(vectors, cfg.shape(), cfg.seed).to(device)
    examples = SlateExamples(split, queries, max_history=cfg.max_history, slate_k=cfg.slate_k,
                             stride=cfg.stride, p_query=cfg.p_query, p_query_only=cfg.p_query_only,
                             history_weight=cfg.history_weight, seed=cfg.seed)
    dataset: torch.utils.data.Dataset = examples
    if feedback is not None:
        shown, held_out = before_holdout(feedback.slates, log, split)
        split_summary.update(slate_examples=len(shown), slate_examples_held_out=held_out)
        if shown:
            dataset = torch.utils.data.ConcatDataset(
                [examples, FeedbackExamples(shown, embed, slate_k=cfg.slate_k)])
    if len(dataset) == 0:
        raise InteractionsError(f"{source}: no user has two training events: nothing to learn from")
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel
        from torch.utils.data import DistributedSampler

        sampler = DistributedSampler(dataset, num_replicas=dist.world, rank=dist.rank,
                                     shuffle=True, seed=cfg.seed)
        wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        from torch.utils.data import RandomSampler

        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(cfg.seed))
        wrapped = model
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler,
                                         collate_fn=collate, num_workers=0)
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)))

    evaluator = Evaluator(split, items, vectors, cfg) if dist.main else None
    steps_per_epoch = len(loader)
    total = cfg.epochs * steps_per_epoch if not cfg.max_steps else min(cfg.max_steps, cfg.epochs * steps_per_epoch)
    prog.total = total
    prog.event("start", examples=len(dataset), steps_per_epoch=steps_per_epoch, users=len(log),
               valid_users=len(split.valid_users), items=len(items), device=str(device), world=dist.world)
    if dist.main:
        (out / MANIFEST_FILE).unlink(missing_ok=True)  # a stale manifest must not vouch for new weights
        first = evaluator.quick(model, device)
        history = [{"epoch": 0, "step": 0, **first}]
        best, best_state, best_step = first["ndcg"], copy.deepcopy(model.state_dict()), 0
        save_model(model, out)
        prog.event("eval", epoch=0, ndcg=first["ndcg"], hit=first["hit"], best=True)

    losses: list[float] = []
    step, logged, stale, started, evaluated = 0, 0, 0, time.monotonic(), 0

    def evaluate(epoch: int) -> bool:
        """Validate, checkpoint an improvement; True = stop (patience ran out)."""
        nonlocal best, best_state, best_step, stale, evaluated
        stop = False
        if dist.main:
            figures = evaluator.quick(model, device)
            improved = figures["ndcg"] > best + 1e-6
            history.append({"epoch": epoch, "step": step,
                            "loss": float(np.mean(losses[evaluated:])) if step > evaluated else None,
                            **figures})
            if improved:
                best, best_state, best_step, stale = figures["ndcg"], copy.deepcopy(model.state_dict()), step, 0
                save_model(model, out)  # checkpoint: the best so far is on disk
            else:
                stale += 1
            prog.event("eval", epoch=epoch, step=step, ndcg=figures["ndcg"], hit=figures["hit"], best=improved)
            stop = stale >= cfg.patience
        evaluated = step
        return dist.broadcast_flag(stop)
    stop = False
    for epoch in range(1, cfg.epochs + 1):
        examples.set_epoch(epoch)
        if dist.world > 1:
            sampler.set_epoch(epoch)
        seen = 0
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = wrapped(batch["ids"], batch["attention_mask"], batch["query"], batch["query_at"])
            loss, parts = slate_loss(logits, batch, cfg.set_weight, cfg.negative_weight)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            warmup.step()
            step += 1
            seen += len(batch["ids"])
            losses.append(loss.item())
            if step % LOG_EVERY == 0 or step == total:
                prog.event("step", epoch=epoch, step=step, steps=step - logged, loss=round(losses[-1], 5),
                           ce=round(parts["ce"], 5), set=round(parts["set"], 5), ul=round(parts["ul"], 5),
                           lr=optimiser.param_groups[0]["lr"],
                           examples_per_s=round(seen * dist.world / max(1e-9, time.monotonic() - started), 1))
                logged = step
            stop = bool(cfg.max_steps and step >= cfg.max_steps)
            if stop or (cfg.eval_every and step % cfg.eval_every == 0):
                stop = evaluate(epoch) or stop
            if stop:
                break
        if stop or (not cfg.eval_every and evaluate(epoch)):
            break
        started = time.monotonic()
    if evaluated != step:  # steps after the last evaluation (eval_every)
        evaluate(epoch)

    result = TrainResult(out, None, losses)
    if dist.main:
        model.load_state_dict(best_state)
        save_model(model, out)
        table = evaluator.table(model, device)
        result.table = table
        result.manifest = Manifest(
            item_tokens={it.id: N_SPECIAL + i for i, it in enumerate(items)},
            special_tokens=dict(SPECIAL_TOKENS),
            catalogue_fingerprint=catalogue_fingerprint(items),
            catalogue_items=len(items),
            query_projection=QUERY_PROJECTION_FILE,
            embedding_model=embedding_model,
            prompt={"layout": "[BOS] [query]? history... [SEP]", "max_history": cfg.max_history,
                    "slate_k": cfg.slate_k, "history": "item tokens, oldest first, the newest max_history",
                    "query": "query_projection(unit-norm text embedding of the query) as the prompt_embeds "
                             "row at position 1; absent (no slot) without a query"},
            data={**data, "split": split_summary, "examples": len(dataset), "catalogue_path": str(catalogue)},
            settings={**asdict(cfg), "event_types": list(cfg.event_types), "world_size": dist.world,
                      "event_logs": [str(p) for p in event_logs],
                      "device_used": str(device), "torch_threads": torch.get_num_threads()},
            validation={"metric": f"nDCG@{cfg.eval_k} of the greedy slate", "best_step": best_step,
                        "history": history, "table": table, "steps": step,
                        "first_loss": losses[0] if losses else None,
                        "last_loss": losses[-1] if losses else None},
        )
        result.manifest.save(out)
        prog.event("done", best_step=best_step, best_ndcg=best, steps=step, out=str(out))
    prog.close()
    return result
