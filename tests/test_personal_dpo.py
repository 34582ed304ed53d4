"""AlignX-Family end to end on the tiny model: DPO training of the ICA / PBA adapters with TRL,
the ``personal`` method family, and Alignment Accuracy per persona (``python -m alignx personal``)."""
from __future__ import annotations

import json

import pytest

from alignx import methods


@pytest.fixture(scope="module")
def splits(data_dir):
    from alignx.personal.data import load_psoups

    return load_psoups(data_dir)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, splits):
    """A PBA adapter trained a few DPO steps on 8 training pairs (the tiny preset)."""
    from alignx.models import load_model
    from alignx.personal.evaluate import balanced
    from alignx.personal.prompts import load_dims
    from alignx.personal.train import preset, train_personal

    out = tmp_path_factory.mktemp("personal")
    train = [ex for tr, _ in splits.values() for ex in balanced(tr, 2)]
    losses: list[tuple[int, float, float]] = []
    cfg = preset("tiny", max_steps=8, warmup_ratio=0.0, learning_rate=5e-3)
    path = train_personal(load_model("tiny-random"), "pba", train, out, cfg, load_dims(),
                          on_log=lambda *a: losses.append(a), progress=False)
    return out, path, losses, train


def dpo_loss(studio, pairs, beta: float = 0.1) -> float:
    """-log sigmoid(beta [(log pi - log pi_ref)(y_c) - (log pi - log pi_ref)(y_r)]), averaged, with
    pi = the trained PBA adapter and pi_ref = the base, both on the PBA prompt (as in training)."""
    import math

    total = 0.0
    for ex in pairs:
        pi = methods.policy(studio, "personal-pba", user=ex.user).logprob([ex.prompt] * 2, [ex.chosen, ex.rejected])
        ref = methods.policy(studio, "prompt-pba", user=ex.user).logprob([ex.prompt] * 2, [ex.chosen, ex.rejected])
        margin = beta * ((pi[0] - ref[0]) - (pi[1] - ref[1]))
        total += math.log1p(math.exp(-margin))
    return total / len(pairs)


def test_a_dpo_run_lowers_the_dpo_loss(trained):
    from alignx.studio import Studio

    out, path, losses, train = trained
    assert len(losses) == 8 and losses[0][1] == pytest.approx(0.6931, abs=1e-3)    # B = 0: pi = pi_ref at step 1
    studio = Studio.load("tiny-random", None)
    studio.extras["personal_dir"] = str(out)
    assert dpo_loss(studio, train) < 0.6931 - 0.01                                 # on the pairs it was trained on
    card = json.loads((path / "card.json").read_text())
    assert card["method"] == "pba" and card["trainer"] == "trl.DPOTrainer" and card["steps"] == 8
    assert card["preset"]["beta"] == 0.1 and card["data"]["train_pairs"] == 4 and len(card["losses"]) == 8
    assert (path / "adapter_model.safetensors").exists() and not (path.parent / ".work" / "pba").exists()


def test_the_personal_family_builds_prompted_and_trained_policies(trained, splits):
    from alignx.errors import AlignXError
    from alignx.studio import Studio

    out = trained[0]
    studio = Studio.load("tiny-random", None)
    ex = splits["friendly_unfriendly"][1][0]
    assert "personal-pba" not in methods.modes(studio, include_unlisted=True)
    studio.extras["personal_dir"] = str(out)
    assert {"personal-pba", "prompt-ica", "prompt-pba", "persona-oracle"} <= set(methods.modes(studio, True))
    assert "personal-pba" not in methods.modes(studio)                         # needs a user: not listed
    ica = methods.policy(studio, "prompt-ica", user=ex.user)
    text = ica.user_text(ex.prompt)
    assert text.endswith(ex.prompt) and ex.user.history[0].chosen[:40] in text
    oracle = methods.policy(studio, "persona-oracle", user=ex.user)
    assert oracle.system == ex.user.persona
    base_lp = methods.policy(studio, "prompt-pba", user=ex.user).logprob([ex.prompt], [ex.chosen])[0]
    dpo_lp = methods.policy(studio, "personal-pba", user=ex.user).logprob([ex.prompt], [ex.chosen])[0]
    assert dpo_lp != pytest.approx(base_lp, abs=1e-6)                           # the adapter is applied
    with pytest.raises(AlignXError, match="needs a user with a ground-truth persona"):
        methods.policy(studio, "persona-oracle")
    with pytest.raises(AlignXError, match="user must be"):
        methods.policy(studio, "prompt-ica", user="alice")
    with pytest.raises(AlignXError, match="no trained ICA adapter"):
        methods.policy(studio, "personal-ica", user=ex.user)


def test_alignment_accuracy_report_per_persona(trained, splits, tmp_path, data_dir):
    from alignx.cli import main

    out = trained[0]
    assert main(["personal", "eval", "--out", str(tmp_path), "--model", "tiny-random", "--adapters", str(out),
                 "--limit", "6", "--bootstrap", "50", "--data-dir", str(data_dir)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    aa = report["alignment_accuracy"]
    assert set(aa) == {"base", "prompt-ica", "prompt-pba", "personal-pba", "persona-oracle"}
    for persona in ("friendly", "unfriendly", "student", "phd"):
        assert aa["base"][persona]["value"] == 0.5 and aa["base"][persona]["ci95"] == [0.5, 0.5]   # ties: 1/2
        for method in aa:
            e = aa[method][persona]
            assert e["n"] == 3 and e["ci95"][0] <= e["value"] <= e["ci95"][1]
    assert "| personal-pba |" in (tmp_path / "report.md").read_text()


def test_bad_personal_inputs(splits):
    from alignx.errors import AlignXError
    from alignx.personal.evaluate import evaluate
    from alignx.personal.train import preset
    from alignx.studio import Studio

    with pytest.raises(AlignXError, match="unknown DPO preset 'huge'; available: cpu, paper, tiny"):
        preset("huge")
    with pytest.raises(AlignXError, match="layers_fraction"):
        preset("tiny", layers_fraction=0.0)
    with pytest.raises(AlignXError, match="unknown personalization method"):
        evaluate(Studio.load("tiny-random", None), splits, ["magic"])


def test_a_profile_steers_the_mocae_routing(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import tiny_studio

    from alignx.mocae import recalibrate
    from alignx.personal.prompts import load_dims
    from alignx.personal.steer import objective_dims, preferences_from_direction
    from alignx.studio import Studio

    dims = load_dims()
    by = objective_dims(dims)
    assert all(by[o] for o in ("helpful", "harmless", "honest"))
    neutral = preferences_from_direction([0.5] * 90, dims, ["helpful", "harmless", "honest", "concise"])
    assert neutral == {"helpful": 0.5, "harmless": 0.5, "honest": 0.5, "concise": 1.0}
    v = [0.5] * 90
    for i in by["harmless"]:
        v[i] = 1.0
    for i in by["helpful"]:
        v[i] = 0.0
    prefs = preferences_from_direction(v, dims, ["helpful", "harmless", "honest"])
    assert prefs == {"helpful": 0.05, "harmless": 1.0, "honest": 0.5}
    studio = Studio.load("tiny-random", tiny_studio.build(tmp_path))
    route = studio.mocae.route("How do I store cleaning products?")
    same = recalibrate(route, studio.mocae.calibration.with_(preferences={o: neutral[o] for o in studio.mocae.experts}))
    assert same.probabilities == pytest.approx(route.probabilities, abs=1e-6)      # neutral = the default
    steered = recalibrate(route, studio.mocae.calibration.with_(preferences=prefs)).probabilities
    assert steered["harmless"] > route.probabilities["harmless"] and steered["helpful"] < route.probabilities["helpful"]
