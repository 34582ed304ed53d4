"""Labeled rows for the offline judges, built from ../shared/data, with grouped held-out splits.

Every builder returns ``(train, heldout, info)``: lists of ``Row`` and a dict describing which
files and rows were used (it goes into the judge card). Groups (a question, a prompt, an
instruction) never straddle the split. Training rows never hold a prompt of an ``eval`` or
``judge-eval`` file of ROLES.json (``alignx.data.decontam``, exact and near duplicates); the
count removed per source goes into ``info['eval_prompts_removed']``.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from alignx.data import DataError, load_alpaca, load_beavertails, load_safety_instructions, load_truthfulqa, split_half
from alignx.data.decontam import EvalIndex
from alignx.data.paths import data_file
from alignx.data.readers import read_jsonl

SAFETY_CLASSES = ("unsafe", "refusal", "comply")
JUDGE_EVAL_ROLES = ("eval", "judge-eval")   # a judge never trains on a prompt it (or any evaluation) is scored on


def _clean(rows: list, source: str, removed: dict[str, int], data_dir=None) -> list:
    kept, report = EvalIndex.build(data_dir, JUDGE_EVAL_ROLES).filter(rows, source)
    removed[source] = report.removed
    return kept


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
    halves = split_half(load_truthfulqa(data_dir=data_dir))
    removed: dict[str, int] = {}
    train_q = {r.prompt for r in _clean(halves[0], "truthfulqa_train_half", removed, data_dir)}
    test_q = {r.prompt for r in halves[1]}          # held out: the questions the judge is scored on
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
            "eval_prompts_removed": removed,
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
    (Alpaca answers to benign instructions). Prompts of the evaluation files are excluded."""
    rng = random.Random(seed)
    removed: dict[str, int] = {}
    unsafe = [Row(r.prompt, r.rejected, 0, "bt:" + r.prompt, "beavertails")
              for r in _clean(load_beavertails(data_dir=data_dir), "beavertails", removed, data_dir)]
    safe = _clean(load_safety_instructions(data_dir=data_dir, skip_bad=True), "safety_only_data", removed, data_dir)
    alpaca = _clean(load_alpaca(data_dir=data_dir, skip_bad=True), "alpaca", removed, data_dir)
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
            "eval_prompts_removed": removed,
            "selection": f"all BeaverTails rows; random.Random({seed}).sample of the others; "
                         f"held out {heldout_frac:.0%} of prompts per part; evaluation prompts excluded"}
    return train, held, info


def preference_judge_rows(data_dir=None, n_conversations: int = 160, heldout_frac: float = 0.25, seed: int = 0):
    """Pairs on single-turn HH-RLHF helpful-base conversations (role train): the human-preferred
    ``chosen`` reply over ``rejected`` (noisy per item: crowd preferences), plus the chosen reply
    to another conversation as a rejected, off-topic response. AlpacaEval, which the first
    version used, is an evaluation file (ROLES.json): never trained on.
    Returns rows (one per distinct (prompt, response)) and pair index lists."""
    from alignx.data.registry import load

    removed: dict[str, int] = {}
    single = [r for r in load("hh_helpful", data_dir, skip_bad=True) if r.extra["turns"] == 1]
    convs = list({r.prompt: r for r in _clean(single, "hh_helpful", removed, data_dir)}.values())
    if len(convs) < max(n_conversations, 4):
        raise DataError(data_file("hh_helpful", data_dir),
                        f"only {len(convs)} clean single-turn conversations, {n_conversations} asked")
    rng = random.Random(seed)
    chosen_idx = sorted(rng.sample(range(len(convs)), n_conversations))
    rng.shuffle(held_pool := list(chosen_idx))
    held = set(held_pool[:round(n_conversations * heldout_frac)])
    rows: list[Row] = []
    pairs: dict[str, list[tuple[int, int, str]]] = {"train": [], "heldout": []}
    for split in ("train", "heldout"):
        idx = [i for i in chosen_idx if (i in held) == (split == "heldout")]
        for k, i in enumerate(idx):
            base, c = len(rows), convs[i]
            other = convs[idx[(k + 1) % len(idx)]]            # another conversation of the same split
            rows += [Row(c.prompt, c.chosen, 0, f"hh:{i}", "hh_helpful chosen"),
                     Row(c.prompt, c.rejected, 0, f"hh:{i}", "hh_helpful rejected"),
                     Row(c.prompt, other.chosen, 0, f"hh:{i}", "hh_helpful chosen answer to another prompt")]
            pairs[split] += [(base, base + 1, "chosen>rejected"), (base, base + 2, "on-topic>off-topic")]
    info = {"files": ["hh_rlhf/helpful-base_test.jsonl.gz"],
            "conversations": {"train": n_conversations - len(held), "heldout": len(held)},
            "eval_prompts_removed": removed,
            "selection": f"random.Random({seed}).sample of {n_conversations} of the {len(convs)} single-turn "
                         f"conversations left after decontamination; {heldout_frac:.0%} of them held out",
            "label_noise": "HH-RLHF preferences are single crowd-worker choices between two model samples"}
    return rows, pairs, info


def card_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))
