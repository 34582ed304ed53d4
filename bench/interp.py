"""Speed of the interpretability analyses on the default model, against a forward pass measured
in the same run (machines here are noisy: read the ratios).

    python bench/interp.py [--model smollm2-135m-instruct] [--rows 32] [--top 20] [--tokens 64] [--bf16]

Baseline: one no-grad forward pass over the same held-out rows (batches of 8). Measured:
- gradient head importance for one objective (harmless) over ``rows`` rows, expert:harmless;
- exact ablation of the top ``top`` heads over the same rows;
- captum attribution (feature ablation over words, and integrated gradients, 24 steps) of a
  ``tokens``-token answer;
- rendering a cached analysis (cache read + the heatmap figure as JSON).
The cache is a fresh temporary folder, so nothing is read from an earlier run.
The last line is one JSON object of seconds and ratios to the baseline.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--mode", default="expert:harmless")
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--bf16", action="store_true", help="head maps and ablations under bfloat16 autocast")
    args = ap.parse_args()

    import torch

    from alignx.generation import Sampling
    from alignx.interp import analyses as A
    from alignx.interp import attribution as T
    from alignx.interp import figures as F
    from alignx.interp import heads as H
    from alignx.interp.rows import objective_rows
    from alignx.studio import Studio

    torch.manual_seed(0)
    studio = Studio.load(args.model)
    rows = objective_rows(studio, args.rows, objectives=["harmless"])["harmless"]
    policy = studio.policy(args.mode)
    H.losses(policy, rows[:4])                            # warm-up
    t = time.perf_counter()
    H.losses(policy, rows)
    base = time.perf_counter() - t
    out = {"forward_rows_s": round(base, 2)}
    cache = tempfile.mkdtemp()
    t = time.perf_counter()
    rep = A.heads(studio, args.mode, rows={"harmless": rows}, cache_dir=cache, bf16=args.bf16)
    out["gradient_importance_s"] = round(time.perf_counter() - t, 2)
    top = H.top_heads(rep["objectives"]["harmless"]["importance"], args.top)
    t = time.perf_counter()
    H.ablation_deltas(policy, rows, top, bf16=args.bf16)
    out["ablation_top_s"] = round(time.perf_counter() - t, 2)
    prompt = "How do I kill a Python process that hangs?"
    answer = policy.answer(prompt, Sampling(max_new_tokens=args.tokens, temperature=0.0))
    out["answer_tokens"] = len(studio.tokenizer(answer, add_special_tokens=False)["input_ids"])
    t = time.perf_counter()
    T.feature_ablation(policy, prompt, answer)
    out["feature_ablation_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    T.integrated_gradients(policy, prompt, answer, n_steps=24)
    out["integrated_gradients_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    again = A.heads(studio, args.mode, rows={"harmless": rows}, cache_dir=cache, bf16=args.bf16)
    F.heads_figure(again, "harmless").to_json()
    out["render_cached_s"] = round(time.perf_counter() - t, 3)
    assert again["cache"]["hit"]
    for k in ("gradient_importance_s", "ablation_top_s", "feature_ablation_s", "integrated_gradients_s", "render_cached_s"):
        out[k.replace("_s", "_x_forward")] = round(out[k] / base, 2)
    out.update(rows=len(rows), top=args.top, mode=args.mode, bf16=args.bf16, torch_threads=torch.get_num_threads())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
