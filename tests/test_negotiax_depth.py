"""NegotiaX pathways of depth m > 0 on a 4-layer tiny Llama: each objective runs the layers above
the fork with its own update, sharing the trunk and its KV cache. Untrained = the base; off = the
base; cached decode = the full forward; a padded batch = each row alone; save / load; Train_MAC
lowers the loss; the pathway updates are trained."""
from __future__ import annotations

import pytest
import torch

from alignx.negotiax import preset
from alignx.negotiax.core import NegotiaX
from alignx.negotiax.policy import NegotiaXPolicy
from alignx.policy import SinglePolicy

OBJ = ("harmless", "helpful", "honest")
PROMPT = "Name two colours of the sky."


@pytest.fixture(scope="module")
def four():
    from transformers import LlamaForCausalLM

    from alignx.tiny import tiny_config, tiny_tokenizer

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_config(len(tok), layers=4)).eval(), tok


def _nx(four, depth=2, randomise=True):
    model, tok = four
    nx = NegotiaX.fresh(model, tok, OBJ, preset("tiny", fork_layer=1, depth=depth))
    if randomise:
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            nx.circuit.W_o.copy_(torch.randn(nx.circuit.W_o.shape, generator=g) * 0.5)
            for p in nx.circuit.pathways.B.values():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return nx


def _logits(policy, ids=None, mask=None):
    ids = torch.tensor([policy.prompt_ids(PROMPT)]) if ids is None else ids
    with torch.no_grad():
        return policy.forward_logits(ids, torch.ones_like(ids) if mask is None else mask)


def test_untrained_and_off_are_the_base(four):
    from alignx.generation import Sampling

    model, tok = four
    base = SinglePolicy(model, tok)
    fresh = NegotiaXPolicy(_nx(four, randomise=False))
    assert torch.equal(_logits(fresh), _logits(base))
    s = Sampling(max_new_tokens=6)
    assert fresh.answer(PROMPT, s) == base.answer(PROMPT, s)
    nx = _nx(four)
    assert not torch.allclose(_logits(NegotiaXPolicy(nx)), _logits(base))
    assert torch.equal(_logits(NegotiaXPolicy(nx, "off")), _logits(base))
    from alignx.hooks import backbone

    assert not any(l._forward_hooks or l._forward_pre_hooks for l in backbone(model).layers)


def test_each_pathway_carries_its_own_update(four):
    """With alpha one-hot on objective o, only pathway o's updates matter: changing helpful's
    updates moves the helpful-only output and leaves the harmless-only output unchanged."""
    nx = _nx(four)
    ids = torch.tensor([NegotiaXPolicy(nx).prompt_ids(PROMPT)])

    def forced(o):
        with torch.no_grad(), nx.active("full", force=o):
            return nx.model(input_ids=ids).logits

    before = {o: forced(o) for o in OBJ}
    with torch.no_grad():
        for p in nx.circuit.pathways.B.values():
            p[OBJ.index("helpful")].mul_(3.0)
    assert torch.equal(forced("harmless"), before["harmless"]) and torch.equal(forced("honest"), before["honest"])
    assert not torch.allclose(forced("helpful"), before["helpful"])


def test_kv_cached_decode_and_padded_batch_equal_the_full_forward(four):
    nx = _nx(four)
    pol = NegotiaXPolicy(nx)
    ids = pol.prompt_ids(PROMPT) + [5, 17, 33, 8]
    n = len(pol.prompt_ids(PROMPT))
    step = pol.make_step(PROMPT)
    steps = [step(ids[:n])[0]]
    for t in ids[n:]:
        lp, report = step([t])
        steps.append(lp)
    full = torch.log_softmax(_logits(pol, torch.tensor([ids]))[0].float(), -1)
    for i, lp in enumerate(steps):
        assert torch.allclose(lp, full[n - 1 + i], atol=1e-4)
    assert set(report) == set(OBJ) and sum(report.values()) == pytest.approx(1.0)
    short = ids[:n]
    pad = four[1].pad_token_id
    batch = torch.tensor([ids, [pad] * (len(ids) - n) + short])                 # left-padded second row
    mask = (torch.arange(len(ids))[None] >= torch.tensor([[0], [len(ids) - n]])).long()
    both = _logits(pol, batch, mask)
    assert torch.allclose(both[0], _logits(pol, torch.tensor([ids]))[0], atol=1e-4)
    assert torch.allclose(both[1, -1], _logits(pol, torch.tensor([short]))[0, -1], atol=1e-4)


def test_save_load_and_train(four, tmp_path):
    from alignx.negotiax.train import train_mac, train_preset

    nx = _nx(four)
    before = _logits(NegotiaXPolicy(nx))
    nx.save(tmp_path / "nx", {"base_model": "four"})
    again = NegotiaX.load(tmp_path / "nx", four[0], four[1], "four")
    assert again.cfg.depth == 2 and torch.equal(_logits(NegotiaXPolicy(again)), before)
    data = {"helpful": [(f"List {i} fruits.", "Apple, pear and plum are fruits.") for i in range(6)],
            "harmless": [(f"How do I hurt person {i}?", "I'm sorry, but I cannot help with that.") for i in range(6)],
            "honest": [(f"Is claim {i} true?", "I am not sure; the evidence is mixed.") for i in range(6)]}
    fresh = _nx(four, randomise=False)
    cfg = fresh.cfg
    path = train_mac(fresh, data, cfg, train_preset("tiny", steps=6), tmp_path, name="deep", base_model="four")
    losses = [l for _, l in NegotiaX.load(path, four[0], four[1]).card["losses"]]
    assert losses[-1] < losses[0]
    assert any(float(p.detach().abs().sum()) > 0 for p in fresh.circuit.pathways.B.values())   # the pathways learned


def test_batched_generation_equals_one_prompt_at_a_time(four):
    from alignx.generation import Sampling

    pol, s = NegotiaXPolicy(_nx(four)), Sampling(max_new_tokens=6)
    prompts = [PROMPT, "Hi", "Tell me a much longer story about the sea and its many ships."]
    assert pol.generate(prompts, s, batch_size=3) == [pol.answer(p, s) for p in prompts]
