"""Alignment Accuracy (AlignX-Family), per user pair, with bootstrap CIs overall and per group.

The caller computes the implicit rewards r(y) = beta [log pi(y | x, u) - log pi_ref(y | x)] with
pi the personalized policy (the user's information u in its prompt) and pi_ref the base given the
plain request (``rewards``). An item scores

    a_i = 1 if r_c - r_r > tol,  0.5 if |r_c - r_r| <= tol,  0 otherwise      (tol = 1e-9)

and AA = (1/n) sum_i a_i. A reference scored against itself has every margin 0: AA = 0.5 exactly.
CI: the percentile bootstrap of ``alignx.eval.metrics.bootstrap_ci`` (seeded resamples of items).
"""
from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

from alignx.errors import InvalidInput
from alignx.eval.metrics import bootstrap_ci

TIE_TOL = 1e-9


def _floats(values, name: str) -> list[float]:
    if hasattr(values, "detach"):
        values = values.detach().float().cpu().reshape(-1).tolist()
    out = [float(v) for v in values]
    if any(math.isnan(v) for v in out):
        raise InvalidInput(f"{name} contains NaN")
    return out


def rewards(pi_lp, ref_lp, beta: float = 0.1) -> list[float]:
    """r_i = beta (log pi(y_i | x_i, u_i) - log pi_ref(y_i | x_i)) for sequences or tensors of log-probs."""
    pi, ref = _floats(pi_lp, "pi_lp"), _floats(ref_lp, "ref_lp")
    if len(pi) != len(ref):
        raise InvalidInput(f"pi_lp has {len(pi)} values, ref_lp {len(ref)}")
    if not beta > 0:
        raise InvalidInput(f"beta must be > 0, got {beta}")
    return [beta * (a - b) for a, b in zip(pi, ref)]


def item_scores(chosen_reward, rejected_reward, tol: float = TIE_TOL) -> list[float]:
    """a_i = 1 / 0.5 / 0 for margin r_c - r_r above tol / within tol / below -tol."""
    c, r = _floats(chosen_reward, "chosen_reward"), _floats(rejected_reward, "rejected_reward")
    if len(c) != len(r):
        raise InvalidInput(f"chosen_reward has {len(c)} values, rejected_reward {len(r)}")
    return [1.0 if a - b > tol else 0.0 if a - b < -tol else 0.5 for a, b in zip(c, r)]


def _summary(scores: Sequence[float], n_boot: int, seed: int) -> dict:
    if not scores:
        return {"value": None, "ci95": [None, None], "n": 0}
    lo, hi = bootstrap_ci(scores, n=n_boot, seed=seed)
    return {"value": sum(scores) / len(scores), "ci95": [lo, hi], "n": len(scores)}


def alignment_accuracy(chosen_reward, rejected_reward, groups: Sequence[Hashable] | None = None,
                       n_boot: int = 1000, seed: int = 0, tol: float = TIE_TOL) -> dict:
    """``{"value", "ci95": [lo, hi], "n"}`` over all items, plus ``"by_group": {g: {...}}`` when
    ``groups`` (one label per item, e.g. the persona or the source file) is given."""
    scores = item_scores(chosen_reward, rejected_reward, tol)
    out = _summary(scores, n_boot, seed)
    if groups is not None:
        groups = list(groups)
        if len(groups) != len(scores):
            raise InvalidInput(f"groups has {len(groups)} labels for {len(scores)} items")
        by: dict = {}
        for g, s in zip(groups, scores):
            by.setdefault(g, []).append(s)
        out["by_group"] = {g: _summary(v, n_boot, seed) for g, v in by.items()}
    return out
