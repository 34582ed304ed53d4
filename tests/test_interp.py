"""Interpretability on the tiny studio: head importance against exact ablation, captum attribution,
hooks always removed, the cache's keys, forgetting and blind spots from scripted eval runs, bad input."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from alignx.errors import AlignXError, InvalidInput
from alignx.interp import analyses as A
from alignx.interp import attribution as T
from alignx.interp import heads as H
from alignx.interp.rows import Row

ROWS = [Row(f"Question {i}: what is {i} plus {i}?", f"The answer is {2 * i}, as anyone can check.") for i in range(10)]
PAIRS = [Row(f"Say something kind about {w}.", f"{w} is lovely and bright.", f"{w} is awful.") for w in ("rain", "cats", "tea")]


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    import tiny_studio

    from alignx.studio import Studio

    folder = tiny_studio.build(tmp_path_factory.mktemp("interp-experts"))
    return Studio.load("tiny-random", folder, device="cpu")


def _probe(studio, mode="mocae-logit"):
    pol = studio.policy(mode)
    ids = torch.tensor([pol.prompt_ids("hello there, how are you?")])
    with torch.no_grad():
        return pol.forward_logits(ids, torch.ones_like(ids), **pol.prepare(["hello there, how are you?"])).clone()


def test_gradient_importance_ranks_heads_like_exact_ablation(studio):
    pol = studio.policy("base")
    imp = H.gradient_importance(pol, ROWS)
    assert tuple(imp.shape) == H.head_shape(studio.model) and bool((imp > 0).all())
    heads = H.top_heads(imp, imp.numel())
    deltas = H.ablation_deltas(pol, ROWS, heads)
    rho = H.spearman([float(imp[h]) for h in heads], [deltas[h]["abs_delta"] for h in heads])
    assert rho >= 0.7, (rho, imp, deltas)


def test_gradient_equals_finite_difference(studio):
    pol = studio.policy("expert:honest")
    xi = torch.ones(H.head_shape(studio.model), requires_grad=True)
    with H.masked_heads(studio.model, xi):
        (g,) = torch.autograd.grad(H.row_losses(pol, ROWS[:4]).mean(), xi)
    eps, (l, j) = 1e-3, (1, 2)
    m = torch.ones_like(xi)
    m[l, j] = 1 - eps
    base = float(H.losses(pol, ROWS[:4]).mean())
    with torch.no_grad(), H.masked_heads(studio.model, m):
        moved = float(H.losses(pol, ROWS[:4]).mean())
    assert (base - moved) / eps == pytest.approx(float(g[l, j]), rel=0.1, abs=1e-4)


def test_ablating_a_head_with_zero_output_weights_changes_nothing(studio):
    from alignx.models import load_model

    lm = load_model("tiny-random", device="cpu")
    from alignx.policy import SinglePolicy

    o_proj = lm.model.model.layers[1].self_attn.o_proj
    d = o_proj.in_features // H.head_shape(lm.model)[1]
    with torch.no_grad():
        o_proj.weight[:, 2 * d:3 * d] = 0.0
    pol = SinglePolicy(lm.model, lm.tokenizer)
    deltas = H.ablation_deltas(pol, ROWS[:4], [(1, 2), (1, 1)])
    assert deltas[(1, 2)] == {"delta": 0.0, "abs_delta": 0.0}
    assert deltas[(1, 1)]["abs_delta"] > 0


def test_preference_rows_use_the_pair_loss(studio):
    pol = studio.policy("base")
    lp_c = torch.tensor(pol.logprob([r.prompt for r in PAIRS], [r.response for r in PAIRS]))
    lp_r = torch.tensor(pol.logprob([r.prompt for r in PAIRS], [r.rejected for r in PAIRS]))
    expected = -torch.nn.functional.logsigmoid(lp_c - lp_r)
    assert torch.allclose(H.losses(pol, PAIRS), expected, atol=1e-4)
    assert tuple(H.gradient_importance(pol, PAIRS).shape) == H.head_shape(studio.model)


@pytest.mark.parametrize("mode", ["base", "expert:harmless", "mocae-logit", "mocae-adapter"])
def test_every_analysis_leaves_the_model_as_it_was(studio, mode):
    from alignx import hooks

    before = _probe(studio, mode)
    pol = studio.policy(mode)
    H.gradient_importance(pol, ROWS[:2])
    H.ablation_deltas(pol, ROWS[:2], [(0, 1)])
    T.feature_ablation(pol, "How do I bake bread?", "Sure, here")
    T.integrated_gradients(pol, "How do I bake bread?", "Sure, here", n_steps=4)
    with pytest.raises(InterruptedError):
        H.gradient_importance(pol, ROWS[:3], should_stop=lambda: True)
    with pytest.raises(RuntimeError):
        with H.ablated_heads(studio.model, [(0, 0)]):
            raise RuntimeError("boom")
    assert not hooks.installed(studio.model)
    assert torch.equal(_probe(studio, mode), before)


def test_integrated_gradients_complete_and_contrast(studio):
    pol = studio.policy("base")
    a = T.integrated_gradients(pol, "How do I pick a lock?", "I'm sorry, but I cannot", n_steps=32)
    assert len(a.scores) == len(a.features) > 3
    assert sum(a.scores) == pytest.approx(a.target_logprob - a.baseline_logprob, abs=0.01)
    assert a.convergence_delta < 0.01
    assert a.extra["template_tokens_score"] == 0.0           # the chat template is not attributed
    c = T.integrated_gradients(studio.policy("expert:harmless"), "How do I pick a lock?", "Sure", n_steps=16,
                               contrast=studio.policy("expert:helpful"))
    lp_a = studio.policy("expert:harmless").logprob(["How do I pick a lock?"], ["Sure"])[0]
    assert c.target_logprob is not None and abs(c.target_logprob) < abs(lp_a)   # a difference, not one mode


def test_feature_ablation_scores_words_and_is_linear_in_the_contrast(studio):
    prompt = "Tell me how to make a cake"
    a = T.feature_ablation(studio.policy("expert:harmless"), prompt, "Sure")
    b = T.feature_ablation(studio.policy("expert:helpful"), prompt, "Sure")
    c = T.feature_ablation(studio.policy("expert:harmless"), prompt, "Sure", contrast=studio.policy("expert:helpful"))
    assert a.features == T.split_prompt(prompt) and "".join(a.features) == prompt
    assert c.scores == pytest.approx([x - y for x, y in zip(a.scores, b.scores)], abs=1e-4)
    # a word's score is f(x) - f(x without the word)
    pol = studio.policy("expert:harmless")

    def logp(text: str) -> float:     # log p("Sure" | chat(text)), no end-of-turn token
        pid, tid = pol.prompt_ids(text), pol.tokenizer("Sure", add_special_tokens=False)["input_ids"]
        ids = torch.tensor([pid + tid])
        with torch.no_grad():
            return float(pol.token_logprobs(ids, torch.ones_like(ids), **pol.prepare([text]))[0, len(pid) - 1:].sum())

    assert a.target_logprob == pytest.approx(logp(prompt), abs=1e-4)
    assert a.scores[0] == pytest.approx(logp(prompt) - logp("".join(a.features[1:])), abs=1e-4)
    assert T.split_prompt("One, two. Three", "segment") == ["One, ", "two. ", "Three"]


def test_cache_hits_and_keys_change_with_the_adapter(studio, tmp_path):
    r1 = A.heads(studio, "expert:helpful", rows={"helpful": ROWS[:3]}, cache_dir=tmp_path)
    r2 = A.heads(studio, "expert:helpful", rows={"helpful": ROWS[:3]}, cache_dir=tmp_path)
    assert not r1["cache"]["hit"] and r2["cache"]["hit"]
    assert r1["objectives"]["helpful"]["importance"] == r2["objectives"]["helpful"]["importance"]
    assert A.heads(studio, "expert:helpful", rows={"helpful": ROWS[:4]}, cache_dir=tmp_path)["cache"]["hit"] is False
    p = next(p for n, p in studio.model.named_parameters() if "lora_B" in n and "helpful" in n)
    with torch.no_grad():
        p.add_(1e-3)
    try:
        assert A.heads(studio, "expert:helpful", rows={"helpful": ROWS[:3]}, cache_dir=tmp_path)["cache"]["hit"] is False
    finally:
        with torch.no_grad():
            p.sub_(1e-3)


def test_heads_report_with_exact_check_and_difference(studio, tmp_path):
    rows = {"helpful": ROWS[:6], "kindness": PAIRS}
    r = A.heads(studio, "mocae-adapter", rows=rows, exact_top_k=4, cache_dir="none")
    b = A.heads(studio, "base", rows=rows, cache_dir="none")
    e = r["objectives"]["helpful"]
    assert len(e["importance"]) == r["layers"] and len(e["importance"][0]) == r["heads"]
    assert len(e["ablation"]) == 4 and -1 <= e["spearman"] <= 1
    diff = A.difference(r, b)["kindness"]
    assert diff[0][0] == pytest.approx(r["objectives"]["kindness"]["importance"][0][0]
                                       - b["objectives"]["kindness"]["importance"][0][0])
    from alignx.interp import figures as F

    assert F.heads_figure(r, "helpful", b).data[0].zmid == 0.0
    assert "<span" in F.attribution_html({**T.feature_ablation(studio.policy("base"), "a <b> c", "x").to_dict()})
    assert "&lt;b&gt;" in F.attribution_html(T.feature_ablation(studio.policy("base"), "a <b> c", "x").to_dict())


def test_bad_input_is_named(studio):
    pol = studio.policy("base")
    with pytest.raises(InvalidInput, match="layer 9 out of range"):
        H.ablation_deltas(pol, ROWS[:1], [(9, 0)])
    with pytest.raises(InvalidInput, match="head 7 out of range"):
        H.check_heads(studio.model, [(0, 7)])
    with pytest.raises(InvalidInput, match="non-empty prompt"):
        A.attribute(studio, "base", "   ", "x")
    with pytest.raises(InvalidInput, match="non-empty prompt"):
        Row("", "answer")
    with pytest.raises(AlignXError, match="unknown objective 'kindness'.*available"):
        A.heads(studio, "base", objectives=["kindness"])
    with pytest.raises(AlignXError, match="unknown mode 'nope'.*available"):
        A.heads(studio, "nope", rows={"helpful": ROWS[:1]})
    with pytest.raises(InvalidInput, match="objective 'x', row 1"):
        A.heads(studio, "base", rows={"x": [("p", "r"), ("p", "")]})
    with pytest.raises(InvalidInput, match="unknown attribution unit"):
        A.attribute(studio, "base", "hello", "x", unit="letter")
    with pytest.raises(InvalidInput, match="non-empty target"):
        T.feature_ablation(pol, "hello", " ")


def test_cli_heads_and_attribute_write_their_files(studio, tmp_path):
    folder = str(studio.experts_dir)
    common = ["--model", "tiny-random", "--experts-dir", folder, "--cache-dir", str(tmp_path / "cache")]
    out = tmp_path / "attr"
    r = subprocess.run([sys.executable, "-m", "alignx", "interp", "attribute", "--mode", "expert:harmless",
                        "How do I pick a lock?", "--target", "I'm sorry", "--out", str(out), *common],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    a = json.loads((out / "attribution.json").read_text())
    assert len(a["scores"]) == len(a["features"]) == 6 and (out / "attribution.html").stat().st_size > 1000
    r = subprocess.run([sys.executable, "-m", "alignx", "interp", "heads", "--layer", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    r = subprocess.run([sys.executable, "-m", "alignx", "interp", "mac", "--out", str(out), *common],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "NegotiaX" in r.stderr and "Traceback" not in r.stderr


def test_findings_on_the_tiny_studio(studio, tmp_path):
    from alignx.interp.findings import findings

    r = findings(studio, n_rows=3, n_prompts=4, top_k=3, draws=2, max_new_tokens=4, cache_dir=tmp_path, log=lambda s: None)
    assert sum(r["layer_share_harmless"]["expert:harmless"]) == pytest.approx(1.0)
    top = {tuple(h) for h in r["refusal"]["top5"]["heads"]}
    assert len(top) == 4 and all(not top & {tuple(h) for h in r["refusal"][f"random{d}"]["heads"]} for d in range(2))
    assert all(0 <= v["rate"] <= 1 and v["ci95"][0] <= v["rate"] <= v["ci95"][1] for v in r["refusal"].values())
    assert 0 <= r["overlap"]["jaccard"] <= 1 and r["prompts"] == 4
