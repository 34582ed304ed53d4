"""Refit the MoCaE router on the v2 prompt sources and compare with the shipped one, on cached features.

    python bench/router_refit.py encode --per-axis 150        # encode the v2 training prompts (cached)
    python bench/router_refit.py fit --per-axis 150 --out results/routing/refit.json

``fit``: linear W_r (``Router.fit_cv``: weight decay by 5-fold CV on the training prompts) and a
small MLP router (``alignx.mocae.router.MLPRouter.fit_cv``, same folds, hidden size and weight
decay by CV), both on the same latent features; each is then scored on the held-out routing
sets (``alignx.mocae.routing_eval``) with the shipped clusters and calibration, beside the
shipped router. Nothing is chosen on the held-out sets.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("stage", choices=["encode", "fit"])
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--per-axis", type=int, default=150)
    ap.add_argument("--per-source", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    from alignx.experts.latent import router_prompts
    from alignx.mocae import routing_eval as R
    from alignx.mocae.core import MoCaE
    from alignx.mocae.feature_cache import CachedFeatures
    from alignx.mocae.router import MLPRouter, Router
    from alignx.studio import Studio

    t0 = time.time()
    studio = Studio.load(with_router=False)
    mocae = MoCaE.load(studio.model, studio.tokenizer, studio.experts_dir)
    cached = CachedFeatures.for_space(studio, mocae.space,
                                      progress=lambda d, t: print(f"encoded {d}/{t}", file=sys.stderr, flush=True))
    removed: dict[str, int] = {}
    prompts, labels = router_prompts(a.data_dir, a.per_axis, a.seed, removed, "v2")
    z = cached.latents(mocae.space, prompts)
    if a.stage == "encode":
        print(f"{len(prompts)} prompts encoded in {time.time() - t0:.0f}s")
        return 0
    index = R.objective_index(mocae.experts, lambda e: studio.experts[e].get("axis", e))
    y = torch.tensor([index[l] for l in labels])
    n = len(mocae.experts)
    linear, lin_loss, lin_sel = Router.fit_cv(z, y, n, seed=a.seed)
    mlp, mlp_loss, mlp_sel = MLPRouter.fit_cv(z, y, n, seed=a.seed)
    sets = R.routing_sets(a.data_dir, a.per_source, 100, a.seed)
    axis_of = lambda e: studio.experts[e].get("axis", e)  # noqa: E731
    out = {"train": {"prompts": len(prompts), "per_axis": a.per_axis, "eval_prompts_removed": removed},
           "shipped": R.evaluate(R.mocae_weights_fn(mocae, cached), mocae.experts, sets, axis_of)}
    for name, router, loss, sel in (("linear_v2", linear, lin_loss, lin_sel), ("mlp_v2", mlp, mlp_loss, mlp_sel)):
        cand = MoCaE(studio.model, studio.tokenizer, mocae.space, router, mocae.clusters,
                     dict(zip(mocae.experts, mocae.temperatures)), {}, mocae.calibration)
        out[name] = dict(R.evaluate(R.mocae_weights_fn(cand, cached), mocae.experts, sets, axis_of),
                         train_loss=loss, selection=sel)
    for name in ("shipped", "linear_v2", "mlp_v2"):
        print(f"## {name}\n{R.table(out[name])}\n")
    out["wall_time_s"] = round(time.time() - t0, 1)
    if a.out:
        from alignx.atomic import write_json
        write_json(a.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
