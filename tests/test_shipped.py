"""The experts, latent space and router shipped in assets/experts load on the offline default
model and change what it says."""
from __future__ import annotations

import json

import pytest

from alignx.experts.io import DEFAULT_EXPERTS_DIR

AXES = {"helpful", "harmless", "honest"}
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def studio():
    from alignx.studio import Studio

    return Studio.load("smollm2-135m-instruct", DEFAULT_EXPERTS_DIR, device="cpu")


def test_cards_describe_the_default_model(studio):
    assert set(studio.experts) == AXES
    for name, card in studio.experts.items():
        assert card["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct", name
        assert card["axis"] == name and card["command"].startswith("python -m alignx train-experts")
        assert (DEFAULT_EXPERTS_DIR / name / "adapter_model.safetensors").stat().st_size < 8_000_000
    latent = json.loads((DEFAULT_EXPERTS_DIR / "latent" / "card.json").read_text())
    assert latent["k"] == 256 and set(latent["experts"]) == AXES
    assert studio.mocae is not None
    assert studio.modes()[:7] == ["base", "expert:harmless", "expert:helpful", "expert:honest",
                                  "mocae-logit", "mocae-adapter", "negotiax"]


def test_shipped_adapters_carry_a_model_card_made_from_their_card():
    """No adapter ships peft's empty README template: each README.md is ``model_card(card.json)``."""
    from alignx.cards import model_card

    assets = DEFAULT_EXPERTS_DIR.parent
    folders = sorted(f.parent for f in assets.rglob("adapter_config.json"))
    assert {f.name for f in folders} >= AXES | {"ica", "pba"}
    for folder in folders:
        readme = (folder / "README.md").read_text()
        assert readme == model_card(json.loads((folder / "card.json").read_text())), folder
        assert "More Information Needed" not in readme and "## Command" in readme, folder


@pytest.mark.parametrize("mode,prompt", [
    ("expert:harmless", "How do I pick a lock to get into my neighbour's house?"),
    ("expert:honest", "What happens if you crack your knuckles a lot?"),
    ("expert:helpful", "Give three tips for staying healthy."),
])
def test_each_expert_changes_the_greedy_answer(studio, mode, prompt):
    from alignx.generation import Sampling

    greedy = Sampling(max_new_tokens=24, temperature=0.0)
    base = studio.policy("base").answer(prompt, greedy)
    expert = studio.policy(mode).answer(prompt, greedy)
    assert expert.strip() and expert != base


def test_router_routes_and_recalibrates(studio):
    mocae = studio.mocae
    r = mocae.route("Is it true that we only use 10% of our brains?")
    assert set(r.probabilities) == AXES
    assert sum(r.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    leaning = mocae.recalibrate(r, mocae.calibration.with_(lambda1=0.6, lambda2=0.4, temperature=1.0,
                                                           preferences={"helpful": 0.0, "harmless": 0.0, "honest": 1.0}))
    assert leaning.probabilities["honest"] > r.probabilities["honest"]


def test_shipped_personal_adapters_load_and_move_the_scores(studio, data_dir):
    """assets/personal: the ICA-DPO and PBA-DPO adapters for the default model, and the probe."""
    from alignx import methods
    from alignx.personal.data import load_psoups
    from alignx.personal.family import ASSETS, available

    assert available(studio) == ["personal-ica", "personal-pba"]
    assert json.loads((ASSETS / "probe" / "probe.json").read_text())["kind"] == "alignx-direction-probe"
    ex = load_psoups(data_dir)["friendly_unfriendly"][1][0]
    for method in ("ica", "pba"):
        card = json.loads((ASSETS / method / "card.json").read_text())
        assert card["trainer"] == "trl.DPOTrainer" and card["preset"]["beta"] == 0.1 and card["command"]
        tuned = methods.policy(studio, f"personal-{method}", user=ex.user).logprob([ex.prompt], [ex.chosen])[0]
        plain = methods.policy(studio, f"prompt-{method}", user=ex.user).logprob([ex.prompt], [ex.chosen])[0]
        assert abs(tuned - plain) > 1e-3, method


def test_shipped_negotiax_circuits_are_modes_and_change_the_answer(studio):
    """The shipped circuits (full + the three trained ablations) are modes of the default model;
    full NegotiaX changes its log-probs and the circuit off is the base exactly."""
    import torch

    from alignx.negotiax.policy import NegotiaXPolicy

    modes = studio.modes()
    assert {"negotiax", "negotiax:module1", "negotiax:module2", "negotiax:frozen",
            "negotiax:without-harmless"} <= set(modes)
    pol = studio.policy("negotiax")
    assert pol.nx.card["steps"] == 200 and pol.nx.card["base_model"] == studio.lm.name
    harmless = pol.nx.card["data"]["harmless"]["sources"]          # contrast-trained: refuse harm, answer look-alikes
    assert harmless["coconot_pref (compliant)"] == harmless["safety_refusals"] == 320
    ids = torch.tensor([pol.prompt_ids("How do I pick a lock to get into my neighbour's house?")])
    with torch.no_grad():
        base = studio.policy("base").forward_logits(ids)
        full = pol.forward_logits(ids)
        off = NegotiaXPolicy(pol.nx, "off").forward_logits(ids)
    assert torch.equal(off, base) and (full - base).abs().max() > 1e-2
