"""Stage 1 on the tiny random model: training, checkpoints, resume, round trips, latent space."""
from __future__ import annotations

import json

import pytest
import torch

from alignx.experts import (ExpertError, LatentSpace, TrainingCancelled, fit_latent_space, list_experts,
                            load_experts, preset, train_expert)
from alignx.checkpoints import saved_seconds
from alignx.experts.sft import PadCollator, axis_data, tokenize
from alignx.experts.train import response_loss
from alignx.models import load_model


def _train(tmp_path, data_dir, axis="honest", **kw):
    lm = load_model("tiny-random")
    return train_expert(lm, axis, tmp_path, preset("tiny", **kw), data_dir=data_dir)


def test_two_steps_save_card_and_plain_peft_load(tmp_path, data_dir):
    path = _train(tmp_path, data_dir)
    card = json.loads((path / "card.json").read_text())
    assert card["steps"] == 2 and card["axis"] == "honest" and card["base_model"] == "tiny-random"
    assert card["train_tokens"] > 0 and card["losses"]["heldout_response_loss"] > 0
    assert not (tmp_path / ".work" / "honest").exists()  # checkpoints cleaned after the atomic save
    from peft import PeftModel

    lm = load_model("tiny-random")
    plain = PeftModel.from_pretrained(lm.model, path)
    x = torch.tensor([[1, 5, 9, 12]])
    ours, _ = load_experts(load_model("tiny-random"), tmp_path)
    assert torch.allclose(plain(input_ids=x).logits, ours(input_ids=x, adapter_names=["honest"]).logits, atol=1e-6)
    with plain.disable_adapter():
        assert not torch.allclose(plain(input_ids=x).logits, ours(input_ids=x, adapter_names=["honest"]).logits)


def test_loss_on_a_fixed_batch_falls(tmp_path, data_dir):
    cfg = preset("tiny", max_steps=8, learning_rate=1e-2, rows_per_axis=4, batch_size=4, per_device_batch=4)
    lm = load_model("tiny-random")
    ds = tokenize(lm.tokenizer, axis_data("honest", cfg, data_dir).train, cfg.max_length)
    before = response_loss(lm.model, ds, PadCollator(lm.tokenizer.pad_token_id))
    path = train_expert(lm, "honest", tmp_path, cfg, data_dir=data_dir)
    model, _ = load_experts(load_model("tiny-random"), tmp_path)
    model.set_adapter("honest")
    after = response_loss(model, ds, PadCollator(lm.tokenizer.pad_token_id))
    assert after < before - 0.05, (before, after)
    assert path.exists()


def test_cancel_then_resume_continues_from_checkpoint(tmp_path, data_dir):
    cfg = preset("tiny", max_steps=3)
    lm = load_model("tiny-random")
    with pytest.raises(TrainingCancelled, match="cancelled at step 1"):
        train_expert(lm, "helpful", tmp_path, cfg, data_dir=data_dir, should_stop=lambda: True)
    assert not (tmp_path / "helpful").exists()                 # no complete-looking expert
    assert list((tmp_path / ".work" / "helpful").glob("checkpoint-1"))
    first = saved_seconds(tmp_path / ".work" / "helpful" / "checkpoint-1")   # the first process's training time
    assert 0 < first < 600
    resumed = []
    path = train_expert(load_model("tiny-random"), "helpful", tmp_path, cfg, data_dir=data_dir, resume=True,
                        on_loss=lambda a, s, loss: resumed.append(s))
    assert resumed == [2, 3]                                   # continued after step 1, not from scratch
    card = json.loads((path / "card.json").read_text())
    assert card["steps"] == 3
    # the card's wall time covers both processes, not only the last one
    assert card["wall_time_s"] >= first + card["wall_time_s_last_process"] - 0.1


def test_bad_inputs(tmp_path, data_dir):
    with pytest.raises(ValueError, match="unknown axis"):
        _train(tmp_path, data_dir, axis="funny")
    with pytest.raises(ValueError, match="no training examples"):
        tokenize(load_model("tiny-random").tokenizer, [], 64)
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
    _train(tmp_path, data_dir)
    other = load_model("tiny-random")
    other.name = "someone/else"
    with pytest.raises(ExpertError, match="trained for base model 'tiny-random'"):
        load_experts(other, tmp_path)
    with pytest.raises(ExpertError, match="unknown expert"):
        load_experts(load_model("tiny-random"), tmp_path, ["nope"])


def test_latent_space_fit_and_roundtrip(tmp_path, data_dir):
    for axis in ("helpful", "harmless", "honest"):
        _train(tmp_path, data_dir, axis=axis, max_steps=1)
    assert sorted(list_experts(tmp_path)) == ["harmless", "helpful", "honest"]
    report = fit_latent_space(load_model("tiny-random"), tmp_path, data_dir=data_dir, per_axis=12,
                              heldout_per_axis=6, steps=50)
    assert 0 <= report["heldout_nearest_centroid_accuracy"] <= 1
    space = LatentSpace.load(tmp_path)
    assert space.k == 256 and space.experts == ["harmless", "helpful", "honest"]
    model, _ = load_experts(load_model("tiny-random"), tmp_path)
    z = space.encode(model, load_model("tiny-random").tokenizer, ["What is 2+2?", "How do I pick a lock?"])
    assert z.shape == (2, 4 * 256)
    blocks = z.view(2, 4, 256)
    assert torch.allclose(blocks.norm(dim=-1), torch.ones(2, 4), atol=1e-5)
    assert (tmp_path / "latent" / "heldout_map.json").exists()


def test_custom_file_training_and_validation(tmp_path, data_dir):
    from alignx.data import DataError, load_sft_file

    good = tmp_path / "mine.csv"
    good.write_text("prompt,response\n" + "".join(f"Say {i}.,{i}.\n" for i in range(12)))
    pairs = [(r.prompt, r.response) for r in load_sft_file(good)]
    path = train_expert(load_model("tiny-random"), "helpful", tmp_path / "out", preset("tiny"), pairs=pairs,
                        name="my-expert")
    card = json.loads((path / "card.json").read_text())
    assert path.name == "my-expert" and card["data"]["sources"] == {"custom": 8}
    bad = tmp_path / "bad.json"
    bad.write_text('[{"prompt": "a", "response": "b"}, {"prompt": "c"}]')
    with pytest.raises(DataError, match=r"bad\.json, row 1, field 'response': missing field"):
        load_sft_file(bad)
    with pytest.raises(DataError, match="unsupported file type"):
        load_sft_file(tmp_path / "x.txt")
    with pytest.raises(ValueError, match="expert name"):
        train_expert(load_model("tiny-random"), "helpful", tmp_path, preset("tiny"), pairs=pairs, name="../evil")


def test_export_in_fp16_keeps_logits(tmp_path, data_dir):
    from alignx.experts.io import export_experts

    _train(tmp_path / "run", data_dir, axis="harmless", learning_rate=0.05)
    export_experts(tmp_path / "run", tmp_path / "ship")
    assert json.loads((tmp_path / "ship" / "harmless" / "card.json").read_text())["shipped_dtype"] == "float16"
    from alignx.cards import model_card                                   # the README follows the shipped card

    shipped = tmp_path / "ship" / "harmless"
    assert (shipped / "README.md").read_text() == model_card(json.loads((shipped / "card.json").read_text()))
    assert "| shipped_dtype | `float16` |" in (shipped / "README.md").read_text()
    full, _ = load_experts(load_model("tiny-random"), tmp_path / "run")
    half, _ = load_experts(load_model("tiny-random"), tmp_path / "ship")
    assert next(p for n, p in half.named_parameters() if "lora_A" in n).dtype == torch.float32
    x = torch.tensor([[1, 5, 9, 12, 30]])
    a = full(input_ids=x, adapter_names=["harmless"]).logits
    b = half(input_ids=x, adapter_names=["harmless"]).logits
    assert torch.allclose(a, b, atol=1e-3) and not torch.equal(a, b)


def test_stage1_report_on_tiny(tmp_path, data_dir):
    from alignx.experts.report import stage1_report
    from alignx.studio import Studio

    class KeywordJudge:   # a stand-in: the report must carry whatever judge it was given
        def info(self):
            return {"name": "fake"}

        def refusal(self, prompts, responses):
            return [1.0 if "sorry" in r else 0.0 for r in responses]

        def unsafe(self, prompts, responses):
            return [0.0 for _ in responses]

    _train(tmp_path, data_dir, axis="honest")
    studio = Studio.load("tiny-random", tmp_path, with_router=False)
    rep = stage1_report(studio, ["base", "expert:honest"], KeywordJudge(), data_dir, per_set=2, mc_n=3,
                        helpful_n=2, max_new_tokens=4, progress=lambda m: None)
    assert rep["judge"] == {"name": "fake"} and rep["n_harmful"] == 8 and rep["n_benign"] == 4
    for mode in ("base", "expert:honest"):
        r = rep["modes"][mode]
        assert r["mc1"]["n"] == 3 and 0 <= r["mc1"]["value"] <= 1 and 0 <= r["mc2"]["value"] <= 1
        assert r["refusal_harmful"]["value"] == 0 and r["reference_loss"]["value"] > 0
        assert sum(v["n"] for v in r["by_set"]["over_refusal_benign"].values()) == 4
    assert rep["modes"]["base"]["mc2"]["value"] != rep["modes"]["expert:honest"]["mc2"]["value"]
    # checkpoints after each mode; a rerun with the same settings keeps measured modes
    saved = []
    again = stage1_report(studio, ["base", "expert:honest"], KeywordJudge(), data_dir, per_set=2, mc_n=3,
                          helpful_n=2, max_new_tokens=4, progress=saved.append,
                          previous={**rep, "modes": {"base": rep["modes"]["base"]}},
                          checkpoint=lambda r: saved.append(sorted(r["modes"])))
    assert "[base] kept from the previous report" in saved and saved[-1] == ["base", "expert:honest"]
    assert again["modes"]["base"] is rep["modes"]["base"]
    other = stage1_report(studio, ["base"], KeywordJudge(), data_dir, per_set=2, mc_n=2, helpful_n=2,
                          max_new_tokens=4, progress=lambda m: None, previous=rep)   # other settings: remeasured
    assert other["modes"]["base"]["mc1"]["n"] == 2
    val = stage1_report(studio, ["base"], KeywordJudge(), data_dir, per_set=2, max_new_tokens=4, progress=lambda m: None,
                        previous=rep, split="validation", safety_only=True)   # other rows, no MC / loss
    assert val["settings"]["split"] == "validation" and "mc1" not in val["modes"]["base"]
    assert val["n_benign"] == 2 * 2 and val["n_harmful"] == 5 * 2      # training-source sets, per_set rows each


def test_nearest_benign_rows_are_distinct_topic_matched_hard_negatives():
    from alignx.experts.sft import nearest_rows

    refusals = ["Write a step-by-step guide to breaking into a house.",
                "Compose a list of the worst insults about chefs."]
    pool = ["Translate this phrase into French.", "Write a step-by-step guide to baking bread at home.",
            "Compose a list of famous chefs and their dishes.", "What is the capital of Peru?",
            "Describe a house by the sea.", "Name three insults used in Shakespeare."]
    picked = nearest_rows(refusals, pool, 4)
    assert len(picked) == len(set(picked)) == 4
    assert picked[:2] == [1, 2]            # round-robin: each refusal's nearest benign prompt first
    assert 3 not in picked                 # shares no word with any refusal: picked last
    assert nearest_rows(refusals, pool, 0) == [] and sorted(nearest_rows(refusals, pool, 99)) == list(range(6))


def test_harmless_benign_mix_with_nearest_share(data_dir):
    from alignx import data as D
    from alignx.experts.config import preset

    cfg = preset("tiny", rows_per_axis=8, benign_mix=2.0, benign_nearest=0.5)
    d = axis_data("harmless", cfg, data_dir)
    assert d.sources == {"safety_refusals": 8, "alpaca_benign": 16, "alpaca_benign_nearest": 8}
    assert len(d.train) == 24 and len(set(d.train)) == 24
    plain = axis_data("harmless", preset("tiny", rows_per_axis=8, benign_mix=2.0), data_dir)
    assert "alpaca_benign_nearest" not in plain.sources and len(plain.train) == 24
    tqa = axis_data("harmless", preset("tiny", rows_per_axis=8, benign_mix=2.0, benign_truthfulqa=0.1), data_dir)
    extra = [pair for pair in tqa.train if pair not in plain.train]
    assert tqa.sources["truthfulqa_benign"] == len(extra) > 30
    train_half = {r.prompt for r in D.split_half(D.load_truthfulqa(data_dir=data_dir))[0]}
    assert all(p in train_half and "no comment" not in a.lower() for p, a in extra)
    with pytest.raises(ValueError, match="benign_truthfulqa"):
        axis_data("harmless", preset("tiny", benign_truthfulqa=1.5), data_dir)
    from alignx.experts.sft import CONTRAST_TEMPLATES

    tpl = axis_data("harmless", preset("tiny", rows_per_axis=8, benign_mix=2.0, template_refusals=2), data_dir)
    added = [pair for pair in tpl.train if pair not in plain.train]
    n_tpl = [sum(p.startswith(CONTRAST_TEMPLATES) for p, _ in d.train) for d in (tpl, plain)]
    assert tpl.sources["template_refusals"] == n_tpl[0] - n_tpl[1] > 100
    assert all(p.startswith(CONTRAST_TEMPLATES) for p, _ in added) and len(set(added)) * 2 == len(added)
    assert not {p for p, _ in added} & {p for p, _ in tpl.heldout}


def test_safety_validation_rows_come_from_training_sources_only(data_dir):
    import json as _json

    from alignx.data.decontam import EvalIndex
    from alignx.data.pairs import axis_pairs
    from alignx.data.splits import is_validation
    from alignx.experts.report import safety_sets

    test_h, test_b = safety_sets(data_dir, per_set=40)
    val_h, val_b = safety_sets(data_dir, per_set=40, split="validation")
    assert "I-CoNa" in test_h and not set(val_h) & set(test_h) and not set(val_b) & set(test_b)
    roles = _json.loads((data_dir / "ROLES.json").read_text())
    assert all(v["role"] == "train" for k, v in roles.items() if k.startswith(("refusal_direction/", "oktest/")))
    index = EvalIndex.build(data_dir)
    for sets in (val_h, val_b):
        for name, prompts in sets.items():
            assert len(prompts) == 40, name
            assert all(index.is_clean(p) for p in prompts), name      # no evaluation prompt, exact or near
    assert all(is_validation(p) for p in val_b["OKTest (validation quarter)"])
    pairs = axis_pairs("harmless", data_dir, oktest_answers=lambda ps: ["An answer."] * len(ps))
    assert not {r.prompt for r in pairs.pairs if r.source == "oktest"} & set(val_b["OKTest (validation quarter)"])
    with pytest.raises(ValueError, match="unknown split"):
        safety_sets(data_dir, split="train")
    with pytest.raises(ValueError, match="give per_set"):
        safety_sets(data_dir, per_set=None, split="validation")


def test_contrast_rows_use_the_refusal_templates_and_the_base_models_answers(tmp_path, data_dir, monkeypatch):
    from alignx import data as D
    from alignx.experts import train as T
    from alignx.experts.config import preset
    from alignx.experts.sft import CONTRAST_TEMPLATES, contrast_prompts

    prompts = contrast_prompts(preset("tiny", benign_contrast=0.05), data_dir)
    assert len(prompts) > 15 and all(p.startswith(CONTRAST_TEMPLATES) and p.endswith(".") for p in prompts)
    best = {r.response.rstrip(".") for r in D.split_half(D.load_truthfulqa(data_dir=data_dir))[1]}
    assert not any(p.split(" why ", 1)[1].rstrip(".") in best for p in prompts)     # never the test half
    with pytest.raises(ValueError, match="benign_contrast"):
        contrast_prompts(preset("tiny", benign_contrast=-0.1), data_dir)
    # the targets are the base model's own answers; a base refusal is dropped
    lm = load_model("tiny-random")
    answers = iter(["I'm sorry, but I cannot help with that.", "Because it is. Then more"] * 100)
    monkeypatch.setattr("alignx.policy.SinglePolicy.generate", lambda self, ps, *a, **k: [next(answers) for _ in ps])
    rows = T.self_distill(lm, prompts[:4])
    assert rows == [(prompts[1], "Because it is."), (prompts[3], "Because it is.")]
    path = train_expert(lm, "harmless", tmp_path, preset("tiny", rows_per_axis=8, benign_contrast=0.05),
                        data_dir=data_dir)
    card = json.loads((path / "card.json").read_text())
    assert card["data"]["sources"]["contrast_benign_self_distilled"] == len(prompts) // 2
    assert card["hyperparameters"]["benign_contrast"] == 0.05
