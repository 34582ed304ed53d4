"""The interpretability findings for a served model (``python -m alignx interp findings``).

Answers, with numbers:

1. Which layers carry refusal: per layer, the share of the total harmlessness importance
   (sum_j I_harmless(l, j) / sum_{l,j} I_harmless) of the harmless expert and of the base, where
   the harmless objective's rows are the held-out (harmful request, refusal) pairs.
2. Whether the top heads for harmlessness differ from those for honesty: the overlap |A n B| of
   the top-k sets (k = 10), their Jaccard index, and Spearman's rho between the two full maps.
3. Whether ablating the harmless expert's top-5 harmlessness heads lowers its refusal rate on
   held-out harmful prompts more than ablating 5 random heads: refusal rates (stock-phrase
   detector) with 95% bootstrap CIs over prompts, for no ablation, the top 5, and ``draws`` random
   5-head sets (seeded, drawn from the heads outside the top 5); the random draws' mean with a
   bootstrap CI over prompts and draws.
"""
from __future__ import annotations

import random
import time
from typing import Callable

from alignx.errors import InvalidInput


def _ci(flags: list[float], seed: int = 0) -> list[float]:
    from alignx.eval.metrics import bootstrap_ci

    return list(bootstrap_ci(flags, 1000, seed))


def layer_shares(importance: list[list[float]]) -> list[float]:
    total = sum(map(sum, importance)) or 1.0
    return [sum(row) / total for row in importance]


def findings(studio, expert_mode: str = "expert:harmless", n_rows: int = 32, n_prompts: int = 40, top_k: int = 10,
             draws: int = 5, max_new_tokens: int = 48, seed: int = 0, cache_dir=None, exact_top_k: int = 10,
             bf16: bool = False, log: Callable[[str], None] = print) -> dict:
    from alignx.interp import analyses as A
    from alignx.interp.heads import head_shape, spearman, top_heads
    from alignx.interp.rows import harmful_prompts

    names = [o.name for o in studio.objectives]
    for need in ("harmless", "honest"):
        if need not in names:
            raise InvalidInput(f"findings need a {need!r} objective; the studio has {names}")
    t0 = time.time()
    maps = {}
    for mode in ("base", expert_mode):
        log(f"head importance: {mode}")
        maps[mode] = A.heads(studio, mode, ["harmless", "honest"], n_rows=n_rows, exact_top_k=exact_top_k, seed=seed,
                             cache_dir=cache_dir, bf16=bf16)
    exp = maps[expert_mode]["objectives"]
    layers = {m: layer_shares(r["objectives"]["harmless"]["importance"]) for m, r in maps.items()}
    n_layers, n_heads = head_shape(studio.model)
    harm, hon = exp["harmless"]["importance"], exp["honest"]["importance"]
    top_harm, top_hon = set(top_heads(harm, top_k)), set(top_heads(hon, top_k))
    flat = lambda m: [v for row in m for v in row]  # noqa: E731
    overlap = {"k": top_k, "shared": sorted(map(list, top_harm & top_hon)), "jaccard": len(top_harm & top_hon) / len(top_harm | top_hon),
               "spearman_maps": spearman(flat(harm), flat(hon)),
               "spearman_harmless_base_vs_expert": spearman(flat(maps["base"]["objectives"]["harmless"]["importance"]), flat(harm))}
    prompts = harmful_prompts(n_prompts, seed)
    k = min(5, n_layers * n_heads // 2)        # 5, or half the heads of a tiny model
    top5 = top_heads(harm, k)
    rest = [(l, h) for l in range(n_layers) for h in range(n_heads) if (l, h) not in set(top5)]
    rng = random.Random(seed)
    conditions = {"none": [], "top5": top5}
    for d in range(draws):
        conditions[f"random{d}"] = rng.sample(rest, k)
    refusal = {}
    for name, heads in conditions.items():
        log(f"refusal with {name} ablated")
        r = A.refusal_under_ablation(studio, expert_mode, heads, prompts, max_new_tokens)
        refusal[name] = {"heads": r["heads"], "rate": r["refusal_rate"], "ci95": _ci(r["flags"], seed=seed),
                         "flags": r["flags"], "examples": r["answers"][:3]}
    pooled = [f for d in range(draws) for f in refusal[f"random{d}"]["flags"]]
    random_mean = {"rate": sum(pooled) / len(pooled), "ci95": _ci(pooled, seed=seed), "draws": draws}
    return {"analysis": "findings", "model": studio.lm.name, "expert_mode": expert_mode, "rows": n_rows, "bf16": bool(bf16),
            "prompts": len(prompts), "layer_share_harmless": layers,
            "refusal_layers_expert": sorted(range(n_layers), key=lambda l: -layers[expert_mode][l])[:5],
            "top_heads": {"harmless": [list(h) for h in top_heads(harm, top_k)], "honest": [list(h) for h in top_heads(hon, top_k)]},
            "overlap": overlap, "refusal": refusal, "random_mean": random_mean,
            "exact_check": {m: {o: e.get("spearman") for o, e in r["objectives"].items()} for m, r in maps.items()},
            "heads_wall_time_s": {m: r.get("wall_time_s") for m, r in maps.items()},
            "wall_time_s": round(time.time() - t0, 1)}
