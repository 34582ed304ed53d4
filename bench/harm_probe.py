"""Harm probe: can a linear read-out of the base model tell a harmful instruction from a benign one?

    OMP_NUM_THREADS=1 python bench/harm_probe.py [--data-dir ../shared/data] [--layers 15,30]

The question behind the harmless expert's over-refusal (docs/RESULTS.md): the I-* evaluation
sets share three templates ("Explain why ...", "Describe why ...", "Write a reason why ..."), and
I-PhysicalSafetySafe / -Unsafe differ only in the advice ("... you should not eat it" vs "... you
should taste it"). Features: the base model's hidden state at each layer, mean over the user's
tokens. Two read-outs per layer (logistic, weight decay by 5-fold CV, ``Router.fit_cv``):
  transfer: fitted on the training sources (safety-tuned-llamas harmful instructions vs Alpaca
            instructions, 400 each), scored per evaluation set (share read as harmful);
  in-set:   5-fold CV on I-PhysicalSafetyUnsafe vs I-PhysicalSafetySafe themselves (100 + 100):
            the best a linear read-out of these features can do on that contrast.
A diagnostic, not a timing: it runs the base model once over about 1,400 prompts.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch

    from alignx import data as D
    from alignx.experts.report import safety_sets
    from alignx.experts.sft import evaluation_prompts
    from alignx.mocae.router import Router
    from alignx.studio import Studio
    from probe_features import prompt_features

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--layers", default="15,30")
    p.add_argument("--per-class", type=int, default=400)
    a = p.parse_args()
    layers = [int(x) for x in a.layers.split(",")]
    st = Studio.load(a.model, None, with_router=False)
    m, tok = st.model, st.tokenizer

    def feats(prompts: list[str]) -> dict[int, torch.Tensor]:
        return {L: v for (_, L), v in prompt_features(m, tok, prompts, layers, pools=("user",)).items()}

    banned = evaluation_prompts(a.data_dir)
    rng = random.Random(0)
    harm_tr = rng.sample([r.prompt for r in D.load_safety_instructions(data_dir=a.data_dir, skip_bad=True)
                          if r.prompt.strip() not in banned], a.per_class)
    ben_tr = rng.sample([r.prompt for r in D.load_alpaca(data_dir=a.data_dir, skip_bad=True)
                         if r.prompt.strip() not in banned], a.per_class)
    harmful, benign = safety_sets(a.data_dir, per_set=None)
    tests = {**{f"{k} (harmful)": v for k, v in harmful.items()}, **{f"{k} (benign)": v for k, v in benign.items()}}
    f_tr = feats(harm_tr + ben_tr)
    f_te = {k: feats(v) for k, v in tests.items()}
    y_tr = torch.tensor([1] * len(harm_tr) + [0] * len(ben_tr))
    for L in layers:
        mu, sd = f_tr[L].mean(0), f_tr[L].std(0) + 1e-6
        r, _, sel = Router.fit_cv((f_tr[L] - mu) / sd, y_tr, 2)
        print(f"layer {L}: transfer read-out (CV accuracy on the training sources "
              f"{max(sel['cv_accuracy'].values()):.3f}); share of each evaluation set read as harmful:")
        for k, f in f_te.items():
            share = float((r.logits((f[L] - mu) / sd).argmax(-1) == 1).float().mean())
            print(f"  {k:40s} n={len(f[L]):3d}  {share:.3f}")
        phys = torch.cat([f_te["I-PhysicalSafetyUnsafe (harmful)"][L], f_te["I-PhysicalSafetySafe (benign)"][L]])
        y = torch.tensor([1] * len(f_te["I-PhysicalSafetyUnsafe (harmful)"][L])
                         + [0] * len(f_te["I-PhysicalSafetySafe (benign)"][L]))
        z = (phys - phys.mean(0)) / (phys.std(0) + 1e-6)
        _, _, sel = Router.fit_cv(z, y, 2)
        print(f"layer {L}: in-set read-out, PhysicalSafetyUnsafe vs Safe, 5-fold CV accuracy "
              f"{max(sel['cv_accuracy'].values()):.3f} (chance 0.5)")


if __name__ == "__main__":
    main()
