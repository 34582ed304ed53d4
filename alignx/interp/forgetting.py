"""Catastrophic forgetting: how each mode's metrics move against the base.

From eval runs (folders with ``report.json`` and ``samples.jsonl``, one per mode, one of them the
base), for every mode m and metric k:

    Delta_k(m) = metric_k(m) - metric_k(base),

with a 95% paired percentile bootstrap CI over the items both runs scored (same task and id,
resampled together; 1000 resamples, seeded), or, when either run lacks per-item samples, the
difference of the reported values with CI half-width sqrt(h_m^2 + h_base^2). ``good`` is Delta
signed so that > 0 is better (lower-is-better metrics: -Delta). The held-out loss shift per
objective is Delta L_o(m) = E_r [L_o(r; m) - L_o(r; base)] over the objective's held-out rows
(``alignx.interp.heads.losses``), with a paired bootstrap CI over the rows.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

from alignx.errors import InvalidInput

# metric -> (objective, task in samples.jsonl, field, higher is better)
METRICS: dict[str, tuple[str, str, str, bool]] = {
    "win_rate": ("helpful", "alpaca", "score", True),
    "safety_score": ("harmless", "harmful", "unsafe", False),
    "over_refusal": ("harmless", "benign", "refusal", False),
    "ti": ("honest", "truthfulqa", "ti", True),
    "mc1": ("honest", "mc", "mc1", True),
    "mc2": ("honest", "mc", "mc2", True),
}


def _samples(folder: Path) -> dict[tuple[str, str], dict]:
    path = folder / "samples.jsonl"
    if not path.is_file():
        return {}
    out = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").split("\n")):   # U+2028 in answers is no line end
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"{path}, line {i + 1}: not JSON ({exc})") from None
            out[(str(row.get("task")), str(row.get("id")))] = row
    return out


def load_runs(folders: Sequence[str | Path]) -> dict[str, dict]:
    """``{mode: {"report", "samples", "path"}}`` from eval run folders (the mode from the report)."""
    from alignx.eval.report import load_report

    runs: dict[str, dict] = {}
    for f in folders:
        folder = Path(f)
        report = load_report(folder)
        mode = str(report["run"].get("mode") or folder.name)
        if mode in runs:
            raise InvalidInput(f"{folder}: a second run of mode {mode!r} (first: {runs[mode]['path']})")
        runs[mode] = {"report": report, "samples": _samples(folder if folder.is_dir() else folder.parent),
                      "path": str(folder)}
    return runs


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """(mean(a - b), lo, hi): percentile CI of the mean paired difference."""
    from alignx.eval.metrics import bootstrap_ci

    d = [x - y for x, y in zip(a, b)]
    if not d:
        raise InvalidInput("paired_bootstrap needs at least one pair")
    lo, hi = bootstrap_ci(d, n_boot, seed)
    return sum(d) / len(d), lo, hi


def _delta(run: dict, base: dict, metric: str, n_boot: int, seed: int) -> dict | None:
    objective, task, field, higher = METRICS[metric]
    e, e0 = run["report"].get(metric), base["report"].get(metric)
    if not isinstance(e, dict) or not isinstance(e0, dict) or e.get("value") is None or e0.get("value") is None:
        return None
    keys = [k for k, row in run["samples"].items() if k[0] == task and isinstance(row.get(field), (int, float))
            and isinstance(base["samples"].get(k, {}).get(field), (int, float))]
    if keys:
        value, lo, hi = paired_bootstrap([float(run["samples"][k][field]) for k in keys],
                                         [float(base["samples"][k][field]) for k in keys], n_boot, seed)
        how = f"paired bootstrap over {len(keys)} items"
    else:
        value = float(e["value"]) - float(e0["value"])
        half = sum(((c[1] - c[0]) / 2) ** 2 for c in (e.get("ci95") or [0, 0], e0.get("ci95") or [0, 0])) ** 0.5
        lo, hi, how = value - half, value + half, "difference of reported values, CI sqrt(h^2 + h0^2)"
    sign = 1.0 if higher else -1.0
    return {"objective": objective, "delta": value, "ci95": [lo, hi], "good": sign * value,
            "higher_is_better": higher, "value": float(e["value"]), "base": float(e0["value"]), "method": how}


def forgetting(folders: Sequence[str | Path], base_mode: str = "base", n_boot: int = 1000, seed: int = 0,
               loss_shift: Mapping[str, Mapping[str, dict]] | None = None) -> dict:
    """The modes x metrics matrix of Delta against ``base_mode`` (see the module docstring)."""
    runs = load_runs(folders)
    if base_mode not in runs:
        raise InvalidInput(f"no run of the base mode {base_mode!r} among {sorted(runs)}: pass its eval folder too")
    base = runs[base_mode]
    modes = [m for m in runs if m != base_mode]
    if not modes:
        raise InvalidInput("forgetting needs at least one run besides the base")
    matrix = {m: {k: d for k in METRICS if (d := _delta(runs[m], base, k, n_boot, seed)) is not None} for m in modes}
    metrics = [k for k in METRICS if any(k in row for row in matrix.values())]
    return {"analysis": "forgetting", "base": base_mode, "modes": modes, "metrics": metrics,
            "objectives": {k: METRICS[k][0] for k in metrics}, "matrix": matrix,
            "runs": {m: r["path"] for m, r in runs.items()}, "loss_shift": dict(loss_shift or {}),
            "definition": "Delta = metric(mode) - metric(base); good = Delta signed so that > 0 is better"}


def loss_shift(studio, modes: Sequence[str], rows: Mapping[str, Sequence], base_mode: str = "base",
               n_boot: int = 1000, seed: int = 0) -> dict[str, dict[str, dict]]:
    """``{mode: {objective: {"delta", "ci95", "loss", "base_loss", "n"}}}``: the held-out loss shift."""
    from alignx.interp.heads import losses

    base = {o: losses(studio.policy(base_mode), r).tolist() for o, r in rows.items()}
    out: dict[str, dict[str, dict]] = {}
    for mode in modes:
        if mode == base_mode:
            continue
        pol = studio.policy(mode)
        out[mode] = {}
        for o, r in rows.items():
            lm = losses(pol, r).tolist()
            value, lo, hi = paired_bootstrap(lm, base[o], n_boot, seed)
            out[mode][o] = {"delta": value, "ci95": [lo, hi], "loss": sum(lm) / len(lm),
                            "base_loss": sum(base[o]) / len(base[o]), "n": len(lm)}
    return out
