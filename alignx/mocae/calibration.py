"""Calibration: the expert weights from router logits, a cluster prior and user preferences,
and temperature scaling of each expert's next-token distribution (with ECE).

    p   = softmax(router_logits / T)                     router probabilities
    rho = preferences / sum(preferences)                 user preference over experts (sliders)
    q   = (pi_c + rho) / 2                               calibration term; pi_c = prior of cluster c
    w   = (lambda1 * p + lambda2 * q) / (lambda1 + lambda2)

w lies on the simplex; dw_i/dlambda1 has the sign of p_i - q_i, and w_i increases with
preference_i (rho_i does). Defaults lambda1 = 0.6, lambda2 = 0.4, T = 1 (the AlignX paper).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import torch

from alignx.errors import InvalidInput


@dataclass(frozen=True)
class Calibration:
    lambda1: float = 0.6
    lambda2: float = 0.4
    temperature: float = 1.0
    preferences: dict[str, float] = field(default_factory=dict)   # expert -> [0, 1]; missing = 1
    per_token: bool = False            # logit fusion: re-route at every token from the running latents

    def __post_init__(self) -> None:
        for name in ("lambda1", "lambda2"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0 or math.isnan(float(v)):
                raise InvalidInput(f"{name} must be in [0, 1], got {v!r}")
        if self.lambda1 + self.lambda2 <= 0:
            raise InvalidInput("lambda1 and lambda2 cannot both be 0")
        t = self.temperature
        if not isinstance(t, (int, float)) or not 0.05 <= float(t) <= 20.0:
            raise InvalidInput(f"temperature must be in [0.05, 20], got {t!r}")
        for k, v in self.preferences.items():
            if not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
                raise InvalidInput(f"preference for {k!r} must be in [0, 1], got {v!r}")

    def with_(self, **kw) -> "Calibration":
        return replace(self, **{k: v for k, v in kw.items() if v is not None})

    def to_dict(self) -> dict:
        return asdict(self)


PREFERENCES_HELP = ("preference per expert in [0, 1]: NAME=VALUE[,NAME=VALUE...], e.g. helpful=1,harmless=0.5; "
                    "an expert left out counts as 1")


def parse_preferences(text: str | None) -> dict[str, float] | None:
    """The one preference syntax of the CLI and the API: ``NAME=VALUE[,NAME=VALUE...]`` -> {name: value}
    (None for an empty text); values are checked by ``Calibration``."""
    if text is None or not str(text).strip():
        return None
    out: dict[str, float] = {}
    for part in str(text).split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise InvalidInput(f"preferences: expected NAME=VALUE pairs separated by commas, got {part.strip()!r}")
        if name.strip() in out:
            raise InvalidInput(f"preferences: {name.strip()!r} is given twice")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise InvalidInput(f"preferences: {name.strip()!r} has a non-numeric value {value.strip()!r}") from None
    return out or None


def preference_vector(cal: Calibration, experts: list[str]) -> torch.Tensor:
    unknown = sorted(set(cal.preferences) - set(experts))
    if unknown:
        raise InvalidInput(f"preferences name unknown expert(s) {unknown}; experts: {experts}")
    pref = torch.tensor([float(cal.preferences.get(e, 1.0)) for e in experts])
    if pref.sum() <= 0:
        raise InvalidInput("at least one preference must be above 0")
    return pref / pref.sum()


def expert_weights(router_logits: torch.Tensor, cluster_prior: torch.Tensor, cal: Calibration,
                   experts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(w, p, q) for one prompt: final weights, router probabilities, calibration term."""
    p = torch.softmax(router_logits.float() / cal.temperature, dim=-1)
    q = (cluster_prior.float() + preference_vector(cal, experts)) / 2
    w = (cal.lambda1 * p + cal.lambda2 * q) / (cal.lambda1 + cal.lambda2)
    return w, p, q


# --- temperature scaling of an expert's next-token distribution ---------------------------------

def ece(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0, bins: int = 15) -> float:
    """Expected calibration error of top-1 next-token predictions (equal-width confidence bins)."""
    probs = torch.softmax(logits.float() / temperature, -1)
    conf, pred = probs.max(-1)
    correct = (pred == targets).float()
    edges = torch.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += float(m.float().mean() * (conf[m].mean() - correct[m].mean()).abs())
    return total


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, steps: int = 100) -> float:
    """argmin_T NLL(softmax(logits / T), targets) by L-BFGS on log T (held-out tokens)."""
    logits, targets = logits.float().clone(), targets.clone()   # normal tensors (may come from inference mode)
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))
