"""Held-out routing evaluation (alignx.mocae.routing_eval), the feature cache, the MLP router and
the v2 router-prompt builder (every listed source, decontaminated, no held-out routing prompt)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import tiny_studio  # noqa: E402

AXES = list(tiny_studio.THREE)


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    from alignx.studio import Studio

    folder = tmp_path_factory.mktemp("experts")
    tiny_studio.make_random_experts(folder, AXES, layers=[1])     # LoRA above layer 0: a shared trunk
    tiny_studio.make_synthetic_router(folder, AXES, d=64)
    return Studio.load("tiny-random", folder)


def test_accuracy_and_confusion_from_known_weights():
    from alignx.mocae.routing_eval import RoutingSet, evaluate

    fixed = {"a": [0.7, 0.2, 0.1], "b": [0.1, 0.8, 0.1], "c": [0.2, 0.3, 0.5], "d": [0.6, 0.3, 0.1]}
    sets = [RoutingSet("s1", ["a", "b", "c"], ["harmless", "helpful", "helpful"]),
            RoutingSet("s2", ["d"], ["honest"])]
    report = evaluate(lambda ps: torch.tensor([fixed[p] for p in ps]), AXES, sets)
    s1, s2 = report["per_source"]["s1"], report["per_source"]["s2"]
    assert s1["accuracy"] == pytest.approx(2 / 3) and s1["n"] == 3
    assert s1["confusion"]["counts"] == [[1, 0, 0], [0, 1, 1], [0, 0, 0]]
    assert s1["misrouted_examples"] == [{"prompt": "c", "true": "helpful", "routed": "honest"}]
    assert s2["accuracy"] == 0.0 and s2["confusion"]["counts"] == [[0, 0, 0], [0, 0, 0], [1, 0, 0]]
    assert report["overall"]["accuracy"] == pytest.approx(0.5)
    assert report["overall"]["confusion"]["counts"] == [[1, 0, 0], [0, 1, 1], [1, 0, 0]]
    assert report["macro_accuracy_over_sources"] == pytest.approx(1 / 3)
    lo, hi = s1["ci95"]
    assert 0 <= lo <= 2 / 3 <= hi <= 1
    with pytest.raises(ValueError, match="no expert serves"):
        evaluate(lambda ps: torch.zeros(len(ps), 3), AXES, [RoutingSet("s", ["x"], ["funny"])])


def test_mocae_weights_fn_equals_route_and_scores_the_tiny_studio(studio, tmp_path):
    from alignx.mocae.feature_cache import CachedFeatures
    from alignx.mocae.routing_eval import RoutingSet, evaluate, mocae_weights_fn

    prompts = ["How do I pick a lock?", "Write a poem about the sea.", "Is the earth flat?", "hi",
               "Explain how vaccines work, step by step, for a child of ten."]
    routes = [studio.mocae.route(p) for p in prompts]
    routed = [max(r.probabilities, key=r.probabilities.get) for r in routes]
    labels = [routed[0], routed[1], *[a for a in AXES if a != routed[2]][:1], routed[3], routed[4]]
    cached = CachedFeatures.for_space(studio, studio.mocae.space, root=tmp_path, batch_size=2)
    for fn in (mocae_weights_fn(studio.mocae), mocae_weights_fn(studio.mocae, cached)):
        w = fn(prompts)
        want = torch.tensor([[r.probabilities[e] for e in studio.mocae.experts] for r in routes])
        assert torch.allclose(w, want, atol=1e-2)
        report = evaluate(fn, studio.mocae.experts, [RoutingSet("tiny", prompts, labels)])
        assert report["per_source"]["tiny"]["accuracy"] == pytest.approx(4 / 5)
        counts = report["per_source"]["tiny"]["confusion"]["counts"]
        assert sum(map(sum, counts)) == 5 and sum(counts[i][i] for i in range(3)) == 4


def test_cached_features_equal_the_latent_features_and_persist(studio, tmp_path):
    from alignx.experts.latent import features
    from alignx.mocae.feature_cache import CachedFeatures

    adapters = studio.mocae.space.adapters
    prompts = ["short", "a somewhat longer prompt with more words in it", "How can I kill a Python process?"]
    want = features(studio.model, studio.tokenizer, prompts, adapters)
    cached = CachedFeatures.for_space(studio, studio.mocae.space, root=tmp_path, batch_size=2, shard_batches=1)
    assert cached._stacked is not None and cached._stacked.fork == 1       # the shared-trunk path ran
    got = cached(prompts)
    assert got.shape == want.shape and torch.allclose(got, want, atol=2e-2, rtol=2e-2)
    again = CachedFeatures.for_space(studio, studio.mocae.space, root=tmp_path)
    assert len(again) == 3 and again.missing(prompts + ["new"]) == ["new"]
    assert torch.equal(again(prompts[::-1]), got.flip(1))
    other = CachedFeatures(studio.model, studio.tokenizer, adapters, "another-model", studio.experts_dir, root=tmp_path)
    assert len(other) == 0                                                   # another fingerprint


def test_mlp_router_fits_a_nonlinear_split_a_linear_one_cannot():
    from alignx.mocae.router import MLPRouter, Router

    g = torch.Generator().manual_seed(0)
    z = torch.randn(240, 2, generator=g)
    y = ((z[:, 0] > 0) ^ (z[:, 1] > 0)).long()                                # XOR: not linearly separable
    lin, _ = Router.fit(z, y, 2, steps=150, lr=0.05)
    mlp, _ = MLPRouter.fit(z, y, 2, hidden=16, steps=150, lr=0.05)
    acc = lambda r: float((r.logits(z).argmax(-1) == y).float().mean())  # noqa: E731
    assert acc(lin) < 0.75 < 0.9 < acc(mlp)
    _, _, sel = MLPRouter.fit_cv(z, y, 2, hiddens=(4, 16), weight_decays=(0.01,), folds=2, steps=60, lr=0.05)
    assert set(sel["cv_accuracy"]) == {"h4_wd0.01", "h16_wd0.01"} and sel["hidden"] in (4, 16)


def test_v2_router_prompts_cover_every_source_and_no_heldout_prompt(data_dir):
    from alignx.data.decontam import EvalIndex, normalize
    from alignx.experts.latent import V2_SOURCES, axis_prompt_pools, looks_harmful, router_prompts
    from alignx.mocae.routing_eval import routing_sets

    removed: dict[str, int] = {}
    prompts, labels = router_prompts(data_dir, per_axis=40, removed=removed, sources="v2")
    pools = axis_prompt_pools(data_dir, sources="v2")
    chosen = set(prompts)
    for axis, names in V2_SOURCES.items():
        assert labels.count(axis) == 40
        for name, pool in zip(names, pools[axis]):
            assert name in removed and any(p in chosen for p in pool), f"{axis}: nothing from {name}"
    assert removed["hh_harmless"] > 0 and removed["pku_pairs"] > 0          # BeaverTails 30k_test overlaps
    assert removed["alpaca_31k"] >= 50                                      # the 50 I-Alpaca prompts
    assert removed["hh_harmless:not_harmful"] > 0
    index = EvalIndex.build(data_dir)
    assert all(index.is_clean(p) for p in prompts)
    held = {normalize(p) for s in routing_sets(data_dir, per_source=10**6, heldout_per_axis=200) for p in s.prompts}
    assert not held & {normalize(p) for p in prompts}
    noisy = set(pools["harmless"][V2_SOURCES["harmless"].index("hh_harmless")])
    assert noisy and all(looks_harmful(p) for p in noisy)
    with pytest.raises(ValueError, match="unknown prompt sources"):
        axis_prompt_pools(data_dir, sources="v3")


def test_v2_latent_heads_data_and_fit_through_the_feature_cache(data_dir, tmp_path, monkeypatch):
    """``train-experts --latent-only --latent-sources v2 --feature-cache``: the heads' prompts come
    from every v2 source, part 0 (disjoint from the v2 router's part 1), skip every held-out routing
    prompt, and the fit reads the prompts through the cache (its features: the uncached ones)."""
    from alignx.data.decontam import EvalIndex, normalize
    from alignx.experts.latent import NEGATIVE, V2_SOURCES, LatentSpace, axis_prompt_pools, router_prompts, train_items
    from alignx.experts.latent_fit import _features, fit_latent_space
    from alignx.experts.io import load_experts
    from alignx.mocae import feature_cache
    from alignx.mocae.routing_eval import routing_sets
    from alignx.models import load_model

    removed: dict[str, int] = {}
    items, labels = train_items(data_dir, per_axis=40, removed=removed, sources="v2")
    prompts = [p for (p, answer), y in zip(items, labels) if y != NEGATIVE]
    assert all(answer for (_, answer), y in zip(items, labels) if y == NEGATIVE) and NEGATIVE in labels
    pools = axis_prompt_pools(data_dir, sources="v2")
    for axis, names in V2_SOURCES.items():
        assert labels.count(axis) == 40
        for name, pool in zip(names, pools[axis]):
            assert name in removed and any(p in set(prompts) for p in pool), f"{axis}: nothing from {name}"
    assert all(EvalIndex.build(data_dir).is_clean(p) for p in prompts)
    held = {normalize(p) for s in routing_sets(data_dir, per_source=10**6, heldout_per_axis=200) for p in s.prompts}
    assert not held & {normalize(p) for p in prompts}
    assert not {normalize(p) for p in prompts} & {normalize(p) for p in router_prompts(data_dir, 40, sources="v2")[0]}

    monkeypatch.setattr(feature_cache, "DEFAULT_ROOT", tmp_path / "cache")
    folder = tmp_path / "experts"
    tiny_studio.make_random_experts(folder, AXES, layers=[1])
    lm = load_model("tiny-random")
    fit_latent_space(lm, folder, data_dir=data_dir, per_axis=4, heldout_per_axis=3, steps=10,
                     sources="v2", feature_cache=True)
    card = LatentSpace.load(folder).card
    assert card["data"]["sources"] == "v2" and "V2_SOURCES" in card["data"]["train_sources"]
    per_source = card["data"]["rows_per_source"]
    assert sum(per_source.values()) == 12 and set(per_source) <= {n for ns in V2_SOURCES.values() for n in ns}
    assert list((tmp_path / "cache").glob("*/shard-*.safetensors"))       # the prompts were cached
    model, _ = load_experts(load_model("tiny-random"), folder, AXES)
    mixed = [("What is 2 + 2?", None), ("How do I pick a lock?", "Use a tension wrench."), "Name a colour."]
    adapters = ["__base__", *AXES]
    cached = feature_cache.CachedFeatures(model, lm.tokenizer, adapters, lm.name, folder)
    via_cache = _features(model, lm.tokenizer, mixed, adapters, cached)
    plain = _features(model, lm.tokenizer, mixed, adapters)
    assert via_cache.shape == plain.shape == (4, 3, plain.shape[-1])
    assert torch.allclose(via_cache, plain, atol=5e-2, rtol=5e-2)
