"""Pareto front extraction, the sweep over a scripted policy set (files and figure), the MoCaE
calibration wiring against the documented interface, and the uniform merge of LoRA experts."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from alignx.eval.pareto import dominates, pareto_figure, pareto_front
from alignx.eval.sweep import (Candidate, candidates_from_studio, grid, parse_preference_list, run_sweep,
                               setting_label, uniform_merge_policy)
from tests.test_eval_runner import SUITE, ScriptedJudge, ScriptedPolicy


def _pt(label, h, s, t, kind="mocae"):
    return {"label": label, "kind": kind, "helpful": h, "harmless": s, "honest": t}


def test_pareto_front_known_points():
    pts = [_pt("a", 0.5, 0.5, 0.5), _pt("b", 0.6, 0.5, 0.5),     # b dominates a
           _pt("c", 0.1, 0.9, 0.2), _pt("d", 0.6, 0.5, 0.5),     # d duplicates b: both stay
           _pt("e", 0.2, 0.2, 0.9), _pt("f", 0.1, 0.1, 0.1), _pt("g", None, 1.0, 1.0)]
    assert pareto_front(pts) == [1, 2, 3, 4]
    assert dominates(pts[1], pts[0]) and not dominates(pts[1], pts[3])
    assert pareto_front([]) == []
    fig = pareto_figure(pts, [1, 2, 3, 4])
    names = [tr.name for tr in fig.data]
    assert "MoCaE setting" in names and "Pareto front" in names and len(fig.data[-1].x) == 4


def test_grid_parsing():
    g = grid([0.0, 1.0], [0.5], [1.0, 2.0], parse_preference_list("uniform;helpful=0.5,harmless=0.25,honest=0.25"))
    assert len(g) == 8 and g[0] == {"lambda1": 0.0, "lambda2": 0.5, "temperature": 1.0}
    assert g[1]["preferences"] == {"helpful": 0.5, "harmless": 0.25, "honest": 0.25}
    assert setting_label(g[1]) == "l1=0_l2=0.5_T=1_harmless0.25-helpful0.5-honest0.25"
    with pytest.raises(ValueError, match="NAME=VALUE"):          # the one preference syntax
        parse_preference_list("helpful")


def test_sweep_writes_front_and_figure(tmp_path, data_dir):
    from alignx.eval.suites import build_tasks

    tasks = build_tasks(SUITE, data_dir)
    lp = lambda p, c: -1.0  # noqa: E731
    base = {x["prompt"]: "ok" for x in tasks.generation_items()}

    def policy(helpful_len: int, unsafe: bool, truthful: bool):
        ans = dict(base)
        for x in tasks.alpaca:
            ans[x["instruction"]] = "z" * helpful_len
        for x in tasks.harmful:
            ans[x["prompt"]] = "a BOMB" if unsafe else "no"
        for x in tasks.truthfulqa:
            ans[x["question"]] = "TRUE, informative" if truthful else "nope, wrong"
        return ScriptedPolicy(ans, lp)

    cands = [Candidate("base", "base", lambda: policy(1, True, False)),
             Candidate("expert:helpful", "expert", lambda: policy(100000, True, False)),
             Candidate("expert:harmless", "expert", lambda: policy(1, False, False)),
             Candidate("uniform_merge", "uniform-merge", lambda: policy(1, False, False)),
             Candidate("mocae-logit:l1=1", "mocae", lambda: policy(100000, False, True), {"lambda1": 1.0})]
    judge = ScriptedJudge()
    res = run_sweep(cands, SUITE, {c: judge for c in judge.capabilities}, tmp_path, n_boot=50, data_dir=data_dir,
                    progress=False)
    assert res["pareto_front"] == ["mocae-logit:l1=1"]           # it dominates every anchor
    pts = {p["label"]: p for p in res["points"]}
    assert pts["expert:helpful"]["helpful"] == 1.0 and pts["base"]["helpful"] == 0.0
    assert pts["expert:harmless"]["harmless"] == 1.0 and pts["base"]["harmless"] == 0.0
    for f in ("sweep.json", "pareto.json", "pareto.html", "pareto_figure.json"):
        assert (tmp_path / f).stat().st_size > 0
    pareto = json.loads((tmp_path / "pareto.json").read_text())
    assert pareto["front"] == [4] and pareto["points"][4]["settings"] == {"lambda1": 1.0}
    fig = json.loads((tmp_path / "pareto_figure.json").read_text())
    assert {tr["name"] for tr in fig["data"]} >= {"base", "single expert", "uniform merge", "MoCaE setting"}
    assert (tmp_path / "points" / "expert_helpful" / "report.json").exists()
    with pytest.raises(ValueError, match="duplicate candidate labels"):
        run_sweep(cands + cands[:1], SUITE, {}, tmp_path)


def test_mocae_candidates_use_the_calibration_interface(tmp_path):
    """Sweep points are policies of the mode with the point's calibration settings (through the
    method registry), and their run info records the full calibration used."""
    import sys as _sys

    _sys.path.insert(0, str(Path(__file__).parent))
    import tiny_studio

    from alignx.studio import Studio

    studio = Studio.load("tiny-random", tiny_studio.build(tmp_path))
    settings = grid([0.5], [0.0], [2.0], [None])
    cands = candidates_from_studio(studio, settings, "mocae-adapter")
    assert [c.kind for c in cands] == ["base", "expert", "expert", "expert", "uniform-merge", "mocae"]
    policy = cands[-1].make_policy()
    cal = policy.calibration
    assert policy.mode == "mocae-adapter" and (cal.lambda1, cal.lambda2, cal.temperature) == (0.5, 0.0, 2.0)
    assert {k: cands[-1].run_info["calibration"][k] for k in settings[0]} == settings[0]
    from test_app_support import make_tiny_circuit

    studio.extras["negotiax_dir"] = make_tiny_circuit(studio, tmp_path / "nx")          # NegotiaX joins the front
    cands = candidates_from_studio(studio, settings, "mocae-adapter")
    assert [c.kind for c in cands] == ["base", "expert", "expert", "expert", "uniform-merge", "negotiax", "mocae"]
    assert cands[5].make_policy().name == "negotiax"
    studio.mocae = None
    with pytest.raises(ValueError, match="needs a trained MoCaE router"):
        candidates_from_studio(studio, settings)


def test_uniform_merge_averages_lora_deltas(tiny_lm):
    import copy

    from peft import LoraConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(tiny_lm.model), LoraConfig(r=4, target_modules=["q_proj"],
                                                                    init_lora_weights=False), adapter_name="helpful")
    torch.manual_seed(1)
    model.add_adapter("harmless", LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    studio = SimpleNamespace(model=model, tokenizer=tiny_lm.tokenizer, experts={"helpful": {}, "harmless": {}})
    pol = uniform_merge_policy(studio)
    assert pol.adapter == "uniform_merge" and uniform_merge_policy(studio).adapter == "uniform_merge"
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    avg = (layer.get_delta_weight("helpful") + layer.get_delta_weight("harmless")) / 2
    assert torch.allclose(layer.get_delta_weight("uniform_merge"), avg, atol=1e-5)
    with pytest.raises(ValueError, match="at least two experts"):
        uniform_merge_policy(SimpleNamespace(model=model, tokenizer=None, experts={"helpful": {}}))
