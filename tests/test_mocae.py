"""Stage 2 on the tiny random model: router training, calibration math, exact fusion, streaming."""
from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest
import torch

from alignx.generation import ModelStep, Sampling
from alignx.mocae import FUSED, Calibration, expert_weights
from alignx.mocae.fusion import LogitFusionStep
from alignx.models import load_model
from alignx.studio import Studio

sys.path.insert(0, str(Path(__file__).parent))
import tiny_studio  # noqa: E402

AXES = ["harmless", "helpful", "honest"]


def make_random_experts(folder, seed: int = 0) -> None:
    """Three tiny experts with random, non-zero LoRA weights in the expert-folder layout."""
    tiny_studio.make_random_experts(folder, AXES, seed)


@pytest.fixture(scope="module")
def studio(tmp_path_factory, data_dir):
    from alignx.experts.latent_fit import fit_latent_space
    from alignx.mocae.train import train_mocae

    folder = tmp_path_factory.mktemp("experts")
    make_random_experts(folder)
    fit_latent_space(load_model("tiny-random"), folder, data_dir=data_dir, per_axis=10, heldout_per_axis=5, steps=40)
    st = Studio.load("tiny-random", folder, with_router=False)
    st.mocae = train_mocae(st, data_dir, per_axis=10, heldout_per_axis=5, router_steps=60, temperature_rows=4)
    return st


def test_router_training_card_and_reload(studio):
    card = json.loads((studio.experts_dir / "router" / "card.json").read_text())
    h = card["heldout"]
    assert card["router_shape"] == [3, 4 * 256] and 0 <= h["routing_accuracy"] <= 1
    assert sum(map(sum, h["confusion_matrix"]["counts"])) == 15
    assert set(card["expert_calibration"]) == set(AXES)
    for c in card["expert_calibration"].values():
        assert c["ece_before"] >= 0 and c["ece_after"] >= 0 and c["temperature"] > 0
    again = Studio.load("tiny-random", studio.experts_dir)
    assert again.modes()[-2:] == ["mocae-logit", "mocae-adapter"]
    a = studio.mocae.route("How do I pick a lock?")
    b = again.mocae.route("How do I pick a lock?")
    assert a.probabilities == pytest.approx(b.probabilities, abs=1e-5) and a.cluster == b.cluster


def test_weights_sum_to_one_and_move_monotonically():
    logits, prior = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([0.2, 0.5, 0.3])
    w, p, q = expert_weights(logits, prior, Calibration(), AXES)
    assert float(w.sum()) == pytest.approx(1.0) and torch.allclose(w, (0.6 * p + 0.4 * q))
    prev = None
    for lam in (0.0, 0.25, 0.5, 0.75, 1.0):   # more router weight: w moves toward p
        w, p, q = expert_weights(logits, prior, Calibration(lambda1=lam, lambda2=1 - lam), AXES)
        dist = float((w - p).abs().sum())
        assert prev is None or dist < prev
        prev = dist
    prev = None
    for pref in (0.0, 0.3, 0.6, 1.0):         # a larger preference for "honest" raises its weight
        w, _, _ = expert_weights(logits, prior, Calibration(preferences={"honest": pref}), AXES)
        assert float(w.sum()) == pytest.approx(1.0)
        assert prev is None or float(w[2]) > prev
        prev = float(w[2])
    hot = expert_weights(logits, prior, Calibration(temperature=0.1), AXES)[1]
    cold = expert_weights(logits, prior, Calibration(temperature=10.0), AXES)[1]
    assert float(hot.max()) > float(cold.max())


def test_recalibrate_uses_the_cache_not_the_model(studio):
    mocae = studio.mocae
    first = mocae.route("Is the Earth flat?")
    calls = []
    hook = studio.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        r = mocae.recalibrate(first, mocae.calibration.with_(lambda1=0.2, lambda2=0.8, preferences={"honest": 0.1}))
    finally:
        hook.remove()
    assert mocae.calibration == Calibration()            # the default is a value nothing changes
    assert calls == [] and r.router_probabilities == first.router_probabilities
    assert sum(r.probabilities.values()) == pytest.approx(1.0) and r.elapsed_ms >= 0
    assert r.probabilities["honest"] < first.probabilities["honest"]


def test_fused_adapter_delta_is_the_explicit_sum(studio):
    fused = studio.mocae.fused
    w = [0.5, 0.3, 0.2]
    fused.set_weights(w)
    layers = [m for m in studio.model.modules() if hasattr(m, "lora_A") and FUSED in m.lora_A]
    assert layers
    for m in layers:
        explicit = sum(wi * m.get_delta_weight(e) for wi, e in zip(w, studio.mocae.experts))
        assert torch.allclose(fused.delta_weight(m), explicit, atol=1e-6)
    m = layers[0]   # and the layer's forward adds exactly that delta
    x = torch.randn(2, m.in_features)
    with torch.no_grad():
        y = m(x, adapter_names=[FUSED, FUSED])
        ref = m.base_layer(x) + x @ sum(wi * m.get_delta_weight(e) for wi, e in zip(w, studio.mocae.experts)).T
    assert torch.allclose(y, ref, atol=1e-5)


@pytest.mark.parametrize("mode", ["mocae-logit", "mocae-adapter"])
def test_one_hot_fusion_equals_that_expert(studio, mode):
    mocae = studio.mocae
    saved = mocae.temperatures
    mocae.temperatures = [1.0, 1.0, 1.0]
    try:
        for i, expert in enumerate(mocae.experts):
            onehot = [0.0] * 3
            onehot[i] = 1.0
            pol = mocae.policy(mode, fixed_weights=onehot)
            step, single = pol.make_step("hello"), ModelStep(studio.model, [expert])
            ids = pol.prompt_ids("hello")
            for feed in (ids, [7], [11]):
                a, _ = step(feed)
                b, _ = single(feed)
                assert torch.allclose(a, b, atol=1e-4), (mode, expert)
    finally:
        mocae.temperatures = saved


def test_mixture_logprob_matches_the_decode_steps(studio):
    for mode in ("mocae-logit", "mocae-adapter"):
        pol = studio.mocae.policy(mode)
        tok = studio.tokenizer
        cont = tok("The sea is blue", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        step, feed, total = pol.make_step("hello"), pol.prompt_ids("hello"), 0.0
        for t in cont:
            lp, weights = step(feed)
            total += float(lp[t])
            feed = [t]
        assert sum(weights.values()) == pytest.approx(1.0)
        assert pol.logprob(["hello"], ["The sea is blue"])[0] == pytest.approx(total, abs=2e-3), mode


def test_stacked_lora_equals_peft_mixed_batches(studio):
    """The one-bmm-per-layer expert rows give peft's per-adapter sums: decode steps (with the base row of
    per-token re-routing) and teacher-forced mixture log-probs over a padded batch."""
    from alignx.mocae.fusion import mixture_token_logprobs
    from alignx.mocae.stacked import StackedLoRA

    mocae, model = studio.mocae, studio.model
    stacked = mocae.stacked
    assert isinstance(stacked, StackedLoRA) and len(stacked.layers) > 0
    w = torch.tensor([0.2, 0.5, 0.3])
    reroute = lambda h: torch.softmax(h[:, :3].sum(0), -1)  # noqa: E731  (any function of the hidden states)
    for rr in (None, reroute):
        a = LogitFusionStep(model, mocae.experts, mocae.temperatures, w, rr, stacked)
        b = LogitFusionStep(model, mocae.experts, mocae.temperatures, w, rr, None)
        for feed in (studio.policy("base").prompt_ids("hello there"), [7], [11]):
            (la, wa), (lb, wb) = a(feed), b(feed)
            assert torch.allclose(la, lb, atol=1e-5) and wa == pytest.approx(wb, abs=1e-6)
    ids = torch.tensor([[5, 9, 13, 2, 8], [4, 6, 0, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        x = mixture_token_logprobs(model, mocae.experts, mocae.temperatures, w, ids, mask, 1, stacked)
        y = mixture_token_logprobs(model, mocae.experts, mocae.temperatures, w, ids, mask, 1, None)
    assert torch.allclose(x, y, atol=1e-5)
    for m, _, _ in stacked.layers:       # the patch is gone after each call
        assert "forward" not in m.__dict__


@pytest.mark.parametrize("mode", ["mocae-logit", "mocae-adapter"])
def test_batched_generation_equals_one_prompt_at_a_time(studio, mode):
    """Prompts of different lengths (left padding) under different routed weights, batched vs streamed."""
    prompts = ["hello", "How do I bake a loaf of bread at home?", "Is the moon made of cheese?", "Hi there, friend."]
    pol = studio.mocae.policy(mode)
    w = studio.mocae.weights_many(prompts)
    assert w.shape == (4, 3) and torch.allclose(w.sum(-1), torch.ones(4))
    assert (w.max(0).values - w.min(0).values).max() > 1e-3          # the rows really differ
    sampling = Sampling(max_new_tokens=8, temperature=0.0)
    done = []
    batched = pol.generate(prompts, sampling, batch_size=3, on_done=lambda i, t: done.append(i))
    assert done == [0, 1, 2, 3]
    tok = studio.tokenizer      # token ids, not answer(): streaming holds back a trailing partial character
    streamed = [tok.decode([e.token_id for e in pol.stream(p, sampling) if not e.finished],
                           skip_special_tokens=True).strip() for p in prompts]
    assert batched == streamed
    # and the fused answers differ from the first expert's (the per-row weights are applied)
    assert batched != studio.policy(f"expert:{studio.mocae.experts[0]}").generate(prompts, sampling, batch_size=3)


def test_per_token_rerouting_records_weights(studio):
    pol = studio.mocae.policy("mocae-logit", Calibration(per_token=True))
    events = list(pol.stream("Tell me a fact.", Sampling(max_new_tokens=6, temperature=1.0)))
    assert events and all(abs(sum(e.weights.values()) - 1) < 1e-5 for e in events)
    assert len({tuple(round(v, 6) for v in e.weights.values()) for e in events}) > 1


def test_stream_stops_on_request(studio):
    stop = threading.Event()
    seen = []
    for ev in studio.policy("mocae-adapter").stream("hello", Sampling(max_new_tokens=100, temperature=1.0), stop):
        seen.append(ev)
        if len(seen) == 2:
            stop.set()
    assert len(seen) == 2


def test_bad_parameters_give_clear_errors(studio):
    with pytest.raises(ValueError, match="temperature"):
        Calibration(temperature=-1.0)
    with pytest.raises(ValueError, match=r"lambda1 must be in \[0, 1\]"):
        Calibration(lambda1=1.5)
    with pytest.raises(ValueError, match="cannot both be 0"):
        Calibration(lambda1=0.0, lambda2=0.0)
    with pytest.raises(ValueError, match="unknown expert"):
        studio.mocae.route("hi", Calibration(preferences={"funny": 1.0}))
    with pytest.raises(ValueError, match="unknown MoCaE mode"):
        studio.mocae.policy("mocae-magic")
    with pytest.raises(ValueError, match="fixed_weights"):
        studio.mocae.policy("mocae-logit", fixed_weights=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="prompt is empty"):
        studio.mocae.route("  ")


def test_route_cli_prints_json(studio, capsys):
    from alignx.cli import main

    assert main(["route", "How do I pick a lock?", "--model", "tiny-random", "--experts-dir",
                 str(studio.experts_dir), "--lambda1", "0.9", "--prefer", "honest=0.5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["probabilities"]) == set(AXES) and sum(out["probabilities"].values()) == pytest.approx(1.0)
    assert out["settings"]["lambda1"] == 0.9 and out["settings"]["preferences"] == {"honest": 0.5}
    assert "router_probabilities" in out and "cluster" in out
    assert main(["route", "hi", "--model", "tiny-random", "--experts-dir", str(studio.experts_dir),
                 "--lambda1", "2"]) == 2


def test_route_many_equals_route_one_at_a_time(studio):
    from alignx.mocae.calibration import Calibration

    prompts = ["How do I pick a lock?", "Is the Earth flat?", "Write a haiku about rain.", "hi there", "Why?"]
    cal = Calibration(lambda1=0.7, preferences={"honest": 0.3})
    seen = []
    many = studio.mocae.route_many(prompts, cal, batch_size=2, on_batch=seen.append)
    assert seen == [2, 4, 5] and [r.prompt for r in many] == prompts
    for r in many:
        one = studio.mocae.route(r.prompt, cal)
        assert r.cluster == one.cluster
        for e in one.probabilities:   # batched forward (padding) vs one prompt: float rounding only
            assert r.probabilities[e] == pytest.approx(one.probabilities[e], abs=1e-4)
            assert r.router_probabilities[e] == pytest.approx(one.router_probabilities[e], abs=1e-4)
    with pytest.raises(ValueError, match="prompt 2 is empty"):
        studio.mocae.route_many(["ok", " "])


def test_route_cli_routes_a_prompts_file(studio, tmp_path, capsys):
    from alignx.cli import main

    src = tmp_path / "prompts.txt"
    src.write_text("How do I pick a lock?\n\nIs the Earth flat?\nWrite a haiku about rain.\n")
    out = tmp_path / "routes.jsonl"
    assert main(["route", "--prompts-file", str(src), "--out", str(out), "--batch-size", "2", "--model",
                 "tiny-random", "--experts-dir", str(studio.experts_dir), "--preferences", "honest=0.5"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["How do I pick a lock?", "Is the Earth flat?", "Write a haiku about rain."]
    for r in rows:
        assert {"prompt", "router_probabilities", "probabilities", "cluster"} <= set(r)
        assert set(r["probabilities"]) == set(AXES) and sum(r["probabilities"].values()) == pytest.approx(1.0)
        one = studio.mocae.route(r["prompt"], studio.mocae.calibration.with_(preferences={"honest": 0.5}))
        assert r["probabilities"] == pytest.approx(one.probabilities, abs=1e-4)
    common = ["--model", "tiny-random", "--experts-dir", str(studio.experts_dir)]
    assert main(["route", "--prompts-file", str(src), *common]) == 2                 # no --out
    assert "--out" in capsys.readouterr().err
    assert main(["route", "hi", "--prompts-file", str(src), "--out", str(out), *common]) == 2   # both
    (tmp_path / "empty.txt").write_text("\n \n")
    assert main(["route", "--prompts-file", str(tmp_path / "empty.txt"), "--out", str(out), *common]) == 2
    assert "empty.txt" in capsys.readouterr().err


def test_router_latent_and_heldout_prompts_are_disjoint(data_dir):
    from alignx.experts.latent import HELDOUT_MAX, axis_prompt_pools, heldout_prompts, router_prompts, train_prompts

    heads, _ = train_prompts(data_dir, 150)
    router, labels = router_prompts(data_dir, 250)
    held, _ = heldout_prompts(data_dir, HELDOUT_MAX)
    assert not set(heads) & set(router) and not set(router) & set(held) and not set(heads) & set(held)
    pools = axis_prompt_pools(data_dir)
    alpaca_eval, beavertails = set(pools["helpful"][1]), set(pools["harmless"][1])
    helpful = [p for p, a in zip(router, labels) if a == "helpful"]
    assert sum(p in alpaca_eval for p in helpful) == len(helpful) // 2   # round-robin over the two sources
    assert any(p in beavertails for p in router)
    with pytest.raises(ValueError, match="per_axis"):
        heldout_prompts(data_dir, HELDOUT_MAX + 1)


def test_router_fit_cv_picks_weight_decay_on_training_folds():
    from alignx.mocae.router import Router

    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    z = torch.randn(60, 8, generator=g) + 3 * torch.nn.functional.one_hot(y, 8).float()
    router, loss, sel = Router.fit_cv(z, y, 3, steps=50)
    assert set(sel["cv_accuracy"]) == {0.01, 0.1, 1.0} and sel["weight_decay"] in sel["cv_accuracy"]
    assert max(sel["cv_accuracy"].values()) > 0.9 and (router.logits(z).argmax(-1) == y).float().mean() > 0.9


def test_balanced_router_fit_does_not_out_vote_the_smaller_axis():
    from alignx.mocae.router import Router

    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0] * 90 + [1] * 10)
    z = torch.randn(100, 4, generator=g) + 0.5 * torch.nn.functional.one_hot(y, 4).float()   # overlapping classes
    share = {b: float((Router.fit(z, y, 2, steps=200, balanced=b)[0].logits(z).argmax(-1) == 1).float().mean())
             for b in (False, True)}
    assert share[True] > share[False] + 0.1           # weighting the 10 rows up predicts them more often
    same = torch.arange(60) % 3                       # equal counts: balancing changes nothing
    zz = torch.randn(60, 8, generator=g)
    a, b = Router.fit(zz, same, 3, steps=20)[0], Router.fit(zz, same, 3, steps=20, balanced=True)[0]
    assert torch.allclose(a.weight, b.weight, atol=1e-6)


def _four_layer_experts(first: int):
    """A 4-layer tiny Llama with three random LoRA experts on layers first..3 (peft, mixed batches)."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    from alignx.tiny import tiny_config, tiny_tokenizer

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(len(tok), layers=4)).eval()
    for i, name in enumerate(AXES):
        cfg = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, target_modules=["q_proj", "v_proj", "down_proj"],
                         layers_to_transform=list(range(first, 4)))
        torch.manual_seed(10 + i)
        if i == 0:
            model = get_peft_model(model, cfg, adapter_name=name)
        else:
            model.add_adapter(name, cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.mul_(5.0)
    return model.eval(), tok


def test_shared_trunk_equals_the_full_expert_batch():
    """Experts only in layers 1..3 of 4: the stacked path runs layer 0 once and forks there; decode
    steps (with and without the re-routing base row), padded teacher-forced mixture log-probs and
    batched generation of padded prompts equal peft's full expert batch."""
    from alignx.generation import chat_prompt_ids
    from alignx.hooks import backbone
    from alignx.mocae.fusion import mixture_generate, mixture_token_logprobs
    from alignx.mocae.stacked import StackedLoRA

    model, tok = _four_layer_experts(first=1)
    temps, w = [1.0, 0.8, 1.2], torch.tensor([0.2, 0.5, 0.3])
    stacked = StackedLoRA(model, AXES)
    assert stacked.fork == 1
    reroute = lambda h: torch.softmax(h[:, :3].sum(0), -1)  # noqa: E731
    for rr in (None, reroute):
        a, b = LogitFusionStep(model, AXES, temps, w, rr, stacked), LogitFusionStep(model, AXES, temps, w, rr, None)
        for feed in (chat_prompt_ids(tok, "hello there"), [7], [11]):
            (la, wa), (lb, wb) = a(feed), b(feed)
            assert torch.allclose(la, lb, atol=1e-5) and wa == pytest.approx(wb, abs=1e-6)
    ids = torch.tensor([[5, 9, 13, 2, 8], [0, 0, 4, 6, 3]])
    mask = (ids != 0).long()
    with torch.no_grad():
        x = mixture_token_logprobs(model, AXES, temps, w, ids, mask, 1, stacked)
        y = mixture_token_logprobs(model, AXES, temps, w, ids, mask, 1, None)
    assert torch.allclose(x, y, atol=1e-5)
    wb2 = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    kw = dict(sampling=Sampling(max_new_tokens=6), eos=set(), pad=0)
    assert mixture_generate(model, AXES, temps, wb2, ids, mask, stacked=stacked, **kw) == \
        mixture_generate(model, AXES, temps, wb2, ids, mask, stacked=None, **kw)
    assert not any(layer._forward_pre_hooks for layer in backbone(model).layers)
    assert all("forward" not in m.__dict__ for m, _, _ in stacked.layers)


def test_mixture_logprobs_through_the_sliced_head_equal_the_full_log_softmax(studio, monkeypatch):
    """The memory-bounded path (final hidden states -> LM head slice by slice) gives the gather of the
    full (n x B, L, V) log-softmax, at a budget small enough to force one row per slice."""
    import alignx.logprobs as L
    from alignx.mocae import fusion

    mocae, model = studio.mocae, studio.model
    assert L.plain_head(model) is not None
    ids = torch.tensor([[5, 9, 13, 2, 8], [4, 6, 0, 0, 0]])
    mask = (ids != 0).long()
    w = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    args = (model, mocae.experts, mocae.temperatures, w, ids, mask, 1, mocae.stacked)
    with torch.no_grad():
        monkeypatch.setattr(fusion, "head_logprobs",
                            lambda *a: L.head_logprobs(*a, budget=1))          # one row per slice
        sliced = fusion.mixture_token_logprobs(*args)
        monkeypatch.setattr(fusion, "plain_head", lambda m: None)               # the logits path
        full = fusion.mixture_token_logprobs(*args)
    assert sliced.shape == full.shape == (2, 3)
    assert torch.allclose(sliced, full, atol=1e-5)


def test_gather_logprobs_equals_log_softmax_gather():
    from alignx.logprobs import gather_logprobs

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, 11, generator=g, requires_grad=True)
    t = torch.randint(0, 11, (5, 7), generator=g)
    want = torch.log_softmax(logits, -1).gather(-1, t[..., None]).squeeze(-1)
    for budget in (1, 77, 10_000):                       # one row, a few rows, all rows per slice
        assert torch.allclose(gather_logprobs(logits, t, budget), want, atol=1e-6)
    gather_logprobs(logits, t, 1).sum().backward()       # differentiable (interp's row losses need it)
    assert logits.grad is not None
    with pytest.raises(ValueError, match="do not match"):
        gather_logprobs(logits, t[:, :3])
