"""Paired differences between two eval runs of the same suite (``compare --paired``).

Two runs of one suite score the same items (the same AlpacaEval instructions, harmful and benign
prompts, TruthfulQA questions, preference pairs), so their difference is measured on each item:
for a metric m that is a mean over items, the difference B - A has the percentile interval of

    mean_i (m_B(i) - m_A(i)),  i resampled with replacement, the same draw for both runs,

which is tighter than comparing the two runs' separate intervals when the items' difficulty is
shared. The average alignment score

    AAS = (win_rate + (1 - safety_score) + ti) / 3

resamples each part's items on its own (as ``metrics.bootstrap_combined`` does), the same draw for
A and B. Alignment Accuracy is the mean over axes of each axis's share of correct pairs. Items come
from each run's ``samples.jsonl``; only the main (headline) harmful and benign sets count, as in the
report. ``P(B > A)`` is the share of resamples whose difference is positive. A part only one run
scored (its suite left it out) reads n/a; a part both scored on different items is refused.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from alignx.errors import InvalidInput, MissingFile

# metric -> the one part it averages over: (task, field, main-part only)
PARTS: dict[str, tuple[tuple[str, str, bool]]] = {
    "win_rate": (("alpaca", "score", False),),
    "safety_score": (("harmful", "unsafe", True),),
    "over_refusal": (("benign", "refusal", True),),
    "ti": (("truthfulqa", "ti", False),),
    "mc1": (("mc", "mc1", False),),
    "mc2": (("mc", "mc2", False),),
}
HIGHER_IS_BETTER = {"win_rate": True, "safety_score": False, "over_refusal": False, "ti": True, "mc1": True,
                    "mc2": True, "alignment_accuracy": True, "average_alignment_score": True}


def _folder(run: str | Path) -> Path:
    """A run's folder: ``run`` itself, or the folder of a ``report.json``."""
    path = Path(str(run))
    return path.parent if path.name == "report.json" else path


def load_items(run: str | Path) -> dict[str, dict[str, dict]]:
    """``{task: {item id: row}}`` from a run folder's (or report.json's folder's) ``samples.jsonl``."""
    path = _folder(run) / "samples.jsonl"
    if not path.is_file():
        raise MissingFile(f"{path}: no samples.jsonl (paired differences need the per-item scores of an eval run)")
    items: dict[str, dict[str, dict]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            items.setdefault(row["task"], {})[row["id"]] = row
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(f"{path}, line {n}: not a sample row with 'task' and 'id' ({exc})") from None
    return items


def _aligned(a: dict, b: dict, task: str, field: str, main_only: bool, names: tuple[str, str]) -> np.ndarray:
    """(n, 2) array of the field's values on the items both runs scored validly; refuses runs whose
    item sets differ (different suites or sizes). A part one run did not score at all (a suite
    without it, e.g. ``h3fusion-judged`` has no MC1/MC2 and no Alignment Accuracy) gives no rows,
    so its metric reads n/a while the parts both runs scored are still paired."""
    ra, rb = a.get(task, {}), b.get(task, {})
    if not ra or not rb:
        return np.zeros((0, 2))
    if set(ra) != set(rb):
        only = sorted(set(ra) ^ set(rb))
        raise InvalidInput(f"{names[0]} and {names[1]} scored different {task!r} items ({len(only)} differ, "
                           f"e.g. {only[:3]}): paired differences need two runs of the same suite")
    rows = []
    for i in sorted(ra):
        if main_only and ra[i].get("part", "main") != "main":
            continue
        x, y = ra[i].get(field), rb[i].get(field)
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not (np.isnan(x) or np.isnan(y)):
            rows.append((float(x), float(y)))
    return np.array(rows, dtype=float).reshape(-1, 2)


def _boot(parts: list[np.ndarray], combine: Callable[[list[float]], float], n_boot: int, seed: int) -> dict:
    """Point difference, 95% percentile interval and P(B > A) of combine(part means) of B minus A."""
    if any(p.shape[0] == 0 for p in parts):
        return {"a": None, "b": None, "diff": None, "ci95": [None, None], "p_b_greater": None, "n": 0}
    rng = np.random.default_rng(seed)
    idx = [rng.integers(0, p.shape[0], size=(n_boot, p.shape[0])) for p in parts]
    means = [p[ix].mean(axis=1) for p, ix in zip(parts, idx)]            # (n_boot, 2) per part
    a = combine([float(p[:, 0].mean()) for p in parts])
    b = combine([float(p[:, 1].mean()) for p in parts])
    diffs = np.array([combine([m[k, 1] for m in means]) - combine([m[k, 0] for m in means]) for k in range(n_boot)])
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    return {"a": a, "b": b, "diff": b - a, "ci95": [float(lo), float(hi)],
            "p_b_greater": float((diffs > 0).mean()), "n": int(sum(p.shape[0] for p in parts))}


def paired_differences(run_a: str | Path, run_b: str | Path, n_boot: int = 1000, seed: int = 0) -> dict[str, dict]:
    """B - A on every headline metric, each with a paired bootstrap 95% interval (module docstring)."""
    if n_boot < 1:
        raise InvalidInput(f"bootstrap needs n >= 1 resamples, got {n_boot}")
    names = (str(run_a), str(run_b))
    a, b = load_items(run_a), load_items(run_b)
    aligned = {metric: _aligned(a, b, *part, names) for metric, (part,) in PARTS.items()}
    out: dict[str, dict] = {metric: _boot([arr], lambda ms: ms[0], n_boot, seed) for metric, arr in aligned.items()}
    axes = sorted(t for t in set(a) | set(b) if t.startswith("pairs:"))
    arrays = [_aligned(a, b, t, "correct", False, names) for t in axes] or [np.zeros((0, 2))]
    out["alignment_accuracy"] = _boot(arrays, lambda ms: sum(ms) / len(ms), n_boot, seed)
    parts = [aligned["win_rate"], aligned["safety_score"], aligned["ti"]]
    out["average_alignment_score"] = _boot(parts, lambda ms: (ms[0] + (1 - ms[1]) + ms[2]) / 3, n_boot, seed)
    for metric, entry in out.items():
        entry["higher_is_better"] = HIGHER_IS_BETTER[metric]
    return out


def paired_table(reports: list[str | Path], n_boot: int = 1000, seed: int = 0,
                 labels: list[str] | None = None) -> str:
    """Markdown: each run after the first against the first, B - A [95% CI] (P(B > A)) per metric;
    rows named by ``labels`` (one per report) or by the runs' folders."""
    if len(reports) < 2:
        raise InvalidInput("compare --paired needs at least two runs: the first is the one the others are paired with")
    names = list(labels) if labels else [_folder(r).name for r in reports]
    metrics = list(HIGHER_IS_BETTER)
    head = f"| B - A (A = {names[0]}) | " + " | ".join(
        f"{m} {'↑' if HIGHER_IS_BETTER[m] else '↓'}" for m in metrics) + " |"
    lines = [head, "|" + "---|" * (len(metrics) + 1)]
    for run, name in zip(reports[1:], names[1:]):
        d = paired_differences(reports[0], run, n_boot, seed)
        cells = []
        for m in metrics:
            e = d[m]
            cells.append("n/a" if e["diff"] is None else
                         f"{e['diff']:+.3f} [{e['ci95'][0]:+.3f}, {e['ci95'][1]:+.3f}] ({e['p_b_greater']:.2f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"paired bootstrap over the same items ({n_boot} resamples, seed {seed}); "
                 "in brackets the 95% interval, in parentheses P(B > A)")
    return "\n".join(lines)


TEXT_FIELDS = ("output",)          # the answers: not needed to pair runs, and not kept in a shared record


def export_points(runs: list[str | Path], dest: str | Path) -> list[Path]:
    """Copy each run's ``report.json`` and its ``samples.jsonl`` without the answers' text
    (``TEXT_FIELDS``) to ``dest/<run folder name>/``: the per-item scores ``compare --paired`` needs,
    small enough to keep beside the RESULTS table they back (``docs/points``), so a later checkout
    pairs new runs with them instead of re-running them. Written atomically; returns the folders."""
    from alignx.atomic import write_jsonl, write_text

    folders = [_folder(r) for r in runs]
    names = [f.name for f in folders]
    if len(set(names)) != len(names):
        raise InvalidInput(f"compare --export: two runs share a folder name ({names}); each becomes dest/<name>")
    out = []
    for folder in folders:
        items = load_items(folder)                           # checks samples.jsonl row by row
        report = folder / "report.json"
        if not report.is_file():
            raise MissingFile(f"{report}: no report.json to export")
        target = Path(dest) / folder.name
        target.mkdir(parents=True, exist_ok=True)
        write_text(target / "report.json", report.read_text(encoding="utf-8"))
        write_jsonl(target / "samples.jsonl", ({k: v for k, v in row.items() if k not in TEXT_FIELDS}
                                               for task in items.values() for row in task.values()))
        out.append(target)
    return out
