"""``ablate`` on the tiny model: every trained variant and each inference-time leave-one-out runs
the same suite, the table names them by variant, missing variants are reported, bad --modes fail."""
from __future__ import annotations

import json

import pytest

from alignx.errors import InvalidInput
from alignx.negotiax import preset
from alignx.negotiax.ablate import data_mismatches, variant_rows
from alignx.negotiax.core import NegotiaX

OBJ = ("harmless", "helpful", "honest")
DATA = {o: [(f"Question {i} about {o}?", f"An answer about {o}, number {i}.") for i in range(4)] for o in OBJ}


def test_variant_rows_order_and_missing():
    rows, missing = variant_rows(["base", "negotiax", "negotiax:without-helpful", "negotiax:module1"], OBJ)
    assert [m for _, m in rows] == ["base", "negotiax:module1", "negotiax", "negotiax:without-helpful"]
    assert "negotiax:module2" in missing and "negotiax:frozen" in missing
    assert not [m for m in missing if m.startswith("negotiax:loo-")]      # trained leave-out is optional


def test_data_mismatches_names_the_objective_and_the_circuits():
    """Circuits trained on different rows per source are flagged per objective; a trained
    leave-one-out, which lacks its objective by design, is not."""
    refusals = {"sources": {"safety_refusals": 640, "alpaca_benign": 0}}
    contrast = {"sources": {"safety_refusals": 320, "coconot_pref (compliant)": 320}}
    helpful = {"sources": {"alpaca": 640}}
    same = {"negotiax": {"data": {"harmless": refusals, "helpful": helpful}},
            "negotiax:module1": {"data": {"harmless": refusals, "helpful": helpful}},
            "negotiax:loo-harmless": {"data": {"helpful": helpful}}}
    assert data_mismatches(same) == []
    mixed = {**same, "negotiax": {"data": {"harmless": contrast, "helpful": helpful}}}
    lines = data_mismatches(mixed)
    assert len(lines) == 1
    assert lines[0] == ("harmless: negotiax trained on coconot_pref (compliant) 320, safety_refusals 320; "
                        "negotiax:module1 trained on safety_refusals 640")


def test_ablation_runs_every_variant(tmp_path, data_dir):
    from test_eval_runner import SUITE, ScriptedJudge

    from alignx.eval.suites import build_tasks
    from alignx.generation import Sampling
    from alignx.negotiax.ablate import run_ablation
    from alignx.negotiax.train import train_mac, train_preset
    from alignx.studio import Studio

    studio = Studio.load("tiny-random", None, device="cpu")
    studio.extras["negotiax_dir"] = tmp_path / "nx"
    judge = ScriptedJudge()
    judges = {c: judge for c in judge.capabilities}
    kw = dict(sampling=Sampling(max_new_tokens=3), n_boot=20, data_dir=data_dir, progress=False,
              tasks=build_tasks(SUITE, data_dir))
    with pytest.raises(InvalidInput, match="no trained NegotiaX circuit"):
        run_ablation(studio, SUITE, judges, tmp_path / "out", **kw)
    cfg = preset("tiny")
    for name in ("full", "module1"):
        nx = NegotiaX.fresh(studio.model, studio.tokenizer, OBJ, cfg)
        train_mac(nx, DATA, cfg, train_preset("tiny", steps=1), tmp_path / "nx", name=name, variant=name,
                  base_model=studio.lm.name)
    with pytest.raises(InvalidInput, match="not available; available: base, negotiax:module1"):
        run_ablation(studio, SUITE, judges, tmp_path / "out", modes=["negotiax:module2"], **kw)
    result = run_ablation(studio, SUITE, judges, tmp_path / "out", **kw)
    assert [r["mode"] for r in result["rows"]] == ["base", "negotiax:module1", "negotiax",
                                                   *(f"negotiax:without-{o}" for o in OBJ)]
    assert set(result["skipped"]) == {"negotiax:module2", "negotiax:frozen"}
    assert result["data_mismatches"] == []                      # both circuits trained on DATA
    saved = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert saved["rows"][0]["metrics"]["alignment_accuracy"]["value"] == 0.5          # the base against itself
    md = (tmp_path / "out" / "ablation.md").read_text()
    assert "| Module I only (`negotiax:module1`) |" in md and "| leave-one-out (honest) (`negotiax:without-honest`) |" in md
    assert "| B - A (A = base) |" in md and "| Module I only | " in md                # paired against the base
    for r in result["rows"]:
        run = json.loads(open(r["report"]).read())["run"]
        assert run["mode"] == r["mode"]
