"""A user's preference profile steers MoCaE: the profile's objective dimensions become the
calibration's preferences.

Four of the 90 AlignX dimensions name the objectives (found by their pole names, not indices):
"Concerned about harmlessness" (and "Concerned about physical safety") -> harmless, "Concerned about
helpfulness" -> helpful, "Concerned about honesty" and "Concerned about truthfulness" -> honest.
With v_d in [0, 1] the user's value on dimension d (1 = concerned, 0 = indifferent, 0.5 neutral),

    preference_o = max(eps, mean_{d in D_o} v_d),   eps = 0.05

so a neutral user (every v_d = 0.5) gets equal preferences, the same routing as the default
(preferences enter only through rho = preference / sum, see docs/METHOD.md), and no preference
reaches 0 (the calibration needs one above 0). An objective without a dimension keeps 1.
"""
from __future__ import annotations

from typing import Sequence

OBJECTIVE_POLES = {
    "harmless": ("Concerned about harmlessness", "Concerned about physical safety"),
    "helpful": ("Concerned about helpfulness",),
    "honest": ("Concerned about honesty", "Concerned about truthfulness"),
}
EPS = 0.05


def objective_dims(dims: Sequence[dict]) -> dict[str, list[int]]:
    """objective -> indices of its dimensions in ``dims`` (the 90 AlignX dimensions)."""
    index = {d["positive"]: int(d["index"]) for d in dims}
    return {o: [index[p] for p in poles if p in index] for o, poles in OBJECTIVE_POLES.items()}


def preferences_from_direction(direction: Sequence[float], dims: Sequence[dict],
                               objectives: Sequence[str]) -> dict[str, float]:
    """Calibration preferences for ``objectives`` (e.g. the router's experts) from a 90-value direction."""
    by = objective_dims(dims)
    out = {}
    for o in objectives:
        idx = by.get(o) or []
        out[o] = max(EPS, sum(float(direction[i]) for i in idx) / len(idx)) if idx else 1.0
    return out
