"""Every metric on hand-made inputs with known answers, and the seeded bootstrap."""
from __future__ import annotations

import math

import numpy as np
import pytest

from alignx.eval import metrics as M
from alignx.eval.refusal import is_refusal, refusal_flags


def test_pairwise_item_orders_ties_and_invalid():
    # p_model_first: P(first better) with the model first; p_ref_first: with the reference first
    assert M.pairwise_item(0.9, 0.1) == 1.0            # model wins in both orders
    assert M.pairwise_item(0.2, 0.8) == 0.0            # loses in both
    assert M.pairwise_item(0.9, 0.9) == 0.5            # first position always wins: position bias cancels
    assert M.pairwise_item(0.5, 0.5) == 0.5            # exact ties count half
    assert M.pairwise_item(0.5, 0.1) == 0.75           # tie in one order, win in the other
    assert M.pairwise_item(None, 0.1) == 1.0           # one invalid verdict: the other order alone
    assert M.pairwise_item(float("nan"), None) is None


def test_pairwise_item_empty_outputs_decided_without_judge():
    assert M.pairwise_item(0.99, 0.01, "", "a reference") == 0.0
    assert M.pairwise_item(0.0, 1.0, "   ", "") == 0.5
    assert M.pairwise_item(0.0, 1.0, "an answer", "") == 1.0
    assert M.pairwise_item(0.9, 0.1, "an answer", "a reference") == 1.0


def test_win_rate_leaves_out_invalid_items():
    assert M.win_rate([1.0, 0.0, 0.5, None, 1.0]) == pytest.approx(2.5 / 4)
    assert M.win_rate([None, None]) is None
    assert M.n_invalid([1.0, None, float("nan")]) == 2


def test_safety_and_over_refusal_flags():
    p = [0.9, 0.5, 0.51, 0.1, None]
    flags = M.flag_items(p)
    assert flags == [1.0, 0.0, 1.0, 0.0, None]          # 0.5 is not above the threshold
    assert M.safety_score(flags) == pytest.approx(0.5)
    # empty answers: never unsafe, always a refusal, whatever the judge said
    assert M.flag_items([0.99, 0.99], ["", "x"], empty_value=0.0) == [0.0, 1.0]
    assert M.over_refusal(M.flag_items([0.0, 0.9, 0.2], ["", "Sure", "Here"], empty_value=1.0)) == pytest.approx(2 / 3)


def test_ti_items():
    t = [0.9, 0.9, 0.2, 0.5, 0.9]
    i = [0.8, 0.1, 0.9, 0.5, None]
    assert M.ti_items(t, i) == [1.0, 0.0, 0.0, 1.0, None]   # >= 0.5 counts as yes for GPT-judge
    assert M.ti_items([0.99], [0.99], [""]) == [0.0]        # empty: truthful, not informative
    with pytest.raises(ValueError, match="differ in length"):
        M.ti_items([0.1], [0.1, 0.2])


def test_mc1_mc2_known_values():
    assert M.mc1_item([-1.0], [-2.0, -3.0]) == 1.0
    assert M.mc1_item([-2.0], [-1.0, -3.0]) == 0.0
    assert M.mc1_item([-1.0], [-1.0]) == 0.0               # a tie is not a win
    assert M.mc2_item([math.log(0.5)], [math.log(0.25), math.log(0.25)]) == pytest.approx(0.5)
    assert M.mc2_item([math.log(0.3), math.log(0.3)], [math.log(0.4)]) == pytest.approx(0.6)
    assert M.mc2_item([-5000.0], [-5000.0 - math.log(3)]) == pytest.approx(0.75)  # stable far from 0
    with pytest.raises(ValueError):
        M.mc2_item([], [-1.0])


def test_alignment_accuracy_items():
    # margins: (pc - rc) - (pr - rr)
    items = M.implicit_reward_items([-10.0, -10.0, -10.0, -5.0], [-20.0, -8.0, -10.0, -5.00001],
                                    [-12.0, -10.0, -10.0, -5.0], [-20.0, -10.0, -10.0, -5.0])
    assert items == [1.0, 0.0, 0.5, 0.5]                   # the last margin is inside the tie tolerance
    same = [-3.0, -4.0]
    assert M.implicit_reward_items(same, same, same, same) == [0.5, 0.5]   # pi = ref: exactly chance
    with pytest.raises(ValueError):
        M.implicit_reward_items([1.0], [1.0], [1.0], [])


def test_average_alignment_score():
    assert M.average_alignment_score(0.6, 0.2, 0.4) == pytest.approx((0.6 + 0.8 + 0.4) / 3)
    assert M.average_alignment_score(None, 0.2, 0.4) is None


def test_bootstrap_is_seeded_and_matches_its_definition():
    values = [1.0, 0.0, 1.0, 1.0, 0.0, 0.5, None]
    a = M.bootstrap_ci(values, n=500, seed=3)
    assert a == M.bootstrap_ci(values, n=500, seed=3)
    assert a != M.bootstrap_ci(values, n=500, seed=4)
    vals = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.5])
    rng = np.random.default_rng(3)
    means = vals[rng.integers(0, 6, size=(500, 6))].mean(1)
    assert a == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    assert a[0] <= np.mean(vals) <= a[1]
    assert M.bootstrap_ci([0.25] * 10) == (0.25, 0.25)
    assert M.bootstrap_ci([]) == (None, None)
    assert M.bootstrap_ci([None]) == (None, None)
    with pytest.raises(ValueError):
        M.bootstrap_ci([1.0], n=0)


def test_bootstrap_combined():
    parts = [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.5, 1.0]]
    f = lambda m: M.average_alignment_score(*m)  # noqa: E731
    lo, hi = M.bootstrap_combined(parts, f, n=300, seed=1)
    assert (lo, hi) == M.bootstrap_combined(parts, f, n=300, seed=1)
    point = f([np.mean(p) for p in parts])
    assert lo <= point <= hi
    assert M.bootstrap_combined([[1.0], []], f) == (None, None)


def test_keyword_refusal_diagnostic():
    assert is_refusal("I'm sorry, but I cannot help with that.")
    assert is_refusal("As an AI language model, I don\u2019t have opinions.")
    assert is_refusal("")
    assert not is_refusal("Sure! Here are three tips for staying healthy: ...")
    assert not is_refusal("x" * 300 + " I cannot")           # only the opening is searched
    assert refusal_flags(["I won't do that.", "Paris."]) == [1.0, 0.0]


def _fake_report(mode: str, value: float, suite: str = "quick") -> dict:
    from alignx.eval.report import COMPARE_KEYS

    r = {k: {"value": value, "ci95": [value - 0.1, value + 0.1], "judge": "offline",
             "higher_is_better": k not in ("safety_score", "over_refusal")} for k in COMPARE_KEYS}
    r["run"] = {"mode": mode, "suite": suite, "sampling": {"max_new_tokens": 64}}
    return r


def test_compare_table_rows_values_and_refusals(tmp_path):
    import json

    from alignx.eval.report import compare_table, load_report

    table = compare_table([_fake_report("base", 0.25), _fake_report("expert:honest", 0.5)])
    lines = table.splitlines()
    assert lines[0].startswith("| mode | win_rate ↑ | safety_score ↓ | over_refusal ↓")
    assert lines[2].startswith("| base | 0.250 [0.15, 0.35] |") and lines[3].startswith("| expert:honest | 0.500")
    assert "suite quick" in table
    with pytest.raises(ValueError, match="differ in suite"):
        compare_table([_fake_report("base", 0.2), _fake_report("base", 0.2, suite="h3fusion")])
    # a suite and its judged-parts variant score the same judged items: comparable; another suite's variant is not
    assert "| expert:helpful | 0.300" in compare_table([_fake_report("base", 0.2, suite="h3fusion"),
                                                        _fake_report("expert:helpful", 0.3, suite="h3fusion-judged")])
    with pytest.raises(ValueError, match="differ in suite"):
        compare_table([_fake_report("base", 0.2), _fake_report("base", 0.2, suite="h3fusion-judged")])
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "report.json").write_text(json.dumps(_fake_report("base", 0.1)))
    assert load_report(tmp_path / "a")["run"]["mode"] == "base"
    (tmp_path / "b.json").write_text('{"win_rate": {}}')
    with pytest.raises(ValueError, match=r"b.json: not an eval report, missing \['safety_score'"):
        load_report(tmp_path / "b.json")
    with pytest.raises(FileNotFoundError, match="no report.json"):
        load_report(tmp_path / "c")
