"""The per-item scores kept in docs/points (``compare --export``) reproduce the reports beside them,
so a later checkout pairs its new runs with what docs/RESULTS.md reports instead of re-running them."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignx.eval.paired import TEXT_FIELDS, paired_differences

POINTS = Path(__file__).resolve().parents[1] / "docs" / "points"
RUNS = sorted(p.parent for p in POINTS.glob("*/*/report.json"))


def test_points_are_kept():
    assert RUNS, f"{POINTS} holds no exported run (compare --export)"


@pytest.mark.parametrize("run", RUNS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_each_point_reproduces_its_report_without_answer_text(run):
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    same = paired_differences(run, run, n_boot=20)
    for metric, e in same.items():
        assert e["a"] == pytest.approx(report[metric]["value"]), metric
    rows = [json.loads(x) for x in (run / "samples.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    assert rows and not any(f in r for r in rows for f in TEXT_FIELDS)
