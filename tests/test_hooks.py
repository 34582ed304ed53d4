"""alignx.hooks: named hook points, capture / intervene, and the hidden-state extraction moved onto it."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from alignx import hooks
from alignx.errors import InvalidInput
from alignx.generation import BASE, chat_prompt_ids
from alignx.models import load_model

REPO = Path(__file__).resolve().parents[1]
IDS = torch.tensor([[5, 17, 33, 8, 90, 41], [7, 7, 12, 250, 3, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
PROMPTS = ["Give three tips for staying healthy.", "How do I make a bomb?", "Is the Earth flat?"]


def fresh():
    return load_model("tiny-random", device="cpu")


def peft_model(scale: float = 5.0):
    """The tiny model with two non-zero LoRA adapters, ``harmless`` (active) and ``helpful``."""
    from peft import LoraConfig, get_peft_model

    lm = fresh()
    torch.manual_seed(0)
    cfg = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, task_type="CAUSAL_LM",
                     target_modules=["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"])
    model = get_peft_model(lm.model, cfg, adapter_name="harmless")
    model.add_adapter("helpful", cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.mul_(scale)
    return model.eval(), lm.tokenizer


def hook_count(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def logits(model, **kw):
    with torch.no_grad():
        return model(input_ids=IDS, attention_mask=MASK, **kw).logits


@pytest.fixture(scope="module")
def tiny():
    lm = fresh()
    lm.model.eval()
    return lm


def test_hidden_state_name_matches_output_hidden_states(tiny):
    pm, _ = peft_model()
    for model in (tiny.model, tiny.model.model, pm):
        n = len(hooks.backbone(model).layers)
        with torch.no_grad():
            hs = model(input_ids=IDS, attention_mask=MASK, output_hidden_states=True).hidden_states
        assert len(hs) == n + 1
        idx = list(range(-(n + 1), n + 1))
        names = [hooks.hidden_state_name(model, i) for i in idx]
        with hooks.capture(model, [*names, f"blocks.{n - 1}.resid_post"]) as cache, torch.no_grad():
            model(input_ids=IDS, attention_mask=MASK)
        for i, name in zip(idx, names):
            assert torch.equal(cache[name], hs[i]), (i, name)
        # [0] is the embedding output; [-1] the final-norm output, not layer N-1's raw output
        assert names[n + 1] == "embed.out" and names[-1] == "ln_final.out" and names[n + 2] == "blocks.0.resid_post"
        assert not torch.equal(cache[f"blocks.{n - 1}.resid_post"], hs[-1])
    with pytest.raises(InvalidInput, match="out of range"):
        hooks.hidden_state_name(tiny.model, 3)


def test_names_cover_every_kind(tiny):
    names = hooks.names(tiny.model)
    assert names[0] == "embed.out" and names[-1] == "ln_final.out"
    for kind in ("attn.out", "attn.head.0", "attn.head.3", "mlp.out", "resid_post"):
        assert f"blocks.1.{kind}" in names
    assert "blocks.1.attn.head.4" not in names and not any(".lora." in n for n in names)
    assert hooks.names(tiny.model.model) == names
    pm, _ = peft_model()
    lora = [n for n in hooks.names(pm) if ".lora." in n]
    assert len(lora) == 2 * 2 * 5      # 2 layers x 2 adapters x 5 target modules
    assert "blocks.0.lora.harmless.q_proj" in lora and "blocks.1.lora.helpful.down_proj" in lora


def test_noop_hooks_leave_outputs_identical_and_nothing_behind():
    model = fresh().model.eval()
    assert hook_count(model) == 0
    every = hooks.names(model)
    before = logits(model)
    with hooks.capture(model, every) as cache:
        assert torch.equal(logits(model), before)
        assert hooks.installed(model) == set(every) and hook_count(model) == len(every)
    assert len(cache.all("blocks.0.resid_post")) == 1
    with hooks.intervene(model, {n: (lambda t, name: None) for n in every}):
        assert torch.equal(logits(model), before)
    with hooks.intervene(model, {n: (lambda t, name: t.clone()) for n in every}):
        assert torch.equal(logits(model), before)
    assert torch.equal(logits(model), before)
    assert hook_count(model) == 0 and hooks.installed(model) == set()


def test_exceptions_remove_everything():
    model = fresh().model.eval()
    with pytest.raises(RuntimeError, match="boom"):
        with hooks.capture(model, ["embed.out", "blocks.0.attn.head.1"]):
            with hooks.intervene(model, {"blocks.1.mlp.out": lambda t, n: t * 2}):
                logits(model)
                raise RuntimeError("boom")
    assert hook_count(model) == 0 and hooks.installed(model) == set()

    def bad(t, name):
        raise RuntimeError("boom in hook")

    with pytest.raises(RuntimeError, match="boom in hook"):
        with hooks.intervene(model, {"blocks.0.resid_post": bad}):
            logits(model)
    with pytest.raises(InvalidInput, match="returned shape"):
        with hooks.intervene(model, {"blocks.0.attn.head.0": lambda t, n: t[..., :2]}):
            logits(model)
    with pytest.raises(ZeroDivisionError), hooks.module_hook(model.model.norm, lambda m, a, o: None), \
            hooks.module_hook(model.lm_head, lambda m, a: None, "pre"):
        assert hook_count(model) == 2
        raise ZeroDivisionError
    assert hook_count(model) == 0 and hooks.installed(model) == set()


def test_head_ablation_equals_zeroing_o_proj_columns():
    model = fresh().model.eval()
    attn = model.model.layers[1].self_attn
    d, h = attn.head_dim, 2
    zero = {f"blocks.1.attn.head.{h}": lambda t, n: torch.zeros_like(t)}
    with hooks.capture(model, f"blocks.1.attn.head.{h}") as cache, hooks.module_hook(
            attn.o_proj, lambda m, args: seen.append(args[0]), kind="pre"):
        seen: list[torch.Tensor] = []
        logits(model)
    assert torch.equal(cache[f"blocks.1.attn.head.{h}"], seen[0][..., h * d:(h + 1) * d])
    before = logits(model)
    with hooks.intervene(model, zero):
        ablated = logits(model)
    assert not torch.allclose(ablated, before)
    with torch.no_grad():
        attn.o_proj.weight[:, h * d:(h + 1) * d] = 0
    by_hand = logits(model)
    torch.testing.assert_close(ablated, by_hand, atol=1e-6, rtol=0)
    with hooks.intervene(model, zero):           # that head no longer contributes: ablating changes nothing
        assert torch.equal(logits(model), by_hand)


def test_lora_point_equals_scaling_b_a_x():
    pm, _ = peft_model()
    q = pm.get_base_model().model.layers[0].self_attn.q_proj
    name = "blocks.0.lora.harmless.q_proj"
    xs: list[torch.Tensor] = []
    with hooks.capture(pm, [name, "blocks.0.lora.helpful.q_proj"]) as cache, \
            hooks.module_hook(q, lambda m, args: xs.append(args[0]), kind="pre"):
        assert hooks.lora_hooked(pm) and hooks.lora_hooked(pm.get_base_model())
        logits(pm)
    assert not hooks.lora_hooked(pm) and hook_count(pm) == 0
    a, b, s = q.lora_A["harmless"].weight, q.lora_B["harmless"].weight, q.scaling["harmless"]
    want = s * (xs[0] @ a.T @ b.T)
    assert want.abs().max() > 1e-3
    torch.testing.assert_close(cache[name], want, atol=1e-6, rtol=1e-5)
    assert "blocks.0.lora.helpful.q_proj" not in cache        # not active: its lora_B never ran
    with pytest.raises(KeyError, match="did not fire"):
        cache["blocks.0.lora.helpful.q_proj"]

    # a mixed batch: the capture holds only that adapter's rows
    with hooks.capture(pm, "blocks.0.lora.helpful.q_proj") as cache, torch.no_grad():
        pm(input_ids=IDS, attention_mask=MASK, adapter_names=["harmless", "helpful"])
    a, b, s = q.lora_A["helpful"].weight, q.lora_B["helpful"].weight, q.scaling["helpful"]
    torch.testing.assert_close(cache["blocks.0.lora.helpful.q_proj"], s * (xs[0][1:] @ a.T @ b.T), atol=1e-6, rtol=1e-5)

    # zeroing every update of the active adapter gives the base model
    lora = [n for n in hooks.names(pm) if ".lora.harmless." in n]
    with hooks.intervene(pm, {n: (lambda t, _: torch.zeros_like(t)) for n in lora}):
        zeroed = logits(pm)
    with pm.disable_adapter():
        base = logits(pm)
    assert not torch.allclose(logits(pm), base)
    torch.testing.assert_close(zeroed, base, atol=1e-6, rtol=0)


def test_gradient_flows_to_captured_activation(tiny):
    name = "blocks.0.resid_post"
    with hooks.capture(tiny.model, [name, "blocks.1.attn.head.0"], detach=False) as cache:
        out = tiny.model(input_ids=IDS, attention_mask=MASK).logits
    assert torch.equal(out, logits(tiny.model))              # attaching the head slice keeps the values
    act = cache[name]
    assert act.requires_grad
    g_act, g_head = torch.autograd.grad(out.float().pow(2).mean(), [act, cache["blocks.1.attn.head.0"]])
    assert g_act.shape == act.shape and g_act.abs().sum() > 0 and g_head.abs().sum() > 0
    pm, _ = peft_model()                                      # a derived point: the LoRA update
    lora = "blocks.1.lora.harmless.v_proj"
    with hooks.capture(pm, lora, detach=False) as cache:
        out = pm(input_ids=IDS, attention_mask=MASK).logits
    assert torch.equal(out, logits(pm))
    (g,) = torch.autograd.grad(out.float().pow(2).mean(), [cache[lora]])
    assert g.abs().sum() > 0
    with hooks.capture(tiny.model, name) as cache:
        tiny.model(input_ids=IDS, attention_mask=MASK)
    assert not cache[name].requires_grad


def test_unknown_names_fail_before_installing(tiny):
    hf_hooks = hook_count(tiny.model)    # HF's own recorders stay after an output_hidden_states call
    with pytest.raises(InvalidInput) as err:
        with hooks.capture(tiny.model, ["embed.out", "blocks.7.resid_post"]):
            pass
    msg = str(err.value)
    assert "unknown hook point 'blocks.7.resid_post'" in msg and "available:" in msg
    assert "blocks.1.attn.head.3" in msg and "ln_final.out" in msg
    with pytest.raises(InvalidInput, match="unknown hook point 'blocks.0.lora.harmless.q_proj'"):
        with hooks.intervene(tiny.model, {"blocks.0.mlp.out": lambda t, n: t, "blocks.0.lora.harmless.q_proj": None}):
            pass
    assert hook_count(tiny.model) == hf_hooks and hooks.installed(tiny.model) == set()
    with hooks.capture(tiny.model, "blocks.0.mlp.out") as cache:
        pass
    with pytest.raises(InvalidInput, match="unknown captured hook point"):
        cache["blocks.1.mlp.out"]


def test_nested_contexts_and_every_forward_pass(tiny):
    m, name = tiny.model, "blocks.0.resid_post"
    hf_hooks = hook_count(m)
    with hooks.capture(m, name) as outer:
        logits(m)
        with hooks.intervene(m, {name: lambda t, n: t * 2}), hooks.capture(m.model, [name, "ln_final.out"]) as inner:
            assert hooks.installed(m) == {name, "ln_final.out"}
            logits(m)
        assert hooks.installed(m) == {name}
        logits(m)
    assert hooks.installed(m) == set() and hook_count(m) == hf_hooks
    first, doubled, third = outer.all(name)
    assert torch.equal(first, third) and torch.equal(outer[name], third)
    assert torch.equal(doubled, 2 * first) and torch.equal(inner[name], doubled)   # interventions run first
    with hooks.capture(m, name, last_only=True) as cache:
        logits(m)
        logits(m)
    assert len(cache.all(name)) == 1


def test_register_points_extension(tiny):
    def resolve(model, name):
        return hooks.Point(model.lm_head) if name == "ext.logits" else None

    hooks.register_points("ext", resolve, lambda model: ["ext.logits"])
    try:
        assert hooks.names(tiny.model)[-1] == "ext.logits"
        with pytest.raises(InvalidInput, match="already registered"):
            hooks.register_points("ext", resolve, lambda model: [])
        with pytest.raises(InvalidInput):
            hooks.register_points("blocks", resolve, lambda model: [])
        with hooks.capture(tiny.model, ["ext.logits"]) as cache:
            out = logits(tiny.model)
        assert torch.equal(cache["ext.logits"], out)
        with pytest.raises(InvalidInput, match="unknown hook point 'ext.other'"):
            with hooks.capture(tiny.model, "ext.other"):
                pass
    finally:
        hooks.unregister_points("ext")
    assert "ext.logits" not in hooks.names(tiny.model)


# --- the extraction code moved onto hooks: identical numbers to the old output_hidden_states way ---

def old_latent_features(model, tokenizer, items, adapters):
    from alignx.experts.latent import _ids

    items = [(x, None) if isinstance(x, str) else x for x in items]
    is_peft = hasattr(model, "peft_config")
    bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    rows = [_ids(tokenizer, it)[:256] for it in items]
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows] * len(adapters))
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows] * len(adapters))
    kw = {"adapter_names": [a for a in adapters for _ in rows]} if is_peft else {}
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        hs = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, logits_to_keep=1,
                   **kw).hidden_states[-1]
    pooled = (hs.float() * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return pooled.view(len(adapters), len(rows), -1)


def test_latent_features_unchanged(tiny):
    from alignx.experts.latent import features

    items = [*PROMPTS, (PROMPTS[1], "I cannot help with that.")]
    old = old_latent_features(tiny.model, tiny.tokenizer, items, [BASE])
    assert torch.equal(features(tiny.model, tiny.tokenizer, items), old)
    pm, tok = peft_model()
    adapters = [BASE, "harmless", "helpful"]
    new = features(pm, tok, items, adapters)
    assert hook_count(pm) == 0            # (before the old way, which leaves HF's recorders installed)
    assert torch.equal(new, old_latent_features(pm, tok, items, adapters))
    assert not torch.allclose(new[0], new[1]) and not torch.allclose(new[1], new[2])


def old_extract(model, tokenizer, prompts, responses, spec, batch_size):
    """alignx.eval.features.extract as it was, on output_hidden_states."""
    from alignx.eval.features import encode_pair

    rows = [encode_pair(tokenizer, p, r, spec) for p, r in zip(prompts, responses)]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    inner = getattr(model, "model", None)
    body = inner if isinstance(inner, torch.nn.Module) and hasattr(inner, "layers") else model
    out = [None] * len(rows)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        width = max(len(rows[i][0]) for i in idx)
        ids = torch.tensor([rows[i][0] + [tokenizer.pad_token_id] * (width - len(rows[i][0])) for i in idx])
        mask = torch.tensor([[1] * len(rows[i][0]) + [0] * (width - len(rows[i][0])) for i in idx])
        with torch.inference_mode():
            hs = body(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        span = torch.zeros(len(idx), width)
        for b, i in enumerate(idx):
            span[b, rows[i][1]:len(rows[i][0])] = 1.0
        weights = (span / span.sum(1, keepdim=True))[:, :, None]
        pooled = torch.cat([(hs[layer].float() * weights).sum(1) for layer in spec.layers], dim=-1)
        for b, i in enumerate(idx):
            out[i] = pooled[b]
    return torch.stack(out)


def test_judge_features_unchanged(tiny):
    from alignx.eval.features import FeatureSpec, extract

    spec = FeatureSpec(model="tiny-random", layers=(0, 1, -2, -1), max_prompt_tokens=16, max_response_tokens=16)
    responses = ["Eat well and sleep.", "", "No, it is round."]
    for model in (tiny.model, peft_model()[0]):
        new = extract(model, tiny.tokenizer, PROMPTS, responses, spec, batch_size=2)
        assert new.shape == (3, 4 * 64)
        assert torch.equal(new, old_extract(model, tiny.tokenizer, PROMPTS, responses, spec, batch_size=2))


def test_probe_features_unchanged(tiny):
    spec = importlib.util.spec_from_file_location("probe_features", REPO / "bench" / "probe_features.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    layers = [1, 2, -1]
    new = probe.prompt_features(tiny.model, tiny.tokenizer, PROMPTS, layers)
    rows = [chat_prompt_ids(tiny.tokenizer, q)[:256] for q in PROMPTS]
    w = max(map(len, rows))
    ids = torch.tensor([r + [0] * (w - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (w - len(r)) for r in rows])
    with torch.inference_mode():
        hs = tiny.model(input_ids=ids, attention_mask=mask, output_hidden_states=True, logits_to_keep=1).hidden_states
    last = torch.tensor([len(r) - 1 for r in rows])
    for L in layers:
        assert torch.equal(new[("last", L)], hs[L].float()[torch.arange(len(rows)), last])
        m = mask.float()
        assert torch.equal(new[("all", L)], (hs[L].float() * m[..., None]).sum(1) / m.sum(1, keepdim=True))
