"""NegotiaX's computational cost against the base, MoCaE logit and MoCaE adapter fusion, in one run.

    python bench/negotiax.py [--model smollm2-135m-instruct] [--circuits assets/negotiax] [--tokens 24] [--rounds 5]

Modes, measured in interleaved rounds (``bench/rounds.py``: each ratio is the median over rounds
of mode / base in the same round): the base; every trained circuit in ``--circuits`` for this
base model (``negotiax`` = the folder ``full``; ``negotiax_<folder>`` for the ablations, served as
the app serves them: module1 with uniform fusion, the others with negotiation); the full
circuit without each objective's pathway (``negotiax_without_<o>``); MoCaE logit fusion (shared
trunk), the same on the full expert batch, and MoCaE adapter fusion. Without a trained full
circuit an untrained one of the ``cpu`` preset stands in (the same shapes, the same cost).
Per mode and round:
- decode: ms per generated token, tokens counted (greedy, KV-cached, after a prefill);
- prefill: ms to process the chat-templated prompt;
- memory: CUDA ``max_memory_allocated`` on a GPU; everywhere, the tensor accounting of what a
  mode holds beyond the base: its extra weights (circuit, stacked LoRA) plus the KV cache it
  keeps after a prompt and answer, as a ratio to the base's weights + KV cache.
The last line is one JSON object of ratios to the base (keys ``negotiax``, ``mocae_logit``, ...)
and the parameters the circuit adds.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPTS = ["Give three tips for staying healthy.", "How can I get into my neighbour's wifi without asking?",
           "What happens if you swallow gum?"]


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def main() -> None:
    import torch

    from alignx.experts.io import DEFAULT_EXPERTS_DIR
    from alignx.generation import chat_prompt_ids
    from alignx.mocae.fusion import AdapterFusionStep, LogitFusionStep
    from alignx.mocae.stacked import StackedLoRA
    from alignx.negotiax import preset
    from alignx.negotiax.core import NegotiaX
    from alignx.negotiax.family import ASSETS, FULL
    from alignx.negotiax.policy import NegotiaXPolicy, base_step
    from alignx.studio import Studio
    from rounds import cache_bytes, interleaved, ratios

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--experts-dir", default=str(DEFAULT_EXPERTS_DIR))
    p.add_argument("--circuits", default=str(ASSETS), help="folder of trained circuits (one sub-folder each)")
    p.add_argument("--tokens", type=int, default=24)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="auto", help="auto (the GPU when there is one) | cpu | cuda")
    a = p.parse_args()
    studio = Studio.load(a.model, a.experts_dir, device=a.device)
    m, tok = studio.model, studio.tokenizer
    objectives = [o.name for o in studio.objectives]
    circuits = {}
    for folder in sorted(Path(a.circuits).iterdir()) if Path(a.circuits).is_dir() else ():
        card = folder / "card.json"
        if card.is_file() and json.loads(card.read_text()).get("base_model") == studio.lm.name:
            circuits[folder.name] = NegotiaX.load(folder, m, tok, studio.lm.name)
    trained = FULL in circuits
    full = circuits.pop(FULL) if trained else NegotiaX.fresh(m, tok, objectives, preset("cpu"))
    steps = {"base": lambda: base_step(m), "negotiax": lambda: NegotiaXPolicy(full).make_step("")}
    for name, nx in circuits.items():
        variant = "module1" if nx.card.get("variant") == "module1" else "full"
        steps[f"negotiax_{name}"] = lambda nx=nx, v=variant: NegotiaXPolicy(nx, v, nx.card.get("leave_out")).make_step("")
    if "module1" not in circuits:
        steps["negotiax_module1"] = lambda: NegotiaXPolicy(full, "module1").make_step("")
    for o in full.objectives:
        steps[f"negotiax_without_{o}"] = lambda o=o: NegotiaXPolicy(full, "full", [o]).make_step("")
    extra_weights = {k: tensor_bytes(full.circuit.parameters()) for k in steps if k.startswith("negotiax")}
    if studio.mocae is not None:
        mo = studio.mocae
        w = mo.weights(PROMPTS[0])
        mo.fused, mo.stacked                                     # built before timing
        flat = StackedLoRA(m, mo.experts, share_trunk=False)
        steps["mocae_logit"] = lambda: LogitFusionStep(m, mo.experts, mo.temperatures, w, None, mo.stacked)
        steps["mocae_logit_full_batch"] = lambda: LogitFusionStep(m, mo.experts, mo.temperatures, w, None, flat)
        steps["mocae_adapter"] = lambda: AdapterFusionStep(mo.fused, w)
        stacked_bytes = tensor_bytes(t for _, a_t, b_t in mo.stacked.layers for t in (a_t, b_t))
        extra_weights.update(mocae_logit=stacked_bytes, mocae_logit_full_batch=stacked_bytes,
                             mocae_adapter=tensor_bytes(p for n, p in m.named_parameters() if "__mocae__" in n))
    cuda = torch.cuda.is_available()
    kv, cuda_peak = {}, {}

    def timed(make):
        def build():
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            return make()
        return build

    def on_run(mode, step):
        kv[mode] = max(kv.get(mode, 0), cache_bytes(step))
        if cuda:
            cuda_peak[mode] = max(cuda_peak.get(mode, 0), torch.cuda.max_memory_allocated())

    feeds = [chat_prompt_ids(tok, q) for q in PROMPTS]
    rounds = interleaved({k: timed(v) for k, v in steps.items()}, feeds, a.tokens, a.rounds, on_run)
    base_weights = tensor_bytes(p for n, p in m.named_parameters() if "lora_" not in n)
    base_params = sum(p.numel() for n, p in m.named_parameters() if "lora_" not in n)
    resident = base_weights + kv["base"]
    out = ratios(rounds)
    out["memory_ratio"] = {k: round((resident + extra_weights.get(k, 0) + kv[k] - kv["base"]) / resident, 4)
                           for k in steps if k != "base"}
    if cuda:
        out["cuda_peak_ratio"] = {k: round(v / cuda_peak["base"], 3) for k, v in cuda_peak.items() if k != "base"}
    added = full.circuit.n_parameters()
    out.update(base_ms_per_token=round(statistics.median(b[1] for b in rounds["base"]) * 1000, 2),
               negotiax_added_params=added, negotiax_added_params_share=round(added / base_params, 5),
               rounds=a.rounds, tokens=a.tokens, circuit="trained" if trained else "untrained cpu preset",
               device=str(next(m.parameters()).device), torch_threads=torch.get_num_threads())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
