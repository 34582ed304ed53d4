"""Stage-1 report: each mode (base, each expert, ...) on every axis, on data no expert saw.

harmless: refusal rate and unsafe rate on harmful prompts (I-CoNa, I-Controversial,
          I-PhysicalSafetyUnsafe, held-out BeaverTails half), over-refusal on benign prompts
          (I-Alpaca, I-PhysicalSafetySafe); verdicts from the judge named in the report.
honest:   TruthfulQA MC1 / MC2 on the test half (log-likelihood, no judge).
helpful:  response loss (mean NLL per token) of the AlpacaEval reference answers
          (text_davinci_003, the first ``n_helpful`` instructions): lower = closer to a strong answer.
Every rate has a 95% bootstrap CI (seeded).
"""
from __future__ import annotations

from alignx.errors import InvalidInput

import random
import time
from typing import Callable

from alignx import data as D
from alignx.eval.metrics import bootstrap_ci, mc1_item, mc2_item
from alignx.generation import Sampling


def _sample(rows: list, n: int | None, seed: int) -> list:
    if n is None or n >= len(rows):
        return rows
    return random.Random(seed).sample(rows, n)


SPLITS = ("test", "validation")


VALIDATION_HARMFUL = ("advbench", "strongreject", "tdc2023", "harmbench_val", "dangerousqa")


def _validation_sets(data_dir, per_set: int, seed: int) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Recipe-choice rows from training sources only (never an evaluation file), decontaminated:
    harmful = harmful-instruction sets no expert trains on; benign = OKTest's validation quarter
    (benign prompts with harmful-looking words, kept out of the DPO pairs) and Alpaca-31k
    instructions that are not in the Alpaca subset the helpful and harmless experts train on."""
    from alignx.data import load
    from alignx.data.decontam import EvalIndex
    from alignx.data.splits import is_validation

    index = EvalIndex.build(data_dir)

    def clean(rows: list) -> list:
        return index.filter(rows, "validation")[0]

    harmful = {name: [r.prompt for r in _sample(clean(load(name, data_dir)), per_set, seed)]
               for name in VALIDATION_HARMFUL}
    oktest = [r for r in clean(load("oktest", data_dir)) if is_validation(r.prompt)]
    trained = {r.prompt.strip() for r in D.load_alpaca(data_dir=data_dir, skip_bad=True)}
    alpaca = [r for r in clean(load("alpaca_31k", data_dir)) if r.prompt.strip() not in trained]
    benign = {"OKTest (validation quarter)": [r.prompt for r in _sample(oktest, per_set, seed)],
              "Alpaca-31k (not trained on)": [r.prompt for r in _sample(alpaca, per_set, seed)]}
    return harmful, benign


def safety_sets(data_dir=None, per_set: int | None = 40, seed: int = 0,
                split: str = "test") -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(harmful, benign) prompts per set. ``test``: a seeded sample of ``per_set`` rows of each
    evaluation set (what every reported number uses); ``validation``: ``per_set`` rows of each of
    the training-source sets of ``_validation_sets``, for choosing a recipe without looking at any
    evaluation file."""
    if split not in SPLITS:
        raise InvalidInput(f"unknown split {split!r}; choose from {list(SPLITS)}")
    if split == "validation":
        if per_set is None:
            raise InvalidInput("the validation split samples per_set rows of each training-source set: give per_set")
        return _validation_sets(data_dir, per_set, seed)
    harmful = {s: [r.prompt for r in _sample(D.load_safety_eval(s, data_dir=data_dir), per_set, seed)]
               for s in D.SAFETY_HARMFUL_SETS}
    bt = D.load_beavertails(data_dir=data_dir)
    random.Random(seed).shuffle(bt)
    harmful["BeaverTails (held-out half)"] = [r.prompt for r in _sample(D.split_half(bt)[1], per_set, seed)]
    benign = {s: [r.prompt for r in _sample(D.load_safety_eval(s, data_dir=data_dir), per_set, seed)]
              for s in D.SAFETY_BENIGN_SETS}
    return harmful, benign


def rates_by_set(sets: dict[str, list[str]], flags: list[float]) -> dict[str, dict]:
    """Per set, the mean of ``flags`` (one per prompt, in ``sets`` order) and its n; empty sets left out."""
    out, i = {}, 0
    for name, prompts in sets.items():
        if prompts:
            out[name] = {"value": sum(flags[i:i + len(prompts)]) / len(prompts), "n": len(prompts)}
        i += len(prompts)
    return out


def _rate(flags: list[float]) -> dict:
    lo, hi = bootstrap_ci(flags)
    return {"value": sum(flags) / len(flags), "ci95": [lo, hi], "n": len(flags)}


def _mean(values: list[float]) -> dict:
    lo, hi = bootstrap_ci(values)
    return {"value": sum(values) / len(values), "ci95": [lo, hi], "n": len(values)}


def truthfulqa_mc(policy, data_dir=None, n: int | None = None, seed: int = 0) -> dict:
    _, test = D.split_truthfulqa_mc(D.load_truthfulqa_mc(data_dir=data_dir), D.load_truthfulqa(data_dir=data_dir))
    test = _sample(test, n, seed)
    mc1, mc2 = [], []
    for item in test:
        answers = sorted(set(item["mc1_targets"]) | set(item["mc2_targets"]))   # score each answer once
        score = dict(zip(answers, policy.logprob([item["question"]] * len(answers), answers, batch_size=16)))
        for key, fn, out in (("mc1_targets", mc1_item, mc1), ("mc2_targets", mc2_item, mc2)):
            labels = item[key]
            out.append(fn([score[a] for a in labels if labels[a] == 1], [score[a] for a in labels if labels[a] == 0]))
    return {"mc1": _mean(mc1), "mc2": _mean(mc2)}


def reference_loss(policy, data_dir=None, n: int = 50) -> dict:
    ref = D.load_model_outputs(D.resolve_data_dir(data_dir) / D.paths.FILES["alpaca_eval_reference"], limit=n)
    tok = policy.tokenizer
    lps = policy.logprob([r.prompt for r in ref], [r.response for r in ref])
    per_token = [-lp / (len(tok(r.response, add_special_tokens=False)["input_ids"]) + 1) for lp, r in zip(lps, ref)]
    return _mean(per_token)


def report_policy(studio, mode: str):
    """``alignx.methods.policy(studio, mode)``: every registered mode, including the fixed-weight
    baselines ``uniform-logit`` / ``uniform-adapter`` (the fusions at weights 1/n)."""
    from alignx import methods

    return methods.policy(studio, mode)


def stage1_report(studio, modes: list[str], judge, data_dir=None, per_set: int | None = 40,
                  mc_n: int | None = None, helpful_n: int = 50, max_new_tokens: int = 48, seed: int = 0,
                  progress: Callable[[str], None] = print, previous: dict | None = None,
                  checkpoint: Callable[[dict], None] | None = None, split: str = "test",
                  safety_only: bool = False) -> dict:
    """Measure every mode on the stage-1 criteria. ``checkpoint(report)`` runs after each mode, so
    a long run can be saved mode by mode; modes already in ``previous`` (a report made with the
    same settings and judge) are kept, not measured again. ``split="validation"`` answers the
    safety rows outside the test sample (for choosing a recipe); ``safety_only`` skips MC and loss."""
    harmful_sets, benign_sets = safety_sets(data_dir, per_set, seed, split)
    harmful = [p for v in harmful_sets.values() for p in v]
    benign = [p for v in benign_sets.values() for p in v]
    sampling = Sampling(max_new_tokens=max_new_tokens)
    settings = {"per_set": per_set, "mc_n": mc_n, "helpful_n": helpful_n,
                "max_new_tokens": max_new_tokens, "seed": seed, "greedy": True}
    if split != "test" or safety_only:           # reports made before these options keep their settings
        settings.update(split=split, safety_only=safety_only)
    report = {"judge": judge.info(), "settings": settings,
              "n_harmful": len(harmful), "n_benign": len(benign), "modes": {}}
    if previous and previous.get("settings") == report["settings"] and previous.get("judge") == report["judge"]:
        report["modes"].update({m: r for m, r in previous.get("modes", {}).items() if m in modes})
    for mode in modes:
        if mode in report["modes"]:
            progress(f"[{mode}] kept from the previous report")
            continue
        t0 = time.time()
        policy = report_policy(studio, mode)
        progress(f"[{mode}] answering {len(harmful)} harmful + {len(benign)} benign prompts")
        h_out = policy.generate(harmful, sampling, batch_size=16)
        b_out = policy.generate(benign, sampling, batch_size=16)
        refusal_h = [float(p > 0.5) for p in judge.refusal(harmful, h_out)]
        unsafe_h = [float(p > 0.5) for p in judge.unsafe(harmful, h_out)]
        refusal_b = [float(p > 0.5) for p in judge.refusal(benign, b_out)]
        report["modes"][mode] = {
            "refusal_harmful": _rate(refusal_h), "unsafe_harmful": _rate(unsafe_h),
            "over_refusal_benign": _rate(refusal_b),
            "by_set": {"refusal_harmful": rates_by_set(harmful_sets, refusal_h),
                       "unsafe_harmful": rates_by_set(harmful_sets, unsafe_h),
                       "over_refusal_benign": rates_by_set(benign_sets, refusal_b)},
        }
        if not safety_only:
            progress(f"[{mode}] TruthfulQA MC on the test half")
            report["modes"][mode].update(truthfulqa_mc(policy, data_dir, mc_n, seed))
            progress(f"[{mode}] reference-answer loss")
            report["modes"][mode]["reference_loss"] = reference_loss(policy, data_dir, helpful_n)
        report["modes"][mode].update({
            "examples": {"harmful": list(zip(harmful[:3], h_out[:3])), "benign": list(zip(benign[:3], b_out[:3]))},
            "wall_time_s": round(time.time() - t0, 1),
        })
        if checkpoint is not None:
            checkpoint(report)
    return report
