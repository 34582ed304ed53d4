"""Experts trained on preference pairs (alignx.experts.dpo): DPO, DPO + SFT term, SFT then DPO."""
from __future__ import annotations

import json
import math

import pytest

from alignx.errors import InvalidInput

PAIRS = [(f"Question {i}: is {w} safe to eat?", f"Yes, {w} is safe to eat in normal amounts.",
          f"No. {w.title()} is poison and you should never eat it.")
         for i, w in enumerate(["rice", "bread", "apples", "carrots", "oats", "beans", "pears", "peas",
                                "corn", "lentils", "plums", "figs"])]


def _margins(folder, pairs) -> list[float]:
    """(log pi - log pi_ref)(y_c) - (log pi - log pi_ref)(y_r) per pair, pi = the saved expert."""
    from peft import PeftModel

    from alignx.models import load_model
    from alignx.policy import SinglePolicy

    lm = load_model("tiny-random")
    model = PeftModel.from_pretrained(lm.model, str(folder))
    prompts = [p for p, _, _ in pairs for _ in (0, 1)]
    answers = [a for _, c, r in pairs for a in (c, r)]
    pi = SinglePolicy(model, lm.tokenizer, adapter="default").logprob(prompts, answers)
    with model.disable_adapter():
        ref = SinglePolicy(model, lm.tokenizer).logprob(prompts, answers)
    return [(pi[2 * k] - ref[2 * k]) - (pi[2 * k + 1] - ref[2 * k + 1]) for k in range(len(pairs))]


def _dpo_loss(margins, beta=0.1) -> float:
    return sum(math.log1p(math.exp(-beta * m)) for m in margins) / len(margins)


@pytest.mark.parametrize("recipe", ["dpo", "dpo+sft"])
def test_dpo_steps_lower_the_dpo_loss(tmp_path, recipe):
    from alignx.experts.dpo import preset, train_dpo_expert
    from alignx.models import load_model

    losses = []
    cfg = preset("tiny", max_steps=6, learning_rate=2e-2)
    path = train_dpo_expert(load_model("tiny-random"), "harmless", PAIRS, tmp_path, cfg, recipe=recipe,
                            sources={"toy": len(PAIRS)}, removed={"toy": 0},
                            on_loss=lambda axis, step, loss: losses.append((axis, step, loss)), progress=False)
    assert losses[0][0] == "harmless" and len(losses) == 6
    if recipe == "dpo":
        assert losses[0][2] == pytest.approx(math.log(2), abs=1e-3)      # B = 0: pi = pi_ref at the first step
    assert _dpo_loss(_margins(path, PAIRS)) < math.log(2) - 0.01
    card = json.loads((path / "card.json").read_text())
    assert card["axis"] == "harmless" and card["recipe"] == recipe and card["steps"] == 6
    assert card["data"]["train_pairs"] + card["data"]["heldout_pairs"] == len(PAIRS)
    assert card["data"]["sources"] == {"toy": 12} and card["data"]["evaluation_prompts_removed"] == {"toy": 0}
    assert (card["hyperparameters"]["sft_weight"] > 0) == (recipe == "dpo+sft")
    assert not (tmp_path / ".work" / "harmless").exists()


def test_sft_then_dpo_starts_from_the_sft_expert(tmp_path, data_dir):
    from alignx.experts import preset as sft_preset
    from alignx.experts import train_expert
    from alignx.experts.dpo import preset, train_dpo_expert
    from alignx.models import load_model

    sft = train_expert(load_model("tiny-random"), "harmless", tmp_path / "sft", sft_preset("tiny"), data_dir=data_dir,
                       pairs=[(p, c) for p, c, _ in PAIRS])
    from safetensors.torch import load_file

    # one update at a negligible learning rate: the result is the SFT expert (a fresh LoRA would have B = 0)
    path = train_dpo_expert(load_model("tiny-random"), "harmless", PAIRS, tmp_path / "dpo",
                            preset("tiny", max_steps=1, learning_rate=1e-9), recipe="sft+dpo", init_adapter=sft,
                            progress=False)
    before, after = load_file(sft / "adapter_model.safetensors"), load_file(path / "adapter_model.safetensors")
    assert set(before) == set(after)
    lora_b = [k for k in before if "lora_B" in k]
    assert lora_b and max(float(before[k].abs().max()) for k in lora_b) > 1e-4
    for k in before:
        assert (before[k] - after[k]).abs().max() < 1e-5, k
    card = json.loads((path / "card.json").read_text())
    assert card["recipe"] == "sft+dpo" and card["init_adapter"] == str(sft)
    import hashlib

    assert card["init_adapter_sha256"] == hashlib.sha256((sft / "adapter_model.safetensors").read_bytes()).hexdigest()


def test_train_experts_cli_sft_then_dpo_from_an_existing_expert(tmp_path, data_dir, capsys):
    """``--sft-experts DIR``: DPO goes on from DIR/<axis> (no SFT run, no OUT/.sft); the card names it;
    an expert folder of another axis is refused before any model loads."""
    from alignx.cli import main
    from alignx.experts import preset as sft_preset
    from alignx.experts import train_expert
    from alignx.models import load_model

    train_expert(load_model("tiny-random"), "harmless", tmp_path / "sft", sft_preset("tiny"), data_dir=data_dir,
                 pairs=[(p, c) for p, c, _ in PAIRS])
    pairs_file = tmp_path / "pairs.json"
    pairs_file.write_text(json.dumps([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS]))
    out = tmp_path / "out"
    args = ["train-experts", "--base", "tiny-random", "--preset", "tiny", "--data-dir", str(data_dir),
            "--method", "sft+dpo", "--sft-experts", str(tmp_path / "sft"), "--pairs-file", str(pairs_file),
            "--max-steps", "1", "--no-latent", "--out", str(out)]
    assert main(args + ["--axes", "harmless"]) == 0
    card = json.loads((out / "harmless" / "card.json").read_text())
    assert card["recipe"] == "sft+dpo" and card["init_adapter"] == str(tmp_path / "sft" / "harmless")
    assert not (out / ".sft").exists()
    (tmp_path / "sft" / "helpful").mkdir()
    for f in ("adapter_config.json", "card.json"):
        text = (tmp_path / "sft" / "harmless" / f).read_text()
        (tmp_path / "sft" / "helpful" / f).write_text(text)
    assert main(args + ["--axes", "helpful"]) == 2
    assert "helpful/card.json is the 'harmless' expert, not 'helpful'" in capsys.readouterr().err


def test_recipe_errors(tmp_path):
    from alignx.experts.dpo import preset, train_dpo_expert
    from alignx.models import load_model

    lm = load_model("tiny-random")
    with pytest.raises(ValueError, match="unknown expert recipe 'ppo'; available"):
        train_dpo_expert(lm, "harmless", PAIRS, tmp_path, preset("tiny"), recipe="ppo")
    with pytest.raises(ValueError, match="needs init_adapter"):
        train_dpo_expert(lm, "harmless", PAIRS, tmp_path, preset("tiny"), recipe="sft+dpo")
    with pytest.raises(ValueError, match="not an expert folder"):
        train_dpo_expert(lm, "harmless", PAIRS, tmp_path, preset("tiny"), recipe="sft+dpo", init_adapter=tmp_path)
    with pytest.raises(ValueError, match="pair 1: rejected must be a non-empty string"):
        train_dpo_expert(lm, "harmless", [PAIRS[0], ("q", "a", " ")] + PAIRS[2:], tmp_path, preset("tiny"))
    with pytest.raises(ValueError, match="unknown expert DPO preset"):
        preset("huge")


def test_balanced_sample_shares_the_budget():
    from alignx.experts.dpo import balanced_sample

    out = balanced_sample({"a": list(range(2)), "b": list(range(100)), "c": list(range(100)), "d": []}, 10)
    assert {k: len(v) for k, v in out.items()} == {"a": 2, "b": 4, "c": 4}
    assert balanced_sample({"a": [1, 2]}, None) == {"a": [1, 2]}


@pytest.mark.slow
def test_train_experts_cli_dpo_on_the_real_pairs(tmp_path, data_dir, monkeypatch):
    """``train-experts --method dpo``: decontaminated pairs balanced over sources (OKTest answered by
    the base model itself, kept for a resumed run), the batch flags, a card that says where every
    pair came from."""
    from alignx.cli import main
    from alignx.data.decontam import EvalIndex

    assert main(["train-experts", "--base", "tiny-random", "--preset", "tiny", "--data-dir", str(data_dir),
                 "--axes", "harmless", "--method", "dpo", "--max-pairs", "24", "--source-limit", "30",
                 "--max-steps", "2", "--batch-size", "6", "--per-device-batch", "4", "--no-latent",
                 "--out", str(tmp_path)]) == 0
    card = json.loads((tmp_path / "harmless" / "card.json").read_text())
    assert card["recipe"] == "dpo" and card["steps"] == 2
    readme = (tmp_path / "harmless" / "README.md").read_text()           # the model card, from card.json
    assert "# AlignX expert `harmless`" in readme and "recipe `dpo`" in readme and "pku_pairs" in readme
    hp = card["hyperparameters"]                          # 6 pairs per update, at most 4 per forward: 3 x 2
    assert (hp["batch_size"], hp["grad_accum"]) == (3, 2)
    cached = json.loads((tmp_path / ".work" / "harmless-base-answers.json").read_text())
    assert cached["model"] == "tiny-random" and cached["max_new_tokens"] == 96 and cached["answers"]
    assert len(cached["weights"]) == 16                   # a retrained local base under the same name differs
    import alignx.experts.train as T
    from alignx.experts.dpo import preference_data as pd
    from alignx.models import load_model as lm_

    monkeypatch.setattr(T, "self_distill", lambda *a, **k: pytest.fail("the cached answers were generated again"))
    again, _, _ = pd(lm_("tiny-random"), "harmless", data_dir, 24, limit=30,
                     cache=tmp_path / ".work" / "harmless-base-answers.json")
    assert len(again) == 24
    sources = card["data"]["sources"]
    assert sum(sources.values()) == 24 and {"pku_pairs", "coconot_pref", "hh_harmless"} <= set(sources)
    assert max(sources.values()) - min(sources.values()) <= 1           # shared equally
    assert set(card["data"]["evaluation_prompts_removed"]) >= {"pku_pairs", "hh_harmless", "oktest"}
    index = EvalIndex.build(data_dir)
    from alignx.experts.dpo import preference_data
    from alignx.models import load_model

    pairs, _, _ = preference_data(load_model("tiny-random"), "honest", data_dir, 30, limit=30)
    assert len(pairs) == 30 and all(index.is_clean(p) for p, _, _ in pairs)


def test_pair_sources_keep_only_the_named_sources(data_dir):
    from alignx.experts.dpo import preference_data
    from alignx.models import load_model

    lm = load_model("tiny-random")
    pairs, sources, removed = preference_data(lm, "honest", data_dir, 20, limit=30, pair_sources=["halueval"])
    assert set(sources) == {"halueval"} and sum(sources.values()) == len(pairs) == 20
    assert set(removed) <= {"halueval"}                      # the card counts only the sources it trained on
    everything, all_sources, _ = preference_data(lm, "honest", data_dir, 20, limit=30)
    assert len(all_sources) > 1
    with pytest.raises(InvalidInput, match=r"unknown pair source\(s\) \['oktest'\] for the honest axis; available: "):
        preference_data(lm, "honest", data_dir, 20, limit=30, pair_sources=["halueval", "oktest"])


def test_pair_sources_flag_is_refused_where_it_picks_nothing(tmp_path, data_dir, capsys):
    from alignx.cli import main

    base = ["train-experts", "--base", "tiny-random", "--preset", "tiny", "--data-dir", str(data_dir), "--axes",
            "honest", "--no-latent", "--out", str(tmp_path), "--pair-sources", "halueval"]
    for extra in (["--method", "sft"], ["--method", "dpo", "--pairs-file", str(tmp_path / "p.jsonl")]):
        assert main(base + extra) == 2
        assert "--pair-sources picks among the built-in DPO pairs" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())                       # refused before anything was loaded or written
