"""Judge accuracy on labelled data: the metrics (pure) and the sets (real files, decontaminated)."""
from __future__ import annotations

import pytest

from alignx.eval.judges import accuracy as A
from alignx.eval.judges.base import Judge


def test_auroc_is_mann_whitney_with_ties():
    assert A.auroc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert A.auroc([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 0.0
    assert A.auroc([0.5, 0.5], [True, False]) == 0.5
    # one positive above one of two negatives, tied with the other: (1 + 0.5) / 2
    assert A.auroc([0.5, 0.2, 0.5], [True, False, False]) == pytest.approx(0.75)
    assert A.auroc([0.3, 0.4], [True, True]) is None


def test_binary_report_counts():
    probs = [0.9, 0.7, 0.2, 0.6, 0.1, None]
    labels = [True, True, True, False, False, False]
    r = A.binary_report(probs, labels)
    assert r["n"] == 5 and r["invalid"] == 1
    assert r["accuracy"] == pytest.approx(3 / 5) and r["tpr"] == pytest.approx(2 / 3, abs=1e-4) and r["tnr"] == 0.5
    assert r["balanced_accuracy"] == pytest.approx((2 / 3 + 0.5) / 2, abs=1e-4)
    assert r["majority_baseline"] == pytest.approx(3 / 5) and r["positive_rate"] == pytest.approx(3 / 5)
    assert r["ci95"][0] <= r["accuracy"] <= r["ci95"][1]


class _LengthJudge(Judge):
    """Prefers the longer answer, with a bias towards the first position when ``biased``."""
    capabilities = frozenset({"prefer"})

    def __init__(self, biased: bool = False):
        self.biased = biased

    def prefer(self, instructions, first, second):
        return [1.0 if self.biased else float(len(a) > len(b)) for a, b in zip(first, second)]


def test_preference_report_sees_position_bias():
    pairs = [(f"q{i}", "a long and useful answer", "short") for i in range(200)]
    assert A.preference_report(_LengthJudge(), pairs)["accuracy"] == 1.0
    biased = A.preference_report(_LengthJudge(biased=True), pairs)["accuracy"]
    assert 0.35 < biased < 0.65          # always "first": right only when chosen was shown first


def test_accuracy_sets_are_labelled_and_never_trained_on(data_dir):
    from alignx.data.decontam import EvalIndex
    from alignx.eval.judges import training_data as TD

    sets = TD.accuracy_sets(data_dir, limit=40, seed=1)
    assert set(sets) == {"beavertails_30k_test", "pku_saferlhf_labelled", "hh_helpful_heldout"}
    for name, (kind, load) in sets.items():
        rows = load()
        assert len(rows) == 40 and all(isinstance(x, str) and x for r in rows for x in r[:2])
        if kind == "safety":
            assert {r[2] for r in rows} == {True, False}
    held = TD.hh_helpful_pairs(data_dir, "heldout")
    train = TD.hh_helpful_pairs(data_dir, "train")
    assert len(held) > 100 and len(train) > 3 * len(held) // 2
    assert not {r.prompt for r in held} & {r.prompt for r in train}
    index = EvalIndex.build(data_dir, TD.JUDGE_EVAL_ROLES)
    assert all(index.is_clean(r.prompt) for r in train)


def test_judge_accuracy_cli_rejects_unknown_set(capsys):
    from alignx.cli import main

    assert main(["judge-accuracy", "--sets", "nope"]) == 2
    assert "unknown set 'nope'; available:" in capsys.readouterr().err
