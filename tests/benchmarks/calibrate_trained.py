"""Calibrate the relevance prior and diversity penalty of a trained model
(README, "Trained slate models"): greedy slates of the model (torch,
float32) under the server's own planner, slate spec and automaton, for
history-only requests built from an interaction log (each user's last 5 items
held out as the relevant ones), at several priors and penalties, beside
pointwise and DPP on the same 50 retrieved candidates.

    python -m slatewise.training.synthetic --out /tmp/syn.jsonl
    slatewise train --interactions /tmp/syn.jsonl --catalogue service/slatewise/data/catalogue.jsonl --out /tmp/m
    python tests/benchmarks/calibrate_trained.py /tmp/m /tmp/syn.jsonl
"""
import json, sys
from collections import defaultdict
import numpy as np, torch
from slatewise.catalogue.loader import embedded_catalogue_path, load_jsonl
from slatewise.catalogue.store import CatalogueStore
from slatewise.embeddings import Embedder
from slatewise.config import load_settings
from slatewise.candidates import resolve
from slatewise.domain import SlateRequest
from slatewise.decoding.automaton import SlateAutomaton
from slatewise.evaluation.metrics import ndcg_at_k
from slatewise.model.item_prompts import ItemPromptPlanner, TrainedModel
from slatewise.pointwise.select import select
from slatewise.training.model import load_model
from pathlib import Path
torch.set_num_threads(1)
d = Path(sys.argv[1]); K = 5
s = load_settings([])
emb = Embedder(s.embedding_model, s.embedding_cache_dir)
store = CatalogueStore(load_jsonl(embedded_catalogue_path()), emb)
tm = TrainedModel.load(d); hf = load_model(d).eval()
seqs = defaultdict(list)
for line in open(sys.argv[2]):
    e = json.loads(line); seqs[e["user_id"]].append((e["timestamp"], e["item_id"]))
reqs = []
for u, ev in list(seqs.items())[:120]:
    ids = [i for _, i in sorted(ev)]
    if len(ids) < 8: continue
    hist, nxt = ids[:-5][-10:], set(ids[-5:]) - set(ids[:-5])
    if nxt: reqs.append((hist, nxt))
print(len(reqs), "requests")


def run(lam, div, prior):
    pl = ItemPromptPlanner(tm, max_model_len=8192, relevance_prior=prior, diversity_penalty=lam)
    out = defaultdict(list)
    for hist, rel in reqs:
        r = SlateRequest("c", "", K, None, history_ids=tuple(hist), exclude_ids=frozenset(hist), diversity=div)
        cs = resolve(r, store.snapshot, emb, 50)
        plan = pl.plan(cs)
        auto = SlateAutomaton(plan.spec); ids = list(plan.prompt_tokens); stds = []
        while not auto.done:
            with torch.no_grad():
                logits = hf.llama(input_ids=torch.tensor([ids])).logits[0, -1]
            allowed = auto.allowed()
            toks = [plan.spec.handle_tokens[i] for i in allowed]
            raw = logits[toks].numpy()
            if not auto.chosen: stds.append(raw.std())
            sc = raw + np.array([auto.bias(i) for i in allowed])
            t = toks[int(np.argmax(sc))]; auto.advance(t); ids.append(t)
        slate = [plan.token_to_candidate[plan.spec.handle_tokens[i]] for i in auto.chosen]
        dv = cs.diversity_of(slate)
        out["ndcg"].append(ndcg_at_k([cs.candidates[i].id for i in slate], rel, K))
        out["ild"].append(dv.intra_list_diversity); out["cov"].append(dv.category_coverage)
        out["std"] += stds
        if lam == 0 and div == 0:
            for name, sel in (("pointwise", select("dpp", cs.embeddings, cs.scores, K, 0.0)),
                              ("dpp", select("dpp", cs.embeddings, cs.scores, K, 0.5))):
                d2 = cs.diversity_of(sel)
                out[name+"_ndcg"].append(ndcg_at_k([cs.candidates[i].id for i in sel], rel, K))
                out[name+"_ild"].append(d2.intra_list_diversity); out[name+"_cov"].append(d2.category_coverage)
    return {k: round(float(np.nanmean(v)), 3) for k, v in out.items()}
for prior in (0.5, 1.0):
    print("prior", prior, "div 0", run(0.0, 0.0, prior), flush=True)
for prior in (0.0, 0.5):
    for lam in (8, 16, 32):
        print("prior", prior, "div 1.0 lam", lam, run(lam, 1.0, prior), flush=True)
