"""Forgetting and blind spots from eval runs of scripted policies (known answers, known deltas)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from alignx.errors import InvalidInput
from alignx.eval.runner import run_suite
from alignx.interp.blindspots import blind_spots
from alignx.interp.forgetting import forgetting, paired_bootstrap

sys.path.insert(0, str(Path(__file__).parent))
from test_eval_runner import SUITE, ScriptedJudge, ScriptedPolicy, _lp_factory  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    from alignx.eval.suites import build_tasks

    tasks = build_tasks(SUITE, data_dir)
    judge = ScriptedJudge()
    judges = {c: judge for c in judge.capabilities}
    harmful = [x["prompt"] for x in tasks.harmful]
    base = {x["instruction"]: "short" for x in tasks.alpaca}
    base.update({p: "Here is how to build a BOMB" for p in harmful})            # all unsafe
    base.update({x["prompt"]: "Sure, here it is." for x in tasks.benign})
    base.update({x["question"]: "TRUE and informative" for x in tasks.truthfulqa})
    expert = dict(base, **{p: "I'm sorry, I can't" for p in harmful})          # safe everywhere
    fused = dict(expert, **{harmful[0]: "Here is how to build a BOMB"})        # worse than the expert on item 0
    root = tmp_path_factory.mktemp("runs")
    folders = {}
    for mode, answers in (("base", base), ("expert:harmless", expert), ("mocae-logit", fused)):
        folders[mode] = root / mode.replace(":", "_")
        run_suite(SUITE, ScriptedPolicy(answers, _lp_factory(tasks, 0.0)), judges, folders[mode], n_boot=50,
                  data_dir=data_dir, tasks=tasks, progress=False, run_info={"model": "m", "mode": mode})
    return folders, tasks


def test_forgetting_matrix_has_the_known_deltas(runs):
    folders, tasks = runs
    r = forgetting(list(folders.values()))
    n = len(tasks.harmful)
    e = r["matrix"]["expert:harmless"]["safety_score"]
    assert e["delta"] == pytest.approx(-1.0) and e["good"] == pytest.approx(1.0) and e["ci95"] == [-1.0, -1.0]
    f = r["matrix"]["mocae-logit"]["safety_score"]
    assert f["delta"] == pytest.approx(-(n - 1) / n) and "paired bootstrap" in f["method"]
    assert r["matrix"]["expert:harmless"]["win_rate"]["delta"] == 0.0
    assert r["objectives"]["over_refusal"] == "harmless" and r["modes"] == ["expert:harmless", "mocae-logit"]
    from alignx.interp.figures import forgetting_figure

    assert forgetting_figure(r).data[0].z[0][r["metrics"].index("safety_score")] == pytest.approx(1.0)


def test_forgetting_needs_the_base(runs):
    folders, _ = runs
    with pytest.raises(InvalidInput, match="no run of the base mode"):
        forgetting([folders["expert:harmless"], folders["mocae-logit"]])
    with pytest.raises(InvalidInput, match="second run of mode 'base'"):
        forgetting([folders["base"], folders["base"]])


def test_paired_bootstrap():
    d, lo, hi = paired_bootstrap([1, 2, 3, 4], [0, 0, 0, 0], n_boot=500)
    assert d == 2.5 and 1 <= lo <= d <= hi <= 4


def test_blind_spots_without_a_router(runs):
    folders, tasks = runs
    r = blind_spots(list(folders.values()))
    worse = [e for e in r["fused_worse"] if e["task"] == "harmful"]
    assert [e["id"] for e in worse] == [str(tasks.harmful[0]["id"])] and worse[0]["best_expert"] == "expert:harmless"
    assert worse[0]["prompt"] == tasks.harmful[0]["prompt"]
    failing = {(e["task"], e["id"]) for e in r["all_fail"]}
    assert failing == {("alpaca", str(x["id"])) for x in tasks.alpaca}     # "short" loses in every run; the
    # harmful item 0 is refused by the expert, benign and TruthfulQA answers pass everywhere
    assert r["confident_wrong"] == [] and r["router"] is False


def test_blind_spots_with_a_router_are_what_the_router_says(runs, tmp_path_factory):
    import tiny_studio

    from alignx.interp.blindspots import TASK_OBJECTIVE
    from alignx.studio import Studio

    folders, _ = runs
    studio = Studio.load("tiny-random", tiny_studio.build(tmp_path_factory.mktemp("bs")), device="cpu")
    r = blind_spots(list(folders.values()), studio, threshold=0.4)
    listed = {(e["task"], e["id"]) for e in r["confident_wrong"]}
    owner = {o.expert: o.name for o in studio.objectives}
    from alignx.interp.blindspots import _prompts

    prompts = _prompts(folders["base"])
    expected = set()
    for (task, id_), p in prompts.items():
        if task in TASK_OBJECTIVE:
            w = studio.mocae.route(p).probabilities
            top = max(w, key=w.get)
            if w[top] >= 0.4 and owner[top] != TASK_OBJECTIVE[task]:
                expected.add((task, id_))
    assert listed == expected
    assert all("route_cluster" in e and "route_probabilities" in e for e in r["confident_wrong"] + r["fused_worse"])


def test_cli_forgetting_writes_json_and_html(runs, tmp_path):
    folders, _ = runs
    out = tmp_path / "f"
    r = subprocess.run([sys.executable, "-m", "alignx", "interp", "forgetting", *map(str, folders.values()),
                        "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "forgetting.json").read_text())["base"] == "base"
    assert (out / "forgetting.html").stat().st_size > 1000
    r = subprocess.run([sys.executable, "-m", "alignx", "interp", "forgetting", str(tmp_path / "missing"),
                        "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no report.json" in r.stderr


def test_cli_forgetting_with_the_held_out_loss_shift(runs, tmp_path, data_dir):
    import tiny_studio

    folders, _ = runs
    experts = tiny_studio.build(tmp_path / "experts")
    out = tmp_path / "f"
    r = subprocess.run([sys.executable, "-m", "alignx", "interp", "forgetting", *map(str, folders.values()),
                        "--loss-rows", "2", "--model", "tiny-random", "--experts-dir", str(experts),
                        "--data-dir", str(data_dir), "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    shift = json.loads((out / "forgetting.json").read_text())["loss_shift"]
    assert set(shift) == {"expert:harmless", "mocae-logit"}
    for row in shift.values():
        assert set(row) == {"harmless", "helpful", "honest"}
        for e in row.values():
            assert e["n"] == 2 and e["delta"] == pytest.approx(e["loss"] - e["base_loss"], abs=1e-9)
