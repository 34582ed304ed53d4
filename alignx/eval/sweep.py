"""Calibration sweep: evaluate MoCaE over a grid of calibration settings, plus anchors (the base,
each single expert, a uniform merge of the experts), and write the Pareto front.

The unit is ``evaluate_candidate``: one policy through ``run_suite`` in its own folder (so a
killed sweep resumes point by point). ``candidates_from_studio`` builds the list from a Studio
(a mode plus calibration settings through ``alignx.methods.policy``); tests pass
their own candidates.
"""
from __future__ import annotations

from alignx.errors import InvalidInput

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from alignx.eval.pareto import OBJECTIVES, objectives_from_report, pareto_figure, pareto_front
from alignx.eval.report import write_atomic
from alignx.eval.runner import run_suite

UNIFORM_MERGE = "uniform_merge"


@dataclass
class Candidate:
    label: str
    kind: str                                   # mocae | base | expert | uniform-merge | negotiax
    make_policy: Callable[[], Any]
    settings: dict[str, Any] | None = None
    run_info: dict[str, Any] = field(default_factory=dict)


def parse_floats(text: str, flag: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InvalidInput(f"{flag}: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise InvalidInput(f"{flag}: no values")
    return values


def parse_preference_list(text: str | None) -> list[dict[str, float] | None]:
    """``"default;helpful=1,harmless=0.5,honest=0.5"`` -> [None, {...}] (None = the router's saved preferences)."""
    from alignx.mocae.calibration import parse_preferences

    if not text:
        return [None]
    return [None if part.strip() in ("", "default", "uniform", "router", "none") else parse_preferences(part)
            for part in text.split(";")]


def grid(lambda1: Sequence[float], lambda2: Sequence[float], temperature: Sequence[float],
         preferences: Sequence[dict | None]) -> list[dict[str, Any]]:
    out = []
    for l1, l2, t, pref in itertools.product(lambda1, lambda2, temperature, preferences):
        s: dict[str, Any] = {"lambda1": l1, "lambda2": l2, "temperature": t}
        if pref is not None:
            s["preferences"] = pref
        out.append(s)
    return out


def setting_label(s: dict[str, Any]) -> str:
    label = f"l1={s['lambda1']:g}_l2={s['lambda2']:g}_T={s['temperature']:g}"
    if s.get("preferences"):
        label += "_" + "-".join(f"{k}{v:g}" for k, v in sorted(s["preferences"].items()))
    return label


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", label)


def uniform_merge_policy(studio):
    """The experts' LoRA deltas averaged with equal weights (peft ``add_weighted_adapter``, "cat":
    the merged delta is exactly sum_i (1/n) B_i A_i), as one more adapter of the Studio's model."""
    from alignx.policy import SinglePolicy

    names = sorted(studio.experts)
    if len(names) < 2:
        raise InvalidInput(f"a uniform merge needs at least two experts, the Studio has {names}")
    model = studio.model
    if UNIFORM_MERGE not in model.peft_config:
        model.add_weighted_adapter(names, [1.0 / len(names)] * len(names), UNIFORM_MERGE, combination_type="cat")
    model.eval()
    return SinglePolicy(model, studio.tokenizer, UNIFORM_MERGE)


def candidates_from_studio(studio, settings: Sequence[dict], mode: str = "mocae-logit",
                           anchors: bool = True) -> list[Candidate]:
    from alignx.eval.options import policy_for, run_info

    out: list[Candidate] = []
    if anchors:
        out.append(Candidate("base", "base", lambda: policy_for(studio, "base"), None, run_info(studio, "base", None)))
        for name in sorted(studio.experts):
            out.append(Candidate(f"expert:{name}", "expert", lambda n=name: policy_for(studio, f"expert:{n}"), None,
                                 run_info(studio, f"expert:{name}", None)))
        if len(studio.experts) >= 2:
            info = dict(run_info(studio, "base", None), mode=UNIFORM_MERGE)
            out.append(Candidate(UNIFORM_MERGE, "uniform-merge", lambda: uniform_merge_policy(studio), None, info))
        if "negotiax" in studio.modes():                       # the other method, on the same front
            out.append(Candidate("negotiax", "negotiax", lambda: policy_for(studio, "negotiax"), None,
                                 run_info(studio, "negotiax", None)))
    if settings and studio.mocae is None:
        raise InvalidInput("the sweep needs a trained MoCaE router (studio.mocae is None); train one first, "
                         "or run with --anchors-only")
    for s in settings:
        out.append(Candidate(f"{mode}:{setting_label(s)}", "mocae", lambda s=s: policy_for(studio, mode, s), dict(s),
                             run_info(studio, mode, s)))
    return out


def evaluate_candidate(c: Candidate, suite, judges, out_dir: Path, ref_policy=None, **run_kw) -> dict[str, Any]:
    """Run the suite for one candidate in ``out_dir/points/<label>``; return its point (one process:
    under a launcher, run ``eval`` per mode instead, which shares each suite between the processes)."""
    from alignx import distributed as dist

    if dist.launched():
        raise InvalidInput("sweep and ablate run in one process; under `accelerate launch` evaluate each mode "
                           "with `python -m alignx eval --mode MODE` (it shares the suite between the processes)")
    report = run_suite(suite, c.make_policy(), judges, out_dir / "points" / _safe(c.label),
                       ref_policy=None if c.kind == "base" else ref_policy, run_info=c.run_info, **run_kw)
    point = {"label": c.label, "kind": c.kind, "settings": c.settings, **objectives_from_report(report),
             "metrics": {k: {"value": report[k]["value"], "ci95": report[k]["ci95"]}
                         for k in ("win_rate", "safety_score", "over_refusal", "ti", "mc1", "mc2",
                                   "alignment_accuracy", "average_alignment_score")},
             "report": str(out_dir / "points" / _safe(c.label) / "report.json")}
    return point


def run_sweep(candidates: Sequence[Candidate], suite, judges, out_dir, ref_policy=None,
              on_point: Callable[[dict], None] | None = None, **run_kw) -> dict[str, Any]:
    """Evaluate every candidate, extract the Pareto front, write sweep.json (points with all their
    metrics), pareto.json (points' objectives and settings, ``front`` = indices of the front),
    pareto.html (self-contained plotly) and pareto_figure.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = [c.label for c in candidates]
    if len(set(labels)) != len(labels):
        raise InvalidInput(f"duplicate candidate labels: {sorted({x for x in labels if labels.count(x) > 1})}")
    points = []
    for c in candidates:
        points.append(evaluate_candidate(c, suite, judges, out, ref_policy, **run_kw))
        if on_point:
            on_point(points[-1])
    front = pareto_front(points)
    judge_names = {cap: j.info()["name"] for cap, j in judges.items()}
    objectives = {"helpful": "win_rate", "harmless": "1 - safety_score", "honest": "ti"}
    result = {"objectives": objectives, "suite": getattr(suite, "name", suite), "points": points, "front": front,
              "pareto_front": [points[i]["label"] for i in front], "judges": judge_names}
    compact = [{k: p[k] for k in ("label", "kind", "settings", *OBJECTIVES)} for p in points]
    write_atomic(out / "sweep.json", json.dumps(result, indent=2, default=str) + "\n")
    write_atomic(out / "pareto.json", json.dumps({"objectives": objectives, "points": compact, "front": front,
                                                  "pareto_front": result["pareto_front"], "judges": judge_names},
                                                 indent=2, default=str) + "\n")
    fig = pareto_figure(points, front)
    write_atomic(out / "pareto_figure.json", fig.to_json())
    fig.write_html(str(out / "pareto.html"), include_plotlyjs=True)
    return result
