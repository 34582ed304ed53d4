"""The app's small adapter over ``alignx.eval`` (no gradio): run a suite for several modes,
turn reports into table rows, and read a calibration sweep for the Pareto plot.

Only numbers from ``alignx.eval`` reports are shown; a missing value stays missing ("n/a").
"""
from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from typing import Callable

METRICS = [  # (report key, label, direction)
    ("win_rate", "win rate (helpful)", "↑"),
    ("safety_score", "safety score: harmful answers judged unsafe", "↓"),
    ("over_refusal", "over-refusal on benign prompts", "↓"),
    ("ti", "truthful × informative (TI)", "↑"),
    ("mc1", "TruthfulQA MC1", "↑"),
    ("mc2", "TruthfulQA MC2", "↑"),
    ("alignment_accuracy", "alignment accuracy (judge-free)", "↑"),
    ("average_alignment_score", "average alignment score", "↑"),
]
SWEEP_NAMES = ("pareto.json", "sweep.json")


def fmt(entry: dict | None) -> str:
    """"0.512 [0.401, 0.620]" from a report entry; "n/a" when the value is missing."""
    if not entry or entry.get("value") is None:
        return "n/a"
    lo, hi = (entry.get("ci95") or [None, None])[:2]
    ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
    return f"{entry['value']:.3f}{ci}"


def judge_label(entry: dict | None) -> str:
    if not entry:
        return ""
    name = str(entry.get("judge", ""))
    return name + (" (proxy)" if entry.get("judge_is_proxy") and "proxy" not in name else "")


def table(reports: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows): one row per metric, one column per mode (value [95% CI]), then the judge."""
    modes = list(reports)
    rows = []
    for key, label, direction in METRICS:
        entries = [reports[m].get(key) for m in modes]
        judges = sorted({judge_label(e) for e in entries if e})
        rows.append([f"{label} {direction}"] + [fmt(e) for e in entries] + [", ".join(j for j in judges if j)])
    return ["metric"] + modes + ["judge"], rows


def compact(report: dict) -> dict:
    """The ``/evaluate`` view of one report: value, ci95, n and judge per headline metric."""
    out = {}
    for key, _, _ in METRICS:
        e = report.get(key) or {}
        out[key] = {"value": e.get("value"), "ci95": e.get("ci95"), "n": e.get("n"), "judge": judge_label(e)}
    out["warnings"] = list(report.get("warnings", []))
    out["wall_time_s"] = (report.get("run") or {}).get("wall_time_s")
    return out


class Evaluator:
    """Runs ``alignx.eval.run_suite`` for the modes of one Studio; judges are built once per name."""

    def __init__(self, studio, out_root: Path):
        self.studio, self.out_root = studio, Path(out_root)
        self._judges: dict[str, dict] = {}
        self._lock = threading.Lock()

    @staticmethod
    def suites() -> list[str]:
        from alignx.eval.suites import SUITES

        return list(SUITES)

    @staticmethod
    def judge_names() -> list[str]:
        from alignx.eval.judges.base import available_judges

        return available_judges()

    def judges(self, name: str) -> dict:
        with self._lock:
            if name not in self._judges:
                from alignx.eval.judges.base import build_judges

                self._judges[name] = build_judges(name)
            return self._judges[name]

    def run(self, modes: list[str], suite: str, judge: str, log: Callable[[str], None] = lambda m: None,
            tqdm_progress: bool = True) -> dict[str, dict]:
        """mode -> full report; each mode's files go to ``<out_root>/<suite>-<time>/<mode>/``."""
        from alignx import methods
        from alignx.eval.options import run_info
        from alignx.eval.runner import run_suite

        judges = self.judges(judge)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = methods.policy(self.studio, "base")
        reports = {}
        for i, mode in enumerate(modes):
            log(f"{mode} ({i + 1}/{len(modes)})")
            policy = methods.policy(self.studio, mode)
            out = self.out_root / f"{suite}-{stamp}" / mode.replace(":", "-")
            reports[mode] = run_suite(suite, policy, judges, out, ref_policy=None if mode == "base" else base,
                                      run_info=run_info(self.studio, mode, None, policy), progress=tqdm_progress,
                                      log_fn=lambda msg, m=mode: log(f"{m}: {msg}"))
        return reports


# --- calibration sweep -------------------------------------------------------------------------
def find_sweep(*folders: Path) -> Path | None:
    for folder in folders:
        for name in SWEEP_NAMES:
            if folder and (Path(folder) / name).is_file():
                return Path(folder) / name
    return None


def load_sweep(path: Path) -> tuple[list[dict], list[int]]:
    """(points, front indices) of a sweep file: {"points": [...], "front": [...]} or a bare list of
    points {label, kind, helpful, harmless, honest, settings}; the front is computed when absent."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    points = data.get("points", []) if isinstance(data, dict) else data
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise ValueError(f"{path}: expected a list of points (objects)")
    front = data.get("front") if isinstance(data, dict) else None
    if front is None:
        from alignx.eval.pareto import pareto_front

        front = pareto_front(points)
    return points, list(front)


def nearest_point(points: list[dict], x: float, y: float, z: float | None = None) -> dict | None:
    """The sweep point drawn at (x, y[, z]) = (helpful, harmless[, honest]) with calibration settings."""
    best, dist = None, math.inf
    for p in points:
        if not p.get("settings") or any(p.get(k) is None for k in ("helpful", "harmless", "honest")):
            continue
        d = (p["helpful"] - x) ** 2 + (p["harmless"] - y) ** 2 + ((p["honest"] - z) ** 2 if z is not None else 0)
        if d < dist:
            best, dist = p, d
    return best if dist < 1e-6 else None
