"""Offline evaluation of trained slate models on held-out cases (no server).

    .venv/bin/python tests/eval_data/offline_model_eval.py \\
        --cases ~/.cache/slatewise/data/ml-100k/cases_test.jsonl --model DIR [--model DIR2 ...]

For every case, the case's inline candidates (with their upstream ``score``)
are ranked by:

* ``pointwise``: top-K by the upstream score (slatewise.pointwise.select.top_k)
* ``MMR (d)`` / ``DPP (d)``: the server's re-rankers over the upstream score,
  exactly as ``slatewise eval``'s local rows (MMR on min-max scaled scores)
* ``DPP+cat (upstream, d, a)``: select.dpp over the upstream score with the
  category-aware kernel below (a baseline for the model+DPP+cat rows)
* per model directory (one per training seed):
  - ``model greedy``: the model writing the slate item by item (greedy,
    torch, the HF model of the directory), restricted to the candidates;
    prompt = [BOS] + the case's last ``max_history`` history items mapped
    through the manifest + [SEP], as the server builds it;
  - ``model first-step``: top-K of the model's distribution at [SEP];
  - ``fused first-step (w)``: top-K of z(model log-prob) + w z(upstream),
    z-scored over the case's candidates;
  - ``model+DPP (w, d)``: fast greedy DPP (select.dpp) with the fused
    first-step score as quality;
  - ``model+DPP+cat (w, d, a)``: the same DPP on unit vectors whose dot
    products are (1 - a) cosine + a [same category] (--category-weight);
  - ``fused AR greedy (w)``: autoregressive: at each step the model's
    *conditional* log-probs (given the picks so far) fused with the upstream
    score, argmax;
  - ``fused AR-DPP (w, d)``: autoregressive with a DPP marginal gain: with
    L = diag(q) S diag(q), log det gain of item i = 2 log q_i + log r_i where
    r_i is i's Cholesky residual under the (unweighted) similarity kernel S
    given the picks so far; log q_i = beta * fused_t(i) with beta = (1 - d)
    as in select.dpp, fused_t using the conditional log-probs of step t.
    With a step-independent score it is exactly select.dpp's pick.

Every slate is scored by slatewise.evaluation.metrics.slate_quality with the
same embeddings as ``slatewise eval`` (runner.prepare_cases). Per row: the
mean nDCG@K / hit@K / ILD / category coverage, and paired bootstrap 95% CIs
(cases resampled) of row minus pointwise (nDCG, hit) and row minus DPP (ILD,
coverage). Slates are checked: K distinct candidates, else the run fails.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from slatewise.evaluation.cases import load_cases
from slatewise.evaluation.metrics import nanmean
from slatewise.evaluation.runner import minmax, prepare_cases
from slatewise.pointwise.select import EPS, dpp, mmr, top_k
from slatewise.training.data import N_SPECIAL, prompt_tokens
from slatewise.training.manifest import Manifest
from slatewise.training.model import load_model

METRICS = ("ndcg", "hit", "ild", "coverage")


def zscore(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return (x - x.mean()) / (x.std() + EPS)


class CaseModel:
    """One model's view of the cases: prompts, candidate token indices."""

    def __init__(self, model_dir: Path, cases, threads: int):
        torch.set_num_threads(threads)
        self.dir = model_dir
        self.model = load_model(model_dir).eval()
        manifest = Manifest.load(model_dir)
        self.tokens = manifest.item_tokens
        max_history = int(manifest.prompt.get("max_history", 20))
        self.prompts, self.cands = [], []
        for case in cases:
            hist = [self.tokens[h.id] - N_SPECIAL for h in case.context.history if h.id in self.tokens]
            self.prompts.append(prompt_tokens(hist[-max_history:], False))
            missing = [c.id for c in case.candidates if c.id not in self.tokens]
            if missing:
                raise SystemExit(f"{model_dir}: case {case.id}: candidates without a token: {missing[:5]}")
            self.cands.append(np.array([self.tokens[c.id] - N_SPECIAL for c in case.candidates]))

    @torch.no_grad()
    def step_logprobs(self, prefixes: list[list[int]]) -> list[np.ndarray]:
        """Log-softmax over each case's candidates of the next-item logits
        after prompt + prefix (prefix = candidate positions picked so far)."""
        out: list[np.ndarray | None] = [None] * len(prefixes)
        seqs = [self.prompts[i] + [int(self.cands[i][j]) + N_SPECIAL for j in p]
                for i, p in enumerate(prefixes)]
        by_len: dict[int, list[int]] = {}
        for i, s in enumerate(seqs):
            by_len.setdefault(len(s), []).append(i)
        for rows in by_len.values():
            for s in range(0, len(rows), 256):
                chunk = rows[s:s + 256]
                logits = self.model(torch.tensor([seqs[r] for r in chunk]))[:, -1].float().numpy()
                for r, row in zip(chunk, logits):
                    x = row[self.cands[r]].astype(np.float64)
                    out[r] = x - (np.log(np.exp(x - x.max()).sum()) + x.max())
        return out  # type: ignore[return-value]

    def decode(self, choose) -> list[list[int]]:
        """Autoregressive decoding over the candidates: ``choose(case, step,
        logprobs, picked)`` returns the next candidate position."""
        picked: list[list[int]] = [[] for _ in self.prompts]
        k = self.k
        for step in range(k):
            lps = self.step_logprobs(picked)
            for i, lp in enumerate(lps):
                picked[i].append(choose(i, step, lp, picked[i]))
        return picked


def masked_argmax(score: np.ndarray, picked: list[int]) -> int:
    s = score.copy()
    s[picked] = -np.inf
    return int(np.argmax(s))


class ARDPP:
    """Per-case incremental Cholesky of the unweighted similarity kernel:
    residual r_i = S_ii - ||c_i||^2 given the picks so far."""

    def __init__(self, matrix: np.ndarray, k: int):
        self.m = matrix.astype(np.float64)
        self.res = np.ones(len(matrix)) + EPS
        self.c = np.zeros((len(matrix), k))
        self.n = 0

    def add(self, j: int) -> None:
        sim = self.m @ self.m[j]
        proj = self.c[:, :self.n] @ self.c[j, :self.n] if self.n else 0.0
        upd = (sim - proj) / (math.sqrt(max(self.res[j], EPS)) + EPS)
        self.c[:, self.n] = upd
        self.res = np.maximum(self.res - upd * upd, 0.0)
        self.n += 1


def bootstrap_ci(diff: np.ndarray, n: int, seed: int = 0) -> tuple[float, float]:
    diff = diff[~np.isnan(diff)]
    if not len(diff):
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n, len(diff)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=Path, required=True)
    p.add_argument("--model", type=Path, action="append", default=[], help="model directory (repeat per seed)")
    p.add_argument("--diversity", type=float, default=0.5, help="d of the MMR / DPP baselines (0.5)")
    p.add_argument("--fuse", type=float, nargs="+", default=[1.0], help="weights w of z(upstream) in the fused rows")
    p.add_argument("--model-diversity", type=float, nargs="+", default=None,
                   help="d of the model+DPP and AR-DPP rows (default: --diversity)")
    p.add_argument("--ar-diversity", type=float, nargs="*", default=None,
                   help="d of the AR-DPP rows (default: --model-diversity; none = no AR-DPP rows)")
    p.add_argument("--category-weight", type=float, nargs="*", default=[],
                   help="a of the model+DPP+cat rows: DPP kernel (1-a) cosine + a [same category]")
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, help="also write every figure (and per-case slates) here")
    args = p.parse_args(argv)

    from slatewise.evaluation.cli import _embedder

    cases = load_cases(args.cases)
    prepared = prepare_cases(cases, _embedder())
    k = cases[0].k
    d = args.diversity
    mds = args.model_diversity or [d]
    ards = mds if args.ar_diversity is None else args.ar_diversity

    def with_category(pc, a: float) -> np.ndarray:
        """Unit rows whose dot products are (1-a) cosine + a [same category]."""
        cats = sorted({c.category for c in pc.case.candidates})
        onehot = np.zeros((len(pc.case.candidates), len(cats)), dtype=np.float32)
        for i, c in enumerate(pc.case.candidates):
            onehot[i, cats.index(c.category)] = 1.0
        return np.hstack([math.sqrt(1 - a) * pc.matrix, math.sqrt(a) * onehot]).astype(np.float32)
    upstream = [np.array([c.score for c in case.candidates], dtype=np.float32) for case in cases]
    slates: dict[str, list[list[int]]] = {
        "pointwise": [top_k(u, k) for u in upstream],
        f"MMR (d={d:g})": [mmr(pc.matrix, minmax(u), k, d) for pc, u in zip(prepared, upstream)],
        f"DPP (d={d:g})": [dpp(pc.matrix, u, k, d) for pc, u in zip(prepared, upstream)],
    }
    for md in mds:  # the category-aware kernel over the upstream score: is it the kernel or the model?
        for a in args.category_weight:
            slates[f"DPP+cat (upstream, d={md:g}, a={a:g})"] = [
                dpp(with_category(pc, a), u, k, md) for pc, u in zip(prepared, upstream)]
    model_rows: list[str] = []
    for mi, model_dir in enumerate(args.model):
        cm = CaseModel(model_dir, cases, args.threads)
        cm.k = k
        tag = f"s{mi}" if len(args.model) > 1 else ""
        def name(row: str) -> str:
            n = f"{row} [{tag}]" if tag else row
            model_rows.append(n)
            return n
        first = cm.step_logprobs([[] for _ in cases])
        slates[name("model greedy")] = cm.decode(lambda i, t, lp, pk: masked_argmax(lp, pk))
        slates[name("model first-step")] = [top_k(lp.astype(np.float32), k) for lp in first]
        zu = [zscore(u) for u in upstream]
        for w in args.fuse:
            fused = [(zscore(lp) + w * z).astype(np.float32) for lp, z in zip(first, zu)]
            slates[name(f"fused first-step (w={w:g})")] = [top_k(f, k) for f in fused]
            for md in mds:
                slates[name(f"model+DPP (w={w:g}, d={md:g})")] = [
                    dpp(pc.matrix, f, k, md) for pc, f in zip(prepared, fused)]
                for a in args.category_weight:
                    slates[name(f"model+DPP+cat (w={w:g}, d={md:g}, a={a:g})")] = [
                        dpp(with_category(pc, a), f, k, md) for pc, f in zip(prepared, fused)]
            slates[name(f"fused AR greedy (w={w:g})")] = cm.decode(
                lambda i, t, lp, pk, w=w: masked_argmax(zscore(lp) + w * zu[i], pk))
            for md in ards:
                beta = 1.0 - md
                states = [ARDPP(pc.matrix, k) for pc in prepared]

                def choose(i, t, lp, pk, w=w, beta=beta, states=states):
                    st = states[i]
                    rem = np.ones(len(lp), dtype=bool)
                    rem[pk] = False
                    f = np.full(len(lp), -np.inf)
                    f[rem] = zscore(lp[rem]) + w * zscore(upstream[i][rem])
                    gain = 2 * beta * f + np.log(st.res + EPS)
                    j = masked_argmax(gain, pk)
                    st.add(j)
                    return j
                slates[name(f"fused AR-DPP (w={w:g}, d={md:g})")] = cm.decode(choose)

    # validity and scoring
    quality: dict[str, np.ndarray] = {}
    for row, per_case in slates.items():
        vals = np.full((len(cases), len(METRICS)), np.nan)
        for c, (case, pc, order) in enumerate(zip(cases, prepared, per_case)):
            if len(order) != k or len(set(order)) != k or not all(0 <= j < len(case.candidates) for j in order):
                raise SystemExit(f"{row}: case {case.id}: invalid slate {order}")
            q = pc.quality([case.candidates[j].id for j in order])
            vals[c] = [getattr(q, m) for m in METRICS]
        quality[row] = vals
    base, div = quality["pointwise"], quality[f"DPP (d={d:g})"]
    recall = sum(c.relevant_in_candidates for c in cases) / max(1, sum(len(c.relevant) for c in cases))
    print(f"Cases: {len(cases)} from {args.cases.name}; K = {k}; "
          f"{sum(len(c.candidates) for c in cases) / len(cases):.0f} candidates per case; relevant among "
          f"candidates {recall:.1%}; paired bootstrap 95% CI ({args.bootstrap} resamples)\n")
    print("| row | nDCG@10 | Δ vs pointwise [95% CI] | hit@10 | ILD | Δ ILD vs DPP [CI] | coverage | "
          "Δ cov vs DPP [CI] |")
    print("|---|---:|---|---:|---:|---|---:|---|")
    summary = {}
    for row, vals in quality.items():
        means = {m: nanmean(vals[:, j].tolist()) for j, m in enumerate(METRICS)}
        dn = vals[:, 0] - base[:, 0]
        di, dc = vals[:, 2] - div[:, 2], vals[:, 3] - div[:, 3]
        ci_n, ci_i, ci_c = (bootstrap_ci(x, args.bootstrap) for x in (dn, di, dc))
        summary[row] = {**means, "d_ndcg": float(np.nanmean(dn)), "d_ndcg_ci": ci_n,
                        "d_ild_vs_dpp": float(np.nanmean(di)), "d_ild_ci": ci_i,
                        "d_cov_vs_dpp": float(np.nanmean(dc)), "d_cov_ci": ci_c,
                        "ndcg_ratio": means["ndcg"] / summary.get("pointwise", means)["ndcg"]}
        s = summary[row]
        print(f"| {row} | {means['ndcg']:.4f} | {s['d_ndcg']:+.4f} [{ci_n[0]:+.4f}, {ci_n[1]:+.4f}] | "
              f"{means['hit']:.3f} | {means['ild']:.4f} | {s['d_ild_vs_dpp']:+.4f} [{ci_i[0]:+.4f}, {ci_i[1]:+.4f}] | "
              f"{means['coverage']:.4f} | {s['d_cov_vs_dpp']:+.4f} [{ci_c[0]:+.4f}, {ci_c[1]:+.4f}] |")
    if len(args.model) > 1:  # per-case metrics averaged over the seeds' models, then compared
        print(f"\nMean over the {len(args.model)} models (per-case metrics averaged over seeds, "
              "then the same paired bootstrap):\n")
        print("| row | nDCG@10 | Δ vs pointwise [95% CI] | × pointwise | hit@10 | ILD | Δ ILD vs DPP [CI] | "
              "coverage | Δ cov vs DPP [CI] | seeds' nDCG@10 |")
        print("|---|---:|---|---:|---:|---:|---|---:|---|---|")
        groups: dict[str, list[str]] = {}
        for row in model_rows:
            groups.setdefault(row.rsplit(" [s", 1)[0], []).append(row)
        for base_row, rows in groups.items():
            vals = np.mean([quality[r] for r in rows], axis=0)
            means = {m: nanmean(vals[:, j].tolist()) for j, m in enumerate(METRICS)}
            dn, di, dc = vals[:, 0] - base[:, 0], vals[:, 2] - div[:, 2], vals[:, 3] - div[:, 3]
            ci_n, ci_i, ci_c = (bootstrap_ci(x, args.bootstrap) for x in (dn, di, dc))
            per_seed = ", ".join(f"{summary[r]['ndcg']:.3f}" for r in rows)
            summary[base_row + " [mean]"] = {**means, "d_ndcg": float(np.nanmean(dn)), "d_ndcg_ci": ci_n,
                                             "d_ild_vs_dpp": float(np.nanmean(di)), "d_ild_ci": ci_i,
                                             "d_cov_vs_dpp": float(np.nanmean(dc)), "d_cov_ci": ci_c}
            print(f"| {base_row} | {means['ndcg']:.4f} | {np.nanmean(dn):+.4f} [{ci_n[0]:+.4f}, {ci_n[1]:+.4f}] | "
                  f"{means['ndcg'] / summary['pointwise']['ndcg']:.2f} | {means['hit']:.3f} | {means['ild']:.4f} | "
                  f"{np.nanmean(di):+.4f} [{ci_i[0]:+.4f}, {ci_i[1]:+.4f}] | {means['coverage']:.4f} | "
                  f"{np.nanmean(dc):+.4f} [{ci_c[0]:+.4f}, {ci_c[1]:+.4f}] | {per_seed} |")
    if args.json:
        args.json.write_text(json.dumps({"cases": str(args.cases), "models": [str(m) for m in args.model],
                                         "summary": summary,
                                         "slates": {r: [[cases[c].candidates[j].id for j in o]
                                                        for c, o in enumerate(v)] for r, v in slates.items()}},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
