"""Held-out routing evaluation: does the MoCaE send each prompt to its objective's expert?

A routing set is (source name, prompts, objective labels); none of its prompts was trained on
(every one is in an ``eval`` file of ROLES.json or in the held-out reserve of
``alignx.experts.latent.heldout_prompts``). A prompt is routed correctly when

    argmax_e w_e(x) == the expert serving its objective,

w = the MoCaE's final weights (router softmax, cluster prior and calibration combined, the
router card's default calibration unless one is given) -- what ``route`` returns as
``probabilities``. Reported overall (pooled over every prompt) and per source: accuracy, its
95% percentile-bootstrap CI (``alignx.eval.metrics.bootstrap_ci``, 1000 resamples, seed 0) and
the confusion matrix (rows: true objective, columns: routed expert), with a few misrouted
examples per source.

The sets (``routing_sets``): today's 300 held-out prompts (100 per axis: AlpacaEval
instructions = helpful, the harmful safety sets + held-out BeaverTails half = harmless,
TruthfulQA test half = honest), Arena-Hard (helpful; a held-out style, never trained on),
HarmBench test and SimpleSafetyTests (harmless), and XSTest's safe prompts labelled helpful
(benign prompts with harmful-looking words); each new source sampled to ``per_source`` prompts
with ``random.Random(seed)``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from alignx.errors import InvalidInput

NEW_SOURCES = {            # source -> (registry name, objective, row filter)
    "arena_hard": ("arena_hard", "helpful", None),
    "harmbench_test": ("harmbench_test", "harmless", None),
    "simplesafetytests": ("simplesafetytests", "harmless", None),
    "xstest_safe": ("xstest", "helpful", lambda r: r.extra.get("label") == "safe"),
}
HELDOUT_SOURCES = {"helpful": "heldout_alpaca_eval", "harmless": "heldout_safety", "honest": "heldout_truthfulqa"}


@dataclass(frozen=True)
class RoutingSet:
    source: str
    prompts: list[str]
    labels: list[str]


def routing_sets(data_dir=None, per_source: int = 100, heldout_per_axis: int = 100, seed: int = 0,
                 sources: Sequence[str] | None = None) -> list[RoutingSet]:
    """Today's held-out prompts (split by axis) and ``per_source`` prompts of each new source."""
    from alignx.data.registry import load
    from alignx.experts.latent import heldout_prompts

    wanted = list(sources) if sources is not None else [*HELDOUT_SOURCES.values(), *NEW_SOURCES]
    unknown = sorted(set(wanted) - set(HELDOUT_SOURCES.values()) - set(NEW_SOURCES))
    if unknown:
        raise InvalidInput(f"unknown routing source(s) {unknown}; available: "
                           f"{', '.join([*HELDOUT_SOURCES.values(), *NEW_SOURCES])}")
    if per_source < 1:
        raise InvalidInput(f"per_source must be >= 1, got {per_source}")
    out = []
    if set(wanted) & set(HELDOUT_SOURCES.values()):
        prompts, labels = heldout_prompts(data_dir, heldout_per_axis, seed)
        for axis, name in HELDOUT_SOURCES.items():
            if name in wanted:
                ps = [p for p, a in zip(prompts, labels) if a == axis]
                out.append(RoutingSet(name, ps, [axis] * len(ps)))
    for name in wanted:
        if name not in NEW_SOURCES:
            continue
        reg, axis, keep = NEW_SOURCES[name]
        rows = [r.prompt for r in load(reg, data_dir) if keep is None or keep(r)]
        rows = list(dict.fromkeys(rows))
        random.Random(seed).shuffle(rows)
        ps = rows[:per_source]
        out.append(RoutingSet(name, ps, [axis] * len(ps)))
    return out


def confusion(true: Sequence[int], pred: Sequence[int], n: int) -> list[list[int]]:
    """counts[t][p]: prompts of class t routed to class p."""
    m = [[0] * n for _ in range(n)]
    for t, p in zip(true, pred):
        m[t][p] += 1
    return m


def summarize(true: Sequence[int], pred: Sequence[int], classes: Sequence[str], prompts: Sequence[str] = (),
              n_examples: int = 3) -> dict:
    """Accuracy, 95% bootstrap CI, confusion matrix and misrouted examples of one group."""
    from alignx.eval.metrics import bootstrap_ci

    if len(true) != len(pred):
        raise InvalidInput(f"{len(true)} labels but {len(pred)} predictions")
    hits = [float(t == p) for t, p in zip(true, pred)]
    lo, hi = bootstrap_ci(hits)
    wrong = [{"prompt": prompts[i][:160], "true": classes[t], "routed": classes[p]}
             for i, (t, p) in enumerate(zip(true, pred)) if t != p and i < len(prompts)]
    return {"n": len(hits), "accuracy": sum(hits) / len(hits) if hits else None, "ci95": [lo, hi],
            "confusion": {"rows_true_cols_pred": list(classes), "counts": confusion(true, pred, len(classes))},
            "misrouted_examples": wrong[:n_examples]}


def objective_index(experts: Sequence[str], axis_of: Callable[[str], str]) -> dict[str, int]:
    """objective -> the expert index serving it (the expert named like its axis when several do)."""
    out: dict[str, int] = {}
    for i, name in enumerate(experts):
        axis = axis_of(name)
        if axis not in out or name == axis:
            out[axis] = i
    return out


def evaluate(weights_fn: Callable[[list[str]], torch.Tensor], experts: Sequence[str], sets: Sequence[RoutingSet],
             axis_of: Callable[[str], str] = lambda e: e) -> dict:
    """Route every set with ``weights_fn(prompts) -> (n, n_experts)`` final weights and score
    argmax == the expert of the prompt's objective; overall (pooled) and per source."""
    index = objective_index(experts, axis_of)
    all_true: list[int] = []
    all_pred: list[int] = []
    all_prompts: list[str] = []
    per_source = {}
    for s in sets:
        missing = sorted({a for a in s.labels if a not in index})
        if missing:
            raise InvalidInput(f"routing set {s.source}: no expert serves objective(s) {missing} "
                               f"(experts: {list(experts)})")
        w = weights_fn(list(s.prompts))
        if tuple(w.shape) != (len(s.prompts), len(experts)):
            raise InvalidInput(f"weights_fn returned shape {tuple(w.shape)} for {len(s.prompts)} prompts "
                               f"and {len(experts)} experts")
        pred = w.argmax(-1).tolist()
        true = [index[a] for a in s.labels]
        per_source[s.source] = summarize(true, pred, experts, s.prompts)
        all_true += true
        all_pred += pred
        all_prompts += s.prompts
    overall = summarize(all_true, all_pred, experts, all_prompts, 0)
    overall.pop("misrouted_examples")
    accs = [v["accuracy"] for v in per_source.values() if v["accuracy"] is not None]
    return {"experts": list(experts), "overall": overall,
            "macro_accuracy_over_sources": sum(accs) / len(accs) if accs else None, "per_source": per_source}


def mocae_weights_fn(mocae, cached=None, calibration=None) -> Callable[[list[str]], torch.Tensor]:
    """Final weights of ``mocae`` for a batch of prompts (``MoCaE.weights_from_latents``, the
    arithmetic of ``MoCaE.route``); features come from ``cached`` (a ``CachedFeatures``) when
    given, else ``LatentSpace.encode``."""
    def fn(prompts: list[str]) -> torch.Tensor:
        z = cached.latents(mocae.space, prompts) if cached is not None else \
            mocae.space.encode(mocae.model, mocae.tokenizer, prompts)
        return mocae.weights_from_latents(z, calibration)

    return fn


def table(report: dict) -> str:
    """A markdown table of a report: one row per source, then the pooled row."""
    lines = ["| source | n | accuracy | 95% CI | confusion (rows true, cols routed: " +
             ", ".join(report["experts"]) + ") |", "|---|---|---|---|---|"]
    rows = list(report["per_source"].items()) + [("**all (pooled)**", report["overall"])]
    for name, r in rows:
        lo, hi = r["ci95"]
        lines.append(f"| {name} | {r['n']} | {r['accuracy']:.3f} | {lo:.3f}-{hi:.3f} | "
                     f"{r['confusion']['counts']} |")
    return "\n".join(lines)
