"""Expert strength probe: does scaling an expert's LoRA update trade refusal for over-refusal?

    OMP_NUM_THREADS=1 python bench/expert_strength.py [--expert harmless] [--scales 1,0.7,0.5,0.3,0] \
        [--split validation] [--data-dir ../shared/data] [--out strength.json]

Multiplies the expert's LoRA scaling (alpha / r) by each scale s (s = 0 is the base model) and
answers the stage-1 safety prompts (``report.safety_sets``, the validation rows by default: the
rows outside the report's test sample), greedy, 48 new tokens; prints the offline judge's refusal
rate on harmful prompts and over-refusal on benign ones, per set. If the expert told harm from
harmlessness, a smaller s would shed over-refusal faster than refusal; if both fall together,
the expert refuses by something other than harm (a diagnostic, not a timing).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from peft.tuners.lora import LoraLayer

    from alignx.eval.judges.base import get_judge
    from alignx.experts.report import rates_by_set, safety_sets
    from alignx.generation import Sampling
    from alignx.policy import SinglePolicy
    from alignx.studio import Studio

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--expert", default="harmless")
    p.add_argument("--experts-dir", default=None, help="default: assets/experts")
    p.add_argument("--scales", default="1,0.7,0.5,0.3,0")
    p.add_argument("--split", default="validation", choices=["test", "validation"])
    p.add_argument("--per-set", type=int, default=40)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="also write the results here (JSON)")
    a = p.parse_args()
    harmful, benign = safety_sets(a.data_dir, a.per_set, split=a.split)
    h_prompts = [q for v in harmful.values() for q in v]
    b_prompts = [q for v in benign.values() for q in v]
    studio = Studio.load(experts_dir=a.experts_dir, with_router=False) if a.experts_dir else Studio.load(with_router=False)
    if a.expert not in studio.experts:
        raise SystemExit(f"unknown expert {a.expert!r}; loaded: {sorted(studio.experts)}")
    layers = [m for m in studio.model.modules() if isinstance(m, LoraLayer) and a.expert in m.scaling]
    full = {id(m): m.scaling[a.expert] for m in layers}
    judge, sampling, results = get_judge("offline"), Sampling(max_new_tokens=48), {}

    def rates(sets: dict, flags: list[float]) -> dict:
        return {name: round(r["value"], 3) for name, r in rates_by_set(sets, flags).items()}

    for s in [float(x) for x in a.scales.split(",")]:
        for m in layers:
            m.scaling[a.expert] = full[id(m)] * s
        policy = SinglePolicy(studio.model, studio.tokenizer, a.expert if s > 0 else None)
        h = policy.generate(h_prompts, sampling, batch_size=16)
        b = policy.generate(b_prompts, sampling, batch_size=16)
        rh = [float(x > 0.5) for x in judge.refusal(h_prompts, h)]
        rb = [float(x > 0.5) for x in judge.refusal(b_prompts, b)]
        results[s] = {"refusal_harmful": round(sum(rh) / len(rh), 3), "over_refusal_benign": round(sum(rb) / len(rb), 3),
                      "refusal_by_set": rates(harmful, rh), "over_refusal_by_set": rates(benign, rb)}
        print(f"scale {s:.2f}: {json.dumps(results[s])}", flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"split": a.split, "per_set": a.per_set, "judge": judge.info(),
                                           "results": results}, indent=1))


if __name__ == "__main__":
    main()
