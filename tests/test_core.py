"""The extensible core on a tiny studio: every mode's differentiable forward equals its decode,
calibration is a value, one policy serves many threads, and 2 or 4 objectives work like 3."""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import tiny_studio  # noqa: E402

from alignx import methods  # noqa: E402
from alignx.generation import Sampling  # noqa: E402

MODES = ["base", "expert:harmless", "expert:helpful", "expert:honest", "mocae-logit", "mocae-adapter",
         "uniform-logit", "uniform-adapter"]


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    from alignx.studio import Studio

    return Studio.load("tiny-random", tiny_studio.build(tmp_path_factory.mktemp("experts")))


def decode_logprobs(policy, prompt: str, n: int = 6) -> tuple[list[int], list[int], torch.Tensor]:
    """(prompt ids, greedy tokens, (n, V) step log-probs) from the policy's KV-cached step function."""
    step, ids = policy.make_step(prompt), policy.prompt_ids(prompt)
    feed, tokens, rows = ids, [], []
    for _ in range(n):
        lp, _ = step(feed)
        rows.append(lp.float())
        tokens.append(int(lp.argmax()))
        feed = [tokens[-1]]
    return ids, tokens, torch.stack(rows)


@pytest.mark.parametrize("mode", MODES)
def test_forward_logits_equal_the_streamed_decode_at_every_position(studio, mode):
    policy = methods.policy(studio, mode)
    prompt = "How do I pick a lock?"
    ids, tokens, steps = decode_logprobs(policy, prompt)
    full = torch.tensor([ids + tokens])
    with torch.no_grad():
        logits = policy.forward_logits(full, torch.ones_like(full), **policy.prepare([prompt]))
    assert logits.shape == (1, len(ids) + len(tokens), len(studio.tokenizer))
    got = torch.log_softmax(logits[0, len(ids) - 1:-1].float(), -1)
    assert torch.allclose(got, steps, atol=1e-4), (mode, float((got - steps).abs().max()))
    # token_logprobs is the gather of the same distribution
    tl = policy.token_logprobs(full, torch.ones_like(full), 0, **policy.prepare([prompt]))
    want = torch.log_softmax(logits[0, :-1].float(), -1).gather(-1, full[0, 1:, None]).squeeze(-1)
    assert torch.allclose(tl[0], want, atol=1e-4), mode


@pytest.mark.parametrize("mode", MODES)
def test_forward_logits_are_differentiable_in_the_embeddings_and_hooked_activations(studio, mode):
    from alignx import hooks

    policy = methods.policy(studio, mode)
    prompt = "Is the Earth flat?"
    ids = torch.tensor([policy.prompt_ids(prompt)])
    ctx = policy.prepare([prompt])
    emb = policy.embed(ids).detach().requires_grad_(True)
    with hooks.capture(studio.model, ["blocks.1.resid_post"], detach=False) as cache:
        out = policy.forward_logits(inputs_embeds=emb, attention_mask=torch.ones_like(ids), **ctx)
    out[0, -1].logsumexp(-1).backward()   # any scalar of the output
    assert emb.grad is not None and float(emb.grad.abs().sum()) > 0, mode
    assert cache["blocks.1.resid_post"].requires_grad
    with torch.no_grad():
        by_ids = policy.forward_logits(ids, torch.ones_like(ids), **ctx)
    assert torch.allclose(out.detach(), by_ids, atol=1e-4), mode


def test_a_fused_forward_without_weights_says_what_it_needs(studio):
    with pytest.raises(ValueError, match="routing weights"):
        methods.policy(studio, "mocae-logit").forward_logits(torch.tensor([[1, 2, 3]]))


def test_lora_hooks_see_logit_fusion_rows_and_outputs_stay_the_same(studio):
    from alignx import hooks

    policy = methods.policy(studio, "mocae-logit")
    ids = torch.tensor([policy.prompt_ids("hello there")])
    ctx = policy.prepare(["hello there"])
    with torch.no_grad():
        plain = policy.forward_logits(ids, **ctx)          # StackedLoRA path
        name = "blocks.0.lora.harmless.q_proj"
        with hooks.capture(studio.model, [name]) as cache:
            hooked = policy.forward_logits(ids, **ctx)     # peft path while a LoRA hook is installed
    assert name in cache and cache[name].shape[0] == 1     # the harmless expert's row
    assert torch.allclose(plain, hooked, atol=1e-4)
    assert not hooks.installed(studio.model)


def test_routing_is_a_value_and_recalibration_is_pure(studio):
    from alignx.mocae import recalibrate

    mocae = studio.mocae
    default = mocae.calibration
    route = mocae.route("Tell me about the sea.")
    leaning = recalibrate(route, default.with_(preferences={"honest": 1.0, "helpful": 0.0, "harmless": 0.0}))
    again = recalibrate(route, default.with_(preferences={"honest": 1.0, "helpful": 0.0, "harmless": 0.0}))
    assert leaning == again and leaning.router_probabilities == route.router_probabilities
    assert leaning.probabilities["honest"] > route.probabilities["honest"]
    assert recalibrate(leaning, default).probabilities == pytest.approx(route.probabilities, abs=1e-6)
    assert mocae.calibration is default and mocae.route("Tell me about the sea.") == route
    with pytest.raises(AttributeError):
        mocae.calibration = default.with_(lambda1=0.1)


def test_concurrent_generate_and_logprob_on_one_policy_equal_sequential_calls(studio):
    prompts = ["How do I pick a lock?", "Is the Earth flat?", "Write a poem.", "Translate hello into French."]
    conts = ["No.", "I cannot help with that.", "The sea is wide.", "Bonjour."]
    sampling = Sampling(max_new_tokens=6)
    for mode in ("mocae-logit", "mocae-adapter", "expert:honest"):
        policy = methods.policy(studio, mode)
        want_gen = [policy.generate([p], sampling) for p in prompts]
        want_lp = [policy.logprob([p], [c]) for p, c in zip(prompts, conts)]
        want_stream = [policy.answer(p, sampling) for p in prompts]
        got: dict = {}
        errors: list = []

        def work(i: int) -> None:
            try:
                for _ in range(2):
                    got[("gen", i)] = policy.generate([prompts[i]], sampling)
                    got[("lp", i)] = policy.logprob([prompts[i]], [conts[i]])
                    got[("stream", i)] = policy.answer(prompts[i], sampling)
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        for i in range(len(prompts)):
            assert got[("gen", i)] == want_gen[i], mode
            assert got[("stream", i)] == want_stream[i], mode
            assert got[("lp", i)] == pytest.approx(want_lp[i], abs=1e-4), mode


def test_one_lock_per_model_also_through_a_peft_wrapper(studio):
    from alignx.generation import model_lock

    assert model_lock(studio.model) is model_lock(studio.lm.model) is studio.lock


@pytest.mark.parametrize("names", [("helpful", "harmless"), ("helpful", "harmless", "honest", "concise")])
def test_two_and_four_objectives(tmp_path, names):
    import inspect

    from alignx.mocae import recalibrate
    from alignx.studio import Studio

    studio = Studio.load("tiny-random", tiny_studio.build(tmp_path, names))
    want = [a for a in ("helpful", "harmless", "honest") if a in names] + [n for n in names if n == "concise"]
    assert [o.name for o in studio.objectives] == want
    assert len({o.color for o in studio.objectives}) == len(names)
    assert methods.modes(studio) == ["base", *[f"expert:{n}" for n in sorted(names)], "mocae-logit", "mocae-adapter"]
    route = studio.mocae.route("How do I pick a lock?")
    assert set(route.probabilities) == set(names) and sum(route.probabilities.values()) == pytest.approx(1.0)
    only = {n: 0.0 for n in names} | {names[-1]: 1.0}
    assert recalibrate(route, studio.mocae.calibration.with_(preferences=only)).probabilities[names[-1]] > \
        route.probabilities[names[-1]]
    from alignx.personal.data import Pair, User

    user = User(history=(Pair("Say hi.", "Hi there, friend!", "Hi."),), persona="Be friendly.")
    for mode in methods.describe(studio, include_unlisted=True):
        policy = methods.policy(studio, mode.name, **({"user": user} if "user" in mode.settings else {}))
        assert policy.answer("hi", Sampling(max_new_tokens=3)) is not None
        assert len(policy.logprob(["hi"], ["there"])) == 1

    from alignx.arena import VoteStore
    from app.context import AppContext
    from app.tabs.routing_panel import Router
    from app.ui import build_demo

    ctx = AppContext(studio, VoteStore(tmp_path / "votes.sqlite"), runs_dir=tmp_path / "runs")
    router = Router(ctx)
    assert router.experts == [o.expert for o in studio.objectives]
    params = list(inspect.signature(router.api_recalibrate()).parameters)
    assert params == ["lambda1", "lambda2", "temperature", *router.experts, "request"]
    cal = router.calibration(0.6, 0.4, 1.0, *[0.5] * len(names))
    assert set(cal.preferences) == set(names)
    build_demo(ctx).close()                                   # the page builds for N objectives


def test_router_training_for_two_objectives(tmp_path, data_dir):
    from alignx.experts.latent_fit import fit_latent_space
    from alignx.mocae.train import train_mocae
    from alignx.models import load_model
    from alignx.studio import Studio

    names = ("helpful", "harmless")
    tiny_studio.make_random_experts(tmp_path, names)
    fit_latent_space(load_model("tiny-random"), tmp_path, data_dir=data_dir, per_axis=8, heldout_per_axis=4, steps=20)
    studio = Studio.load("tiny-random", tmp_path, with_router=False)
    mocae = train_mocae(studio, data_dir, per_axis=8, heldout_per_axis=4, router_steps=20, temperature_rows=4)
    assert mocae.experts == sorted(names) and tuple(mocae.router.weight.shape) == (2, 3 * mocae.space.k)
    counts = mocae.card["heldout"]["confusion_matrix"]["counts"]
    assert len(counts) == 2 and sum(map(sum, counts)) == 8     # honest prompts are left out
    with pytest.raises(ValueError, match="no routing prompts for objective"):
        tiny_studio.make_random_experts(tmp_path, ("concise",))
        fit_latent_space(load_model("tiny-random"), tmp_path, data_dir=data_dir, per_axis=4, heldout_per_axis=2,
                         steps=5)
        train_mocae(Studio.load("tiny-random", tmp_path, with_router=False), data_dir, per_axis=4,
                    heldout_per_axis=2, router_steps=5)
