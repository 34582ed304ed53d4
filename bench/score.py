"""Log-likelihood scoring (MC1/MC2, Alignment Accuracy): pairs in file order against longest first.

    OMP_NUM_THREADS=1 python bench/score.py [--per-axis 48] [--batch-size 16] [--rounds 2]

The pairs are the h3fusion suite's Alignment Accuracy pairs (the first ``--per-axis`` of each
axis), scored by the base model through ``Policy.logprob`` in chunks of 4 batches: once in the
suite's order (how the runner scored before ``alignx/eval/scores.py``), once through
``chunked_logprob`` (longest first). The two orders alternate for ``--rounds`` rounds after one
warm-up chunk, so load on the machine hits both alike; the last line is one JSON object with
the median seconds of each and ``ratio`` = file order / longest first (> 1: sorting is faster),
and checks that both give the same scores.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--per-axis", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    from alignx.eval.scores import chunked_logprob
    from alignx.eval.suites import build_tasks, get_suite
    from alignx.models import DEFAULT_MODEL, load_model
    from alignx.policy import SinglePolicy

    lm = load_model(args.model or DEFAULT_MODEL, device="cpu")
    policy = SinglePolicy(lm.model, lm.tokenizer)
    tasks = build_tasks(get_suite("h3fusion"), args.data_dir)
    prompts, conts = [], []
    for pairs in tasks.pairs.values():
        for p in pairs[:args.per_axis]:
            prompts += [p["prompt"], p["prompt"]]
            conts += [p["chosen"], p["rejected"]]
    step = 4 * args.batch_size
    policy.logprob(prompts[:step], conts[:step], batch_size=args.batch_size)          # warm-up

    def file_order() -> list[float]:
        out = []
        for s in range(0, len(prompts), step):
            out += policy.logprob(prompts[s:s + step], conts[s:s + step], batch_size=args.batch_size)
        return out

    def longest_first() -> list[float]:
        return chunked_logprob(policy, prompts, conts, args.batch_size, "", False)

    times: dict[str, list[float]] = {"file_order": [], "longest_first": []}
    results = {}
    for _ in range(args.rounds):
        for name, fn in (("file_order", file_order), ("longest_first", longest_first)):
            t = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t)
            print(f"{name}: {times[name][-1]:.1f} s", file=sys.stderr)
    diff = max(abs(a - b) for a, b in zip(results["file_order"], results["longest_first"]))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({"sequences": len(prompts), "batch_size": args.batch_size, "file_order_s": round(med["file_order"], 2),
                      "longest_first_s": round(med["longest_first"], 2),
                      "ratio": round(med["file_order"] / med["longest_first"], 2),
                      "max_abs_score_diff": round(diff, 4)}))


if __name__ == "__main__":
    main()
