"""Per-token decode latency and memory of every way to use the experts, in one run.

    python bench/decode.py [--model smollm2-135m-instruct] [--experts-dir assets/experts] [--tokens 24] [--rounds 5]

Modes (greedy, KV-cached, same prompts), measured in interleaved rounds (``bench/rounds.py``:
each ratio is the median over rounds of mode / base in the same round):
  base          the base model
  expert        one expert (peft adapter_names row)
  naive         naive MoE: the three experts run one after another each step, logits mixed
  xlora_style   X-LoRA-style double pass: a base pass (to compute scalings), then a pass with the
                scaled adapters, every token
  mocae_logit   MoCaE logit fusion, the shipped path: the layers below the experts' first LoRA
                layer run once (shared trunk), then the expert rows fork; each layer's expert
                LoRA as one bmm (``StackedLoRA``)
  mocae_logit_full_batch  the same without the shared trunk: every layer on every expert row
  mocae_logit_peft  the same through peft's mixed-adapter batches (``adapter_names``), for reference
  mocae_adapter MoCaE adapter fusion: one stream through sum_i w_i B_i A_i
Memory: CUDA max_memory_allocated per mode on a GPU; everywhere, the KV cache each mode holds
after a prompt and its answer (tensor accounting; RSS does not resolve these sizes). The last
line is one JSON object of ratios to base plus ``recalibrate_ms`` (median time to recompute the
weights after a slider change).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPTS = ["Give three tips for staying healthy.", "How can I get into my neighbour's wifi without asking?",
           "What happens if you swallow gum?", "Write a haiku about autumn."]


def steps_for(mode: str, studio, w):
    import torch

    from alignx.generation import BASE, ModelStep
    from alignx.mocae.fusion import AdapterFusionStep, LogitFusionStep

    m, mocae = studio.model, studio.mocae
    experts = mocae.experts
    if mode == "base":
        return ModelStep(m, [BASE])
    if mode == "expert":
        return ModelStep(m, [experts[0]])
    if mode == "mocae_logit":
        return LogitFusionStep(m, experts, mocae.temperatures, w, None, mocae.stacked)
    if mode == "mocae_logit_full_batch":
        return LogitFusionStep(m, experts, mocae.temperatures, w, None, full_batch(studio))
    if mode == "mocae_logit_peft":
        return LogitFusionStep(m, experts, mocae.temperatures, w)
    if mode == "mocae_adapter":
        return AdapterFusionStep(mocae.fused, w)
    if mode == "naive":
        return Naive([ModelStep(m, [e]) for e in experts], w)
    if mode == "xlora_style":
        return XLoRA(ModelStep(m, [BASE]), AdapterFusionStep(mocae.fused, w))
    raise ValueError(mode)


class Naive:
    """The experts one after another each step, log-probs mixed by w."""

    def __init__(self, singles, w):
        self.singles, self.w = singles, w

    def __call__(self, ids):
        import torch

        lp = torch.stack([s(ids)[0] for s in self.singles])
        return torch.logsumexp(torch.log(self.w)[:, None] + lp, 0), None

    @property
    def past(self):
        return [s.past for s in self.singles]


class XLoRA:
    def __init__(self, scaler, fused):
        self.scaler, self.fused = scaler, fused

    def __call__(self, ids):
        self.scaler(ids)             # first pass: the base model computes the scalings
        return self.fused(ids)       # second pass: the scaled adapters

    @property
    def past(self):
        return [self.scaler.past, self.fused.past]


_FULL: dict = {}


def full_batch(studio):
    """A StackedLoRA of the same experts without the shared trunk (built once)."""
    from alignx.mocae.stacked import StackedLoRA

    if "s" not in _FULL:
        _FULL["s"] = StackedLoRA(studio.model, studio.mocae.experts, share_trunk=False)
    return _FULL["s"]


def main() -> None:
    import torch

    from alignx.experts.io import DEFAULT_EXPERTS_DIR
    from alignx.mocae import recalibrate
    from alignx.studio import Studio

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--experts-dir", default=str(DEFAULT_EXPERTS_DIR))
    p.add_argument("--tokens", type=int, default=24)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="auto", help="auto (the GPU when there is one) | cpu | cuda")
    a = p.parse_args()
    studio = Studio.load(a.model, a.experts_dir, device=a.device)
    if studio.mocae is None:
        sys.exit(f"no trained router in {a.experts_dir}: run `python -m alignx train-router` first")
    w = studio.mocae.weights(PROMPTS[0])
    studio.mocae.fused, studio.mocae.stacked  # build the fused adapter and the stacked LoRA before timing
    from alignx.generation import chat_prompt_ids
    from rounds import cache_bytes, interleaved, ratios

    modes = ("base", "expert", "naive", "xlora_style", "mocae_logit", "mocae_logit_full_batch", "mocae_logit_peft",
             "mocae_adapter")
    full_batch(studio)
    kv, cuda_peak = {}, {}
    cuda = torch.cuda.is_available()

    def make(mode):
        def build():
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            return steps_for(mode, studio, w)
        return build

    def on_run(mode, step):
        kv[mode] = max(kv.get(mode, 0), cache_bytes(step))
        if cuda:
            cuda_peak[mode] = max(cuda_peak.get(mode, 0), torch.cuda.max_memory_allocated())

    feeds = [chat_prompt_ids(studio.tokenizer, q) for q in PROMPTS]
    rounds = interleaved({k: make(k) for k in modes}, feeds, a.tokens, a.rounds, on_run)
    route = studio.mocae.route(PROMPTS[1])
    times = []
    for i in range(200):
        cal = studio.mocae.calibration.with_(lambda1=(i % 10) / 10, lambda2=0.4,
                                             preferences={studio.mocae.experts[0]: 0.5})
        t0 = time.perf_counter()
        recalibrate(route, cal)
        times.append((time.perf_counter() - t0) * 1000)
    out = {k: v for k, v in ratios(rounds).items()}
    base_ms = statistics.median(r[1] for r in rounds["base"]) * 1000
    out.update(recalibrate_ms=round(statistics.median(times), 3), base_ms_per_token=round(base_ms, 2),
               kv_cache_ratio={k: round(v / kv["base"], 3) for k, v in kv.items() if k != "base" and kv["base"]},
               rounds=a.rounds, tokens=a.tokens, device=str(studio.lm.device), threads=torch.get_num_threads())
    if cuda:
        out["cuda_peak_ratio"] = {k: round(v / cuda_peak["base"], 3) for k, v in cuda_peak.items() if k != "base"}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
