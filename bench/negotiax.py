"""NegotiaX's computational cost against the base, MoCaE logit and MoCaE adapter fusion, in one run.

    python bench/negotiax.py [--model smollm2-135m-instruct] [--circuit assets/negotiax/full] [--tokens 24] [--rounds 5]

Modes are measured in interleaved rounds (base, negotiax, module1, mocae_logit, mocae_adapter,
base, negotiax, ...); each ratio is the median over rounds of (mode / base in that round), so one
burst of load on a shared machine moves one round, not a ratio. Per mode and round:
- decode: ms per generated token, tokens counted (greedy, KV-cached, after a prefill);
- prefill: ms to process the chat-templated prompt;
- peak memory: CUDA ``max_memory_allocated`` on a GPU; on a CPU the tensor accounting of the
  circuit's extra activations is reported instead (parameters + per-token buffers), since RSS
  does not resolve a few MiB.
Without ``--circuit`` an untrained circuit of the ``cpu`` preset is used: its cost is that of a
trained one (the same shapes). The last line is one JSON object of ratios to the base (keys
``negotiax``, ``negotiax_module1``, ``mocae_logit``, ``mocae_adapter``) plus the parameters added.
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
           "What happens if you swallow gum?"]


def run_step(step, feed, tokens: int) -> tuple[float, float, int]:
    import torch

    t0 = time.perf_counter()
    lp, _ = step(feed)
    prefill = time.perf_counter() - t0
    token, n = [int(lp.argmax())], 0
    t0 = time.perf_counter()
    for _ in range(tokens):
        lp, _ = step(token)
        token = [int(torch.as_tensor(lp).argmax())]
        n += 1
    return prefill, (time.perf_counter() - t0) / n, n


def main() -> None:
    import torch

    from alignx.experts.io import DEFAULT_EXPERTS_DIR
    from alignx.generation import chat_prompt_ids
    from alignx.mocae.fusion import AdapterFusionStep, LogitFusionStep
    from alignx.negotiax import preset
    from alignx.negotiax.core import NegotiaX
    from alignx.negotiax.policy import NegotiaXPolicy, base_step
    from alignx.studio import Studio

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--experts-dir", default=str(DEFAULT_EXPERTS_DIR))
    p.add_argument("--circuit", default=None)
    p.add_argument("--tokens", type=int, default=24)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    studio = Studio.load(a.model, a.experts_dir)
    m = studio.model
    objectives = [o.name for o in studio.objectives]
    nx = (NegotiaX.load(a.circuit, m, studio.tokenizer) if a.circuit
          else NegotiaX.fresh(m, studio.tokenizer, objectives, preset("cpu")))
    steps = {"base": lambda: base_step(m), "negotiax": lambda: NegotiaXPolicy(nx).make_step(""),
             "negotiax_module1": lambda: NegotiaXPolicy(nx, "module1").make_step("")}
    if studio.mocae is not None:
        w = studio.mocae.weights(PROMPTS[0])
        mo = studio.mocae
        mo.fused, mo.stacked                                     # built before timing
        steps["mocae_logit"] = lambda: LogitFusionStep(m, mo.experts, mo.temperatures, w, None, mo.stacked)
        steps["mocae_adapter"] = lambda: AdapterFusionStep(mo.fused, w)
    feeds = [chat_prompt_ids(studio.tokenizer, q) for q in PROMPTS]
    for make in steps.values():                                   # warm-up, not timed
        run_step(make(), feeds[0], 2)
    rounds: dict[str, list[tuple[float, float]]] = {k: [] for k in steps}
    for r in range(a.rounds):
        for name, make in steps.items():
            pre, dec = zip(*[run_step(make(), f, a.tokens)[:2] for f in feeds])
            rounds[name].append((statistics.median(pre), statistics.median(dec)))
        print(f"round {r + 1}: " + "  ".join(f"{k} {v[-1][1] * 1000:.1f}" for k, v in rounds.items()) + " ms/token",
              file=sys.stderr, flush=True)
    base_params = sum(p.numel() for n, p in m.named_parameters() if "lora_" not in n)
    added = nx.circuit.n_parameters()
    d = int(m.config.hidden_size) if hasattr(m, "config") else 0
    cfg = nx.cfg
    per_token_floats = len(objectives) * cfg.rank + 3 * len(objectives) * cfg.heads * cfg.head_dim + d
    out: dict = {}
    for name in steps:
        if name == "base":
            continue
        out[name] = round(statistics.median(r[1] / b[1] for r, b in zip(rounds[name], rounds["base"])), 3)
        out[f"{name}_prefill"] = round(statistics.median(r[0] / b[0] for r, b in zip(rounds[name], rounds["base"])), 3)
    out["base_ms_per_token"] = round(statistics.median(b[1] for b in rounds["base"]) * 1000, 2)
    out["negotiax_added_params"] = added
    out["negotiax_added_params_share"] = round(added / base_params, 5)
    out["negotiax_extra_bytes_per_token"] = per_token_floats * 4
    out["memory_ratio_estimate"] = round(1 + added * 4 / (base_params * next(m.parameters()).element_size()), 4)
    out.update(rounds=a.rounds, tokens=a.tokens, circuit=a.circuit or "untrained cpu preset",
               device=str(next(m.parameters()).device), torch_threads=torch.get_num_threads())
    if torch.cuda.is_available():
        out["note"] = "on CUDA add max_memory_allocated per mode"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
