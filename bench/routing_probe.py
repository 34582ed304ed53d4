"""Routing probe: how well can a linear router read the axis from the *base* model's hidden states?

    OMP_NUM_THREADS=1 python bench/routing_probe.py [--data-dir ../shared/data] [--cache /tmp/routing_feats.pt]

Same prompts as the shipped router: ``latent.router_prompts`` (250 per axis) to fit,
``latent.heldout_prompts`` (100 per axis) to score. Features: the hidden state of layer L
(6 ... 30) pooled three ways: mean over all chat-template tokens (``all``, what ``latent.features``
does at L = 30), mean over the user's tokens only (``user``), the last token (``last``); plus
concatenations. Each gets ``Router.fit_cv`` on standardized features (weight decay by 5-fold CV),
and prints held-out accuracy, then the per-source accuracy of two of them. A diagnostic of the
ceiling of the routing target, not a timing: it runs the base model once over 1,050 prompts.

First line: a surface-form baseline without the model, the same fit on word 1- and 2-gram
presence (n-grams in at least 2 training prompts), with its cross-validated accuracy on the
training prompts next to held-out: how far the held-out sets' wording departs from the training
sources' (``--lexical-only`` prints just that line).

``--sources v2``: fit on ``latent.router_prompts(sources="v2")`` (what ``train-router --sources
v2`` fits on) and score every held-out routing set of ``alignx.mocae.routing_eval.routing_sets``
(the 300 held-out prompts + Arena-Hard, HarmBench test, SimpleSafetyTests, XSTest safe; 100 per
new source), pooled and per source: the ceiling of issue 14's routing target for these features.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LAYERS = [6, 10, 15, 20, 25, 30]


def lexical(tr_p, ytr, te_p, yte, balanced: bool) -> None:
    """Word 1- and 2-gram presence features -> ``Router.fit_cv``; prints CV and held-out accuracy."""
    import re
    from collections import Counter

    import torch

    from alignx.mocae.router import Router

    def grams(text):
        w = re.findall(r"[a-z']+|[?.!]", text.lower())
        return set(w) | {f"{x} {y}" for x, y in zip(w, w[1:])}

    df = Counter(g for q in tr_p for g in grams(q))
    vocab = {g: i for i, g in enumerate(g for g, c in df.items() if c >= 2)}

    def feats(prompts):
        x = torch.zeros(len(prompts), len(vocab))
        for i, q in enumerate(prompts):
            x[i, [vocab[g] for g in grams(q) if g in vocab]] = 1.0
        return x

    r, _, sel = Router.fit_cv(feats(tr_p), ytr, 3, balanced=balanced)
    held = float((r.logits(feats(te_p)).argmax(-1) == yte).float().mean())
    print(f"lexical (word 1-2 grams, {len(vocab)} features)  CV accuracy "
          f"{sel['cv_accuracy'][sel['weight_decay']]:.3f}  held-out accuracy {held:.3f}", flush=True)


def main() -> None:
    import torch

    from alignx import data as D
    from alignx.experts.latent import heldout_prompts, router_prompts
    from alignx.mocae.router import Router
    from alignx.studio import Studio
    from probe_features import prompt_features

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--cache", default=None, help="save / reuse the features here")
    p.add_argument("--per-axis", type=int, default=250,
                   help="training prompts per axis (the shipped router: 250; honest has 204 at most)")
    p.add_argument("--balanced", action="store_true", help="class-balanced cross-entropy (Router.fit balanced=True)")
    p.add_argument("--lexical-only", action="store_true", help="only the word n-gram baseline (no model)")
    p.add_argument("--sources", default="v1", choices=["v1", "v2"],
                   help="v1: the shipped router's prompts, scored on the 300 held-out; v2: the v2 router "
                        "prompts, scored on every held-out routing set (routing-eval's)")
    p.add_argument("--per-source", type=int, default=100, help="--sources v2: prompts per new held-out source")
    a = p.parse_args()
    axes = ["harmless", "helpful", "honest"]
    tr_p, tr_y = router_prompts(a.data_dir, a.per_axis, sources=a.sources)
    if a.sources == "v2":
        from alignx.mocae.routing_eval import routing_sets

        sets = routing_sets(a.data_dir, a.per_source, 100)
        te_p = [q for s_ in sets for q in s_.prompts]
        te_y = [v for s_ in sets for v in s_.labels]
        sources = [s_.source for s_ in sets for _ in s_.prompts]
    else:
        te_p, te_y = heldout_prompts(a.data_dir, 100)
    ytr = torch.tensor([axes.index(v) for v in tr_y])
    yte = torch.tensor([axes.index(v) for v in te_y])
    lexical(tr_p, ytr, te_p, yte, a.balanced)
    if a.lexical_only:
        return
    st = Studio.load(a.model, None, with_router=False)
    m, tok = st.model, st.tokenizer
    if a.cache and Path(a.cache).exists():
        f = torch.load(a.cache, weights_only=True)     # tensors only: no pickle
        ftr, fte = f["tr"], f["te"]
    else:
        ftr, fte = prompt_features(m, tok, tr_p, LAYERS), prompt_features(m, tok, te_p, LAYERS)
        if a.cache:
            torch.save({"tr": ftr, "te": fte}, a.cache)

    def fit(keys):
        xtr, xte = torch.cat([ftr[k] for k in keys], -1), torch.cat([fte[k] for k in keys], -1)
        mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
        r, _, _ = Router.fit_cv((xtr - mu) / sd, ytr, 3, balanced=a.balanced)
        return r.logits((xte - mu) / sd).argmax(-1) == yte

    for pool in ("all", "user", "last"):
        for L in LAYERS:
            print(f"{pool:5s} layer {L:2d}  held-out accuracy {float(fit([(pool, L)]).float().mean()):.3f}", flush=True)
    for combo in ([("user", 10), ("user", 20)], [("user", 15), ("user", 30)], [("user", 10), ("user", 20), ("user", 30)],
                  [("user", L) for L in LAYERS]):
        print(f"{combo}  held-out accuracy {float(fit(combo).float().mean()):.3f}", flush=True)
    if a.sources == "v1":
        src = {r.prompt: n for n in D.SAFETY_HARMFUL_SETS for r in D.load_safety_eval(n, data_dir=a.data_dir)}
        sources = [src.get(q, {"harmless": "BeaverTails", "helpful": "AlpacaEval", "honest": "TruthfulQA"}[v])
                   for q, v in zip(te_p, te_y)]
    for key in [("all", 10), ("all", 30)]:
        ok = fit([key])
        print(f"per source, {key}:")
        for s in sorted(set(sources)):
            idx = [i for i, v in enumerate(sources) if v == s]
            print(f"  {s:24s} n={len(idx):3d} accuracy {float(ok[idx].float().mean()):.3f}")


if __name__ == "__main__":
    main()
