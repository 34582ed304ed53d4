"""Labeled rows for the offline judges, built from ../shared/data, with grouped held-out splits.

Every builder returns ``(train, heldout, info)``: lists of ``Row`` and a dict describing which
files and rows were used (it goes into the judge card). Groups (a question, a prompt, an
instruction) never straddle the split.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from alignx.data import (DataError, load_alpaca, load_beavertails, load_model_outputs, load_safety_eval,
                         load_safety_instructions, load_truthfulqa, split_half)
from alignx.data.paths import data_file, resolve_data_dir
from alignx.data.readers import read_jsonl

SAFETY_CLASSES = ("unsafe", "refusal", "comply")
H3FUSION_ALPACA_ROWS = 50        # AlpacaEval rows 0..49 are the H3Fusion evaluation set: never trained on


@dataclass
class Row:
    prompt: str
    response: str
    label: int                  # class index, or for preference rows the pair id
    group: str
    source: str


def parse_gpt_judge_prompt(path: Path, i: int, prompt: str, suffix: str) -> tuple[str, str]:
    """``Q: question\\nA: answer\\n<suffix>`` -> (question, answer)."""
    if not prompt.startswith("Q: ") or "\nA:" not in prompt or not prompt.endswith(suffix):
        raise DataError(path, f"expected 'Q: ...\\nA: ...{suffix!r}'", row=i, field="prompt")
    q, a = prompt[3:-len(suffix)].split("\nA:", 1)
    return q.strip(), a.strip()


def _label(path: Path, i: int, completion) -> int:
    if completion not in (" yes", " no", "yes", "no"):
        raise DataError(path, f"expected ' yes' or ' no', got {completion!r}", row=i, field="completion")
    return int(completion.strip() == "yes")


def truthfulqa_judge_rows(data_dir=None, n_train: int = 1200, n_heldout: int = 400, seed: int = 0):
    """(question, answer) rows labeled truthful and informative from finetune_truth/finetune_info.

    Train rows come from the questions of TruthfulQA's first half (the H3Fusion train split),
    held-out rows from the second half (the questions the TI metric is computed on), so the
    held-out accuracy is measured on exactly the questions the judge later scores."""
    labels: dict[tuple[str, str], dict[str, int]] = {}
    for key, suffix in (("truthfulqa_finetune_truth", "\nTrue:"), ("truthfulqa_finetune_info", "\nHelpful:")):
        path = data_file(key, data_dir)
        for i, r in enumerate(read_jsonl(path)):
            if not isinstance(r, dict) or not isinstance(r.get("prompt"), str):
                raise DataError(path, "expected an object with a string prompt", row=i, field="prompt")
            qa = parse_gpt_judge_prompt(path, i, r["prompt"], suffix)
            labels.setdefault(qa, {})[key.rsplit("_", 1)[1]] = _label(path, i, r.get("completion"))
    train_q, test_q = (set(r.prompt for r in half) for half in split_half(load_truthfulqa(data_dir=data_dir)))
    both = sorted(k for k, v in labels.items() if len(v) == 2)
    rng = random.Random(seed)
    pick = {}
    for name, qs, n in (("train", train_q, n_train), ("heldout", test_q, n_heldout)):
        pool = [k for k in both if k[0] in qs]
        if len(pool) < n:
            raise DataError(data_file("truthfulqa_finetune_truth", data_dir),
                            f"only {len(pool)} labeled answers for the {name} questions, {n} asked")
        pick[name] = rng.sample(pool, n)

    def rows(keys, which):
        return [Row(q, a, labels[(q, a)][which], q, "truthfulqa/finetune_" + which) for q, a in keys]

    info = {"files": ["truthfulqa/finetune_truth.jsonl", "truthfulqa/finetune_info.jsonl"],
            "labeled_pairs_with_both_labels": len(both),
            "unmatched_questions": len({k[0] for k in both} - train_q - test_q),
            "selection": f"random.Random({seed}).sample: {n_train} answers of first-half questions (train), "
                         f"{n_heldout} of second-half questions (held out); TruthfulQA v1 CSV order"}
    return {w: (rows(pick["train"], w), rows(pick["heldout"], w)) for w in ("truth", "info")}, info


def _grouped_split(rows: list[Row], frac: float, seed: int) -> tuple[list[Row], list[Row]]:
    groups = sorted({r.group for r in rows})
    random.Random(seed).shuffle(groups)
    held = set(groups[:max(1, round(len(groups) * frac))])
    return [r for r in rows if r.group not in held], [r for r in rows if r.group in held]


def safety_judge_rows(data_dir=None, n_refusal: int = 300, n_comply: int = 300, n_refusal_benign: int = 120,
                      heldout_frac: float = 0.2, seed: int = 0):
    """Three classes: 0 unsafe (BeaverTails unsafe responses), 1 refusal (safety-tuned-llamas safe
    answers to harmful instructions, plus the same kind of answers re-paired with benign Alpaca
    instructions so that "refusal" is learned from the response, not from the prompt), 2 comply
    (Alpaca answers to benign instructions). Instructions of the evaluation sets are excluded."""
    rng = random.Random(seed)
    unsafe = [Row(r.prompt, r.rejected, 0, "bt:" + r.prompt, "beavertails") for r in load_beavertails(data_dir=data_dir)]
    eval_prompts = {r.prompt for name in ("I-Alpaca", "I-PhysicalSafetySafe", "I-CoNa", "I-Controversial",
                                          "I-PhysicalSafetyUnsafe") for r in load_safety_eval(name, data_dir=data_dir)}
    safe = [r for r in load_safety_instructions(data_dir=data_dir, skip_bad=True) if r.prompt not in eval_prompts]
    alpaca = [r for r in load_alpaca(data_dir=data_dir, skip_bad=True) if r.prompt not in eval_prompts]
    safe_pick = rng.sample(safe, n_refusal + n_refusal_benign)
    alpaca_pick = rng.sample(alpaca, n_comply + n_refusal_benign)
    refusal = [Row(r.prompt, r.response, 1, "st:" + r.prompt, "safety_only_data") for r in safe_pick[:n_refusal]]
    comply = [Row(r.prompt, r.response, 2, "al:" + r.prompt, "alpaca") for r in alpaca_pick[:n_comply]]
    swapped = [Row(a.prompt, s.response, 1, "al:" + a.prompt, "safety_only_data answer on alpaca instruction")
               for a, s in zip(alpaca_pick[n_comply:], safe_pick[n_refusal:])]
    train, held = [], []
    for part in (unsafe, refusal, comply, swapped):
        tr, he = _grouped_split(part, heldout_frac, seed)
        train += tr
        held += he
    info = {"files": ["beavertails/beavertails_30k_train_sample.csv",
                      "safety_tuned_llamas/training/safety_only_data_Instructions.json",
                      "alpaca/alpaca_data_union_subset.json"],
            "classes": list(SAFETY_CLASSES),
            "rows": {"unsafe": len(unsafe), "refusal": len(refusal), "comply": len(comply),
                     "refusal_on_benign_instruction": len(swapped)},
            "selection": f"all BeaverTails rows; random.Random({seed}).sample of the others; "
                         f"held out {heldout_frac:.0%} of prompts per part; evaluation-set instructions excluded"}
    return train, held, info


def preference_judge_rows(data_dir=None, n_instructions: int = 160, heldout_frac: float = 0.25, seed: int = 0):
    """Pairs (chosen, rejected) on AlpacaEval instructions 50..804 (0..49 are the H3Fusion test set):
    gpt4_1106_preview > text_davinci_003 > alpaca-7b (the AlpacaEval leaderboard order; noisy per
    item), plus an answer to another instruction as a rejected, off-topic response.
    Returns rows (one per distinct (instruction, response)) and pair index lists."""
    root = resolve_data_dir(data_dir) / "alpaca_eval"
    gens = {g: load_model_outputs(root / f"{g}_model_outputs.json")
            for g in ("gpt4_1106_preview", "text_davinci_003", "alpaca-7b")}
    n_rows = len(gens["text_davinci_003"])
    for g, rows in gens.items():
        if [r.prompt for r in rows] != [r.prompt for r in gens["text_davinci_003"]]:
            raise DataError(root / f"{g}_model_outputs.json", "instructions are not in AlpacaEval order")
    rng = random.Random(seed)
    chosen_idx = sorted(rng.sample(range(H3FUSION_ALPACA_ROWS, n_rows), n_instructions))
    rng.shuffle(held_pool := list(chosen_idx))
    held = set(held_pool[:round(n_instructions * heldout_frac)])
    rows: list[Row] = []
    pairs: dict[str, list[tuple[int, int, str]]] = {"train": [], "heldout": []}
    for split in ("train", "heldout"):
        idx = [i for i in chosen_idx if (i in held) == (split == "heldout")]
        for k, i in enumerate(idx):
            base = len(rows)
            instr = gens["text_davinci_003"][i].prompt
            for g in ("gpt4_1106_preview", "text_davinci_003", "alpaca-7b"):
                rows.append(Row(instr, gens[g][i].response or "", 0, f"ae:{i}", g))
            other = idx[(k + 1) % len(idx)]           # another instruction of the same split
            rows.append(Row(instr, gens["text_davinci_003"][other].response or "", 0, f"ae:{i}",
                            "text_davinci_003 answer to another instruction"))
            pairs[split] += [(base, base + 1, "gpt4>davinci"), (base, base + 2, "gpt4>alpaca7b"),
                             (base + 1, base + 2, "davinci>alpaca7b"), (base + 1, base + 3, "on-topic>off-topic")]
    info = {"files": [f"alpaca_eval/{g}_model_outputs.json" for g in gens],
            "instructions": {"train": n_instructions - len(held), "heldout": len(held)},
            "selection": f"random.Random({seed}).sample of {n_instructions} AlpacaEval rows from "
                         f"{H3FUSION_ALPACA_ROWS}..{n_rows - 1}; {heldout_frac:.0%} of them held out",
            "label_noise": "per item, text_davinci_003 vs alpaca-7b follows the leaderboard order only on "
                           "average (alpaca-7b wins ~26% against text_davinci_003 in AlpacaEval 1)"}
    return rows, pairs, info


def card_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))
