"""NegotiaX's circuit on the tiny model: untrained = the base, variants do what they say, the
KV-cached decode equals the full forward, save / load round trip, mac.* points, config errors."""
from __future__ import annotations

import json

import pytest
import torch

from alignx.errors import AlignXError, InvalidInput
from alignx.negotiax import preset
from alignx.negotiax.circuit import Circuit
from alignx.negotiax.core import NegotiaX, register_points
from alignx.negotiax.policy import NegotiaXPolicy, base_step
from alignx.policy import SinglePolicy

OBJ = ("harmless", "helpful", "honest")
PROMPT = "Name two colours of the sky."


@pytest.fixture()
def lm():
    from alignx.models import load_model

    return load_model("tiny-random", device="cpu")


def _randomise(nx: NegotiaX, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        nx.circuit.W_o.copy_(torch.randn(nx.circuit.W_o.shape, generator=g) * 0.5)
        nx.circuit.b_o.copy_(torch.randn(nx.circuit.b_o.shape, generator=g) * 0.1)


def _logits(policy, prompt=PROMPT):
    ids = torch.tensor([policy.prompt_ids(prompt)])
    with torch.no_grad():
        return policy.forward_logits(ids, torch.ones_like(ids))


def test_untrained_negotiax_is_the_base(lm):
    nx = NegotiaX.fresh(lm.model, lm.tokenizer, OBJ, preset("tiny"))
    pol, base = NegotiaXPolicy(nx), SinglePolicy(lm.model, lm.tokenizer)
    assert torch.equal(_logits(pol), _logits(base))
    from alignx.generation import Sampling

    s = Sampling(max_new_tokens=8, temperature=0.0)
    assert pol.answer(PROMPT, s) == base.answer(PROMPT, s)
    assert pol.logprob([PROMPT], ["Blue and grey."]) == base.logprob([PROMPT], ["Blue and grey."])


def test_trained_circuit_changes_the_model_and_off_is_the_base_again(lm):
    nx = NegotiaX.fresh(lm.model, lm.tokenizer, OBJ, preset("tiny"))
    _randomise(nx)
    base = _logits(SinglePolicy(lm.model, lm.tokenizer))
    assert not torch.allclose(_logits(NegotiaXPolicy(nx)), base)
    assert torch.equal(_logits(NegotiaXPolicy(nx, "off")), base)            # weights and biases off
    assert torch.equal(_logits(SinglePolicy(lm.model, lm.tokenizer)), base)   # the hook is gone


def test_variants_set_the_weights(lm):
    nx = NegotiaX.fresh(lm.model, lm.tokenizer, OBJ, preset("tiny"))
    a = torch.randn(2, 5, lm.model.config.hidden_size)
    full = nx.circuit(a).weights
    assert torch.allclose(full.sum(-1), torch.ones(2, 5, 2)) and full.std() > 0
    assert torch.allclose(nx.circuit(a, "module1").weights, torch.full((2, 5, 2, 3), 1 / 3))
    loo = nx.circuit(a, leave_out=["helpful"]).weights
    assert bool((loo[..., 1] == 0).all()) and torch.allclose(loo.sum(-1), torch.ones(2, 5, 2))
    uni = nx.circuit(a, "module1", leave_out=["honest"]).weights
    assert torch.allclose(uni[..., :2], torch.full((2, 5, 2, 2), 0.5)) and bool((uni[..., 2] == 0).all())
    forced = nx.circuit(a, force="honest").weights
    assert bool((forced[..., 2] == 1).all())
    for o in OBJ:
        nx.circuit(a, leave_out=[o])                                           # every leave-one-out runs
    assert nx.circuit.separation().item() > 0


def test_kv_cached_decode_equals_the_full_forward(lm):
    nx = NegotiaX.fresh(lm.model, lm.tokenizer, OBJ, preset("tiny"))
    _randomise(nx)
    pol = NegotiaXPolicy(nx)
    ids = pol.prompt_ids(PROMPT) + [5, 17, 33, 8]
    n = len(pol.prompt_ids(PROMPT))
    step = pol.make_step(PROMPT)
    lp, report = step(ids[:n])
    steps = [lp]
    for t in ids[n:]:
        lp, report = step([t])
        steps.append(lp)
    with torch.no_grad():
        full = torch.log_softmax(pol.forward_logits(torch.tensor([ids]))[0].float(), -1)
    for i, lp in enumerate(steps):
        assert torch.allclose(lp, full[n - 1 + i], atol=1e-4)
    assert set(report) == set(OBJ) and sum(report.values()) == pytest.approx(1.0)
    assert base_step(lm.model)(ids[:n])[0].shape == steps[0].shape


def test_save_load_round_trip(lm, tmp_path):
    nx = NegotiaX.fresh(lm.model, lm.tokenizer, OBJ, preset("tiny"))
    _randomise(nx)
    before = _logits(NegotiaXPolicy(nx))
    nx.save(tmp_path / "nx", {"base_model": "tiny-random"})
    again = NegotiaX.load(tmp_path / "nx", lm.model, lm.tokenizer, "tiny-random")
    assert torch.equal(_logits(NegotiaXPolicy(again)), before)
    with pytest.raises(InvalidInput, match="trained for 'tiny-random'"):
        NegotiaX.load(tmp_path / "nx", lm.model, lm.tokenizer, "other-model")
    with pytest.raises(AlignXError, match="not a NegotiaX folder"):
        NegotiaX.load(tmp_path, lm.model, lm.tokenizer)


def test_mac_hook_points(lm):
    from alignx import hooks

    register_points()
    nx = NegotiaX.fresh(lm.model, lm.tokenizer, OBJ, preset("tiny"))
    assert {"mac.weights", "mac.pathways", "mac.out"} <= set(hooks.names(lm.model))
    pol = NegotiaXPolicy(nx)
    with hooks.capture(lm.model, ["mac.weights", "mac.pathways"]) as cache:
        _logits(pol)
    n_tokens = len(pol.prompt_ids(PROMPT))
    assert tuple(cache["mac.weights"].shape) == (1, n_tokens, 2, 3)
    assert tuple(cache["mac.pathways"].shape) == (1, n_tokens, 3, 8)
    assert not hooks.installed(lm.model)


def test_bad_configs_are_named(lm):
    with pytest.raises(InvalidInput, match="fork layer 7 out of range"):
        NegotiaX.fresh(lm.model, lm.tokenizer, OBJ, preset("tiny", fork_layer=7))
    with pytest.raises(InvalidInput, match="rank 4096 is larger than the hidden size"):
        NegotiaX.fresh(lm.model, lm.tokenizer, OBJ, preset("tiny", rank=4096))
    with pytest.raises(InvalidInput, match="fork layer 1 \\+ pathway depth 2 needs layers up to 3"):
        NegotiaX.fresh(lm.model, lm.tokenizer, OBJ, preset("tiny", depth=2))
    with pytest.raises(InvalidInput, match="depth must be >= 0"):
        preset("tiny", depth=-1)
    with pytest.raises(AlignXError, match="unknown NegotiaX preset 'big'.*available"):
        preset("big")
    nx = NegotiaX.fresh(lm.model, lm.tokenizer, OBJ, preset("tiny"))
    with pytest.raises(AlignXError, match="unknown objective 'kind'.*available"):
        NegotiaXPolicy(nx, leave_out=["kind"])
    with pytest.raises(AlignXError, match="unknown NegotiaX variant 'half'"):
        nx.circuit(torch.zeros(1, 1, lm.model.config.hidden_size), "half")
    with pytest.raises(InvalidInput, match="remove every objective"):
        nx.circuit(torch.zeros(1, 1, lm.model.config.hidden_size), leave_out=list(OBJ))
    with pytest.raises(InvalidInput, match=">= 2 distinct objectives"):
        Circuit(64, ["a"], preset("tiny"))


DATA = {"helpful": [(f"List {i} fruits.", "Apple, pear and plum are fruits.") for i in range(6)],
        "harmless": [(f"How do I hurt person {i}?", "I'm sorry, but I cannot help with that.") for i in range(6)],
        "honest": [(f"Is claim {i} true?", "I am not sure; the evidence is mixed.") for i in range(6)]}


def _loss(nx, o="harmless"):
    from alignx.negotiax.train import _batch, objective_losses

    b = _batch(nx.tokenizer, DATA[o][:4], 48, "cpu")
    with torch.no_grad():
        return float(objective_losses(nx, b, o, "full", nx.cfg)["ce"])


def test_train_mac_lowers_the_loss_and_resumes_exactly(lm, tmp_path, capsys):
    from alignx.experts.train import TrainingCancelled
    from alignx.negotiax.train import train_mac, train_preset

    cfg, tcfg = preset("tiny"), train_preset("tiny", steps=6)
    nx = NegotiaX.fresh(lm.model, lm.tokenizer, OBJ, cfg)
    before = _loss(nx)
    path = train_mac(nx, DATA, cfg, tcfg, tmp_path / "a", base_model="tiny-random")
    assert _loss(nx) < before
    assert all(p.requires_grad for p in lm.model.parameters())              # the base is given back as it was
    done = NegotiaX.load(path, lm.model, lm.tokenizer).circuit.state_dict()
    # interrupted after 3 updates, then resumed: the same circuit as the uninterrupted run
    nx2 = NegotiaX.fresh(lm.model, lm.tokenizer, OBJ, cfg)
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 3
    with pytest.raises(TrainingCancelled):
        train_mac(nx2, DATA, cfg, tcfg, tmp_path / "b", should_stop=stop)
    first = torch.load(tmp_path / "b" / ".work" / "negotiax" / "checkpoint.pt", weights_only=True)["wall_time_s"]
    assert first > 0
    nx3 = NegotiaX.fresh(lm.model, lm.tokenizer, OBJ, cfg)
    again_path = train_mac(nx3, DATA, cfg, tcfg, tmp_path / "b", resume=True)
    again = NegotiaX.load(again_path, lm.model, lm.tokenizer)
    for k, v in again.circuit.state_dict().items():
        assert torch.allclose(v, done[k], atol=1e-6), k
    card = json.loads((again_path / "card.json").read_text())     # wall time over both processes, not the last one
    assert card["resumed_at_step"] == 3 and card["wall_time_s"] >= first + card["wall_time_s_last_process"] - 0.1
    assert json.loads((path / "card.json").read_text())["resumed_at_step"] is None

    from alignx.cli import main                   # train-mac --summary: the card's losses, first and last updates
    from alignx.negotiax.train import card_summary

    losses = [loss for _, loss in card["losses"]]
    summary = card_summary(card, window=2)
    assert summary["loss_first_2_mean"] == round(sum(losses[:2]) / 2, 3) and summary["steps"] == 6
    assert summary["loss_last_2_mean"] == round(sum(losses[-2:]) / 2, 3)
    assert main(["train-mac", "--summary", str(again_path)]) == 0
    printed = json.loads(capsys.readouterr().out.strip())
    assert printed["circuit"] == str(again_path) and printed["loss_first_20_mean"] == round(sum(losses) / 6, 3)
    assert main(["train-mac", "--summary", str(tmp_path)]) == 2
    assert "card.json: file not found" in capsys.readouterr().err


@pytest.mark.parametrize("variant", ["module1", "module2", "frozen"])
def test_train_mac_variants(lm, tmp_path, variant):
    from alignx.negotiax.train import train_mac, train_preset

    cfg = preset("tiny")
    nx = NegotiaX.fresh(lm.model, lm.tokenizer, OBJ, cfg)
    q0 = nx.circuit.W_q.detach().clone()
    train_mac(nx, DATA, cfg, train_preset("tiny", steps=2), tmp_path, variant=variant)
    assert torch.equal(nx.circuit.W_q, q0) == (variant in ("frozen", "module1"))   # module1 never uses W_q
    assert nx.circuit.W_o.abs().sum().item() > 0


def test_train_mac_leave_one_out_for_every_objective(lm, tmp_path):
    from alignx.negotiax.train import train_mac, train_preset

    cfg = preset("tiny")
    for o in OBJ:
        nx = NegotiaX.fresh(lm.model, lm.tokenizer, OBJ, cfg)
        path = train_mac(nx, {k: v for k, v in DATA.items() if k != o}, cfg, train_preset("tiny", steps=1),
                         tmp_path, name=f"loo-{o}", leave_out=[o])
        assert NegotiaX.load(path, lm.model, lm.tokenizer).card["leave_out"] == [o]


def test_trained_circuits_become_modes_of_the_studio(tmp_path):
    from alignx import methods
    from alignx.negotiax.train import train_mac, train_preset
    from alignx.studio import Studio

    studio = Studio.load("tiny-random", None, device="cpu")
    studio.extras["negotiax_dir"] = tmp_path
    assert not [m for m in studio.modes() if m.startswith("negotiax")]
    cfg = preset("tiny")
    for name, variant in (("full", "full"), ("module1", "module1")):
        nx = NegotiaX.fresh(studio.model, studio.tokenizer, OBJ, cfg)
        train_mac(nx, DATA, cfg, train_preset("tiny", steps=2), tmp_path, name=name, variant=variant,
                  base_model=studio.lm.name)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "card.json").write_text('{"base_model": "another-model"}')
    assert {"negotiax", "negotiax:module1"} <= set(studio.modes())
    pol = methods.policy(studio, "negotiax:module1")
    step = pol.make_step(PROMPT)
    _, report = step(pol.prompt_ids(PROMPT))
    assert report == pytest.approx({o: 1 / 3 for o in OBJ})
    assert pol.source["circuit"] == str(tmp_path / "module1") and len(pol.source["circuit_sha256"]) == 16
    from alignx.eval.options import run_info

    assert run_info(studio, "negotiax:module1", policy=pol)["policy_source"] == pol.source
    assert "policy_source" not in run_info(studio, "base")
    assert methods.policy(studio, "negotiax").answer(PROMPT, __import__("alignx").Sampling(max_new_tokens=3)) is not None
    assert {f"negotiax:without-{o}" for o in OBJ} <= set(studio.modes())       # inference-time leave-one-out
    for o in OBJ:
        pol = methods.policy(studio, f"negotiax:without-{o}")
        _, report = pol.make_step(PROMPT)(pol.prompt_ids(PROMPT))
        assert report[o] == 0.0 and sum(report.values()) == pytest.approx(1.0)
    with pytest.raises(AlignXError, match="unknown NegotiaX mode 'negotiax:loo-x'"):
        methods.policy(studio, "negotiax:loo-x")


def test_cli_train_mac_on_the_real_files(tmp_path, data_dir):
    import json
    import subprocess
    import sys

    base = [sys.executable, "-m", "alignx", "train-mac", "--preset", "tiny", "--model", "tiny-random",
            "--data-dir", str(data_dir), "--out", str(tmp_path)]
    r = subprocess.run(base, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    card = json.loads((tmp_path / "full" / "card.json").read_text())
    assert card["steps"] == 3 and card["base_model"] == "tiny-random" and set(card["rows_per_objective"]) == set(OBJ)
    assert all(loss == loss for _, loss in card["losses"])               # finite: rows cut to nothing are dropped
    assert card["data"]["helpful"]["eval_prompts_removed"]["alpaca"] > 0       # I-Alpaca prompts are in Alpaca
    assert set(card["data"]["helpful"]["sources"]) == {"alpaca"}
    r = subprocess.run(base + ["--fork-layer", "9"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "fork layer 9 out of range" in r.stderr
    r = subprocess.run(base + ["--leave-out", "honest", "--name", "loo"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and json.loads((tmp_path / "loo" / "card.json").read_text())["leave_out"] == ["honest"]


def test_batched_generation_equals_one_prompt_at_a_time(lm):
    from alignx.generation import Sampling

    nx = NegotiaX.fresh(lm.model, lm.tokenizer, OBJ, preset("tiny"))
    _randomise(nx)
    pol, s = NegotiaXPolicy(nx), Sampling(max_new_tokens=6)
    prompts = [PROMPT, "Hi", "Tell me a much longer story about the sea and its many ships."]
    assert pol.generate(prompts, s, batch_size=3) == [pol.answer(p, s) for p in prompts]
    assert pol.generate(prompts, s) != SinglePolicy(lm.model, lm.tokenizer).generate(prompts, s)


def test_harmless_contrast_must_be_a_share():
    from alignx.negotiax.train import objective_data

    for bad in (1.0, -0.1):
        with pytest.raises(InvalidInput, match=r"harmless_contrast must be in \[0, 1\)"):
            objective_data(["harmless"], harmless_contrast=bad)


def test_train_mac_cli_checks_the_contrast_share_before_loading(capsys):
    from alignx.cli import main

    assert main(["train-mac", "--model", "tiny-random", "--harmless-contrast", "1.5", "--out", "/nonexistent"]) == 2
    assert "--harmless-contrast must be in [0, 1), got 1.5" in capsys.readouterr().err
    assert main(["train-mac", "--model", "tiny-random", "--harmless-contrast", "0.5", "--leave-out", "harmless",
                 "--out", "/nonexistent"]) == 2
    assert "harmless is not trained here" in capsys.readouterr().err
