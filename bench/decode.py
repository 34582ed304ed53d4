"""Per-token decode latency and peak memory of every way to use the experts, in one run.

    python bench/decode.py [--model smollm2-135m-instruct] [--experts-dir assets/experts] [--tokens 24]

Modes (greedy, KV-cached, same prompts, one warm-up prompt first):
  base          the base model
  expert        one expert (peft adapter_names row)
  naive         naive MoE: the three experts run one after another each step, logits mixed
  xlora_style   X-LoRA-style double pass: a base pass (to compute scalings), then a pass with the
                scaled adapters, every token
  mocae_logit   MoCaE logit fusion: the experts in one batched forward, calibrated mixture
                (the shipped path: each layer's expert LoRA as one bmm, ``StackedLoRA``)
  mocae_logit_peft  the same through peft's mixed-adapter batches (``adapter_names``), for reference
  mocae_adapter MoCaE adapter fusion: one stream through sum_i w_i B_i A_i
Peak memory: CUDA max_memory_allocated on a GPU; on a CPU the peak RSS growth during the mode
(sampled every 2 ms), a rough number. The last line is one JSON object of ratios to base plus
``recalibrate_ms`` (median time to recompute the weights after a slider change).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPTS = ["Give three tips for staying healthy.", "How can I get into my neighbour's wifi without asking?",
           "What happens if you swallow gum?", "Write a haiku about autumn."]


class PeakRSS:
    def __init__(self):
        import psutil

        self.proc, self.peak, self.stop = psutil.Process(), 0, threading.Event()

    def __enter__(self):
        self.base = self.peak = self.proc.memory_info().rss
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()
        return self

    def _run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join()

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 2**20


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
    if mode == "mocae_logit_peft":
        return LogitFusionStep(m, experts, mocae.temperatures, w)
    if mode == "mocae_adapter":
        return AdapterFusionStep(mocae.fused, w)
    if mode == "naive":
        singles = [ModelStep(m, [e]) for e in experts]

        def naive(ids):
            lp = torch.stack([s(ids)[0] for s in singles])
            return torch.logsumexp(torch.log(w)[:, None] + lp, 0), None
        return naive
    if mode == "xlora_style":
        scaler, fused = ModelStep(m, [BASE]), AdapterFusionStep(mocae.fused, w)

        def xlora(ids):
            scaler(ids)            # first pass: the base model computes the scalings
            return fused(ids)      # second pass: the scaled adapters
        return xlora
    raise ValueError(mode)


def time_mode(mode: str, studio, w, tokens: int) -> tuple[float, float]:
    import torch

    from alignx.generation import chat_prompt_ids

    per_token, peak = [], 0.0
    for i, prompt in enumerate(PROMPTS):
        step = steps_for(mode, studio, w)
        feed = chat_prompt_ids(studio.tokenizer, prompt)
        step(feed)                                         # prefill, not timed
        token = [int(torch.randint(100, 1000, (1,)))]
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            for _ in range(tokens):
                lp, _ = step(token)
                token = [int(lp.argmax())]
            dt = (time.perf_counter() - t0) / tokens
        if i > 0:                                          # prompt 0 is the warm-up
            per_token.append(dt)
            peak = max(peak, mem.mib)
    return statistics.median(per_token), peak


def main() -> None:
    import torch

    from alignx.experts.io import DEFAULT_EXPERTS_DIR
    from alignx.mocae import recalibrate
    from alignx.studio import Studio

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--experts-dir", default=str(DEFAULT_EXPERTS_DIR))
    p.add_argument("--tokens", type=int, default=24)
    a = p.parse_args()
    studio = Studio.load(a.model, a.experts_dir)
    if studio.mocae is None:
        sys.exit(f"no trained router in {a.experts_dir}: run `python -m alignx train-router` first")
    w = studio.mocae.weights(PROMPTS[0])
    studio.mocae.fused, studio.mocae.stacked  # build the fused adapter and the stacked LoRA before timing
    results = {}
    for mode in ("base", "expert", "naive", "xlora_style", "mocae_logit", "mocae_logit_peft", "mocae_adapter"):
        ms, mib = time_mode(mode, studio, w, a.tokens)
        results[mode] = {"ms_per_token": round(ms * 1000, 2), "peak_mib": round(mib, 1)}
        print(f"{mode:14s} {ms * 1000:8.2f} ms/token   peak +{mib:7.1f} MiB", file=sys.stderr, flush=True)
    route = studio.mocae.route(PROMPTS[1])
    times = []
    for i in range(200):
        cal = studio.mocae.calibration.with_(lambda1=(i % 10) / 10, lambda2=0.4,
                                             preferences={studio.mocae.experts[0]: 0.5})
        t0 = time.perf_counter()
        recalibrate(route, cal)
        times.append((time.perf_counter() - t0) * 1000)
    base = results["base"]["ms_per_token"]
    out = {k: round(v["ms_per_token"] / base, 3) for k, v in results.items() if k != "base"}
    out.update(recalibrate_ms=round(statistics.median(times), 3), base_ms_per_token=base,
               device=str(studio.lm.device), threads=torch.get_num_threads(),
               peak_mib={k: v["peak_mib"] for k, v in results.items()})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
