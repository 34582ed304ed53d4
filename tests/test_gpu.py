"""The GPU path on a CUDA device (``pytest -m gpu``; ``bash bench/gpu.sh`` runs these): bf16 by
default, KV-cached greedy decoding against the full forward pass, a batch sized to the free memory,
and the decode bench's CUDA peak memory. Skipped where torch sees no GPU (this project's CPU CI)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

REPO = Path(__file__).resolve().parents[1]
# bf16 keeps 8 bits of mantissa: logits of this size (|x| < 8) are exact to ~0.03, so two tokens whose
# full-forward logits are that close may swap between the cached and the full computation.
BF16_TIE = 0.06


@pytest.fixture(scope="module")
def cuda_lm():
    from alignx.models import load_model

    return load_model("tiny-random")                     # device and dtype "auto"


def test_cuda_bf16_is_the_default(cuda_lm):
    want = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert cuda_lm.device.type == "cuda" and cuda_lm.dtype == want
    assert {p.dtype for p in cuda_lm.model.parameters()} == {want}
    assert {p.device.type for p in cuda_lm.model.parameters()} == {"cuda"}


def test_cached_greedy_decode_equals_full_forward(cuda_lm):
    """Each token of a KV-cached greedy stream is the argmax of the full forward pass over the prompt
    and the tokens before it (up to a bf16 near-tie), and the cached log-probs match the full ones."""
    from alignx.generation import ModelStep, Sampling, chat_prompt_ids
    from alignx.policy import SinglePolicy

    policy = SinglePolicy(cuda_lm.model, cuda_lm.tokenizer)
    for prompt in ("Is the Earth flat?", "Give three tips for staying healthy."):
        ids = chat_prompt_ids(cuda_lm.tokenizer, prompt)
        tokens = [e.token_id for e in policy.stream(prompt, Sampling(max_new_tokens=24))]
        assert tokens, "the stream produced no token"
        with torch.inference_mode():
            full = cuda_lm.model(torch.tensor([ids + tokens], device="cuda")).logits[0].float()
        step, cached = ModelStep(cuda_lm.model), []
        feed = ids
        for t in tokens:
            cached.append(step.logprobs(feed)[0])
            feed = [t]
        for t, (tok, lp) in enumerate(zip(tokens, cached)):
            row = full[len(ids) - 1 + t]
            best = int(row.argmax())
            assert tok == best or float(row[best] - row[tok]) <= BF16_TIE, (prompt, t, tok, best)
            assert float((torch.log_softmax(row, -1) - lp).abs().max()) <= 2 * BF16_TIE


def test_batch_sized_to_free_memory_runs(cuda_lm):
    from alignx.generation import Sampling
    from alignx.memory import Shape, auto_batch_size, batch_for_memory
    from alignx.policy import SinglePolicy

    free, total = torch.cuda.mem_get_info()
    size = auto_batch_size(cuda_lm.model, tokens=64)
    assert size == batch_for_memory(free, Shape.of(cuda_lm.model), 64) and 1 <= size <= 256
    prompts = [f"Tip number {i} for staying healthy?" for i in range(min(size, 32))]
    torch.cuda.reset_peak_memory_stats()
    out = SinglePolicy(cuda_lm.model, cuda_lm.tokenizer).generate(prompts, Sampling(max_new_tokens=8), batch_size=size)
    assert len(out) == len(prompts) and torch.cuda.max_memory_allocated() < total


def test_decode_bench_reports_cuda_peak_memory(tmp_path):
    sys.path.insert(0, str(REPO / "tests"))
    from tiny_studio import build

    build(tmp_path / "studio")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    run = subprocess.run([sys.executable, str(REPO / "bench" / "decode.py"), "--model", "tiny-random", "--experts-dir",
                          str(tmp_path / "studio"), "--tokens", "4", "--rounds", "1", "--device", "cuda"],
                         capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["device"].startswith("cuda")
    assert set(result["cuda_peak_ratio"]) >= {"expert", "mocae_logit", "mocae_adapter"}
    assert all(v > 0 for v in result["cuda_peak_ratio"].values())
