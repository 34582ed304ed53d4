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
from alignx.data.splits import hash_bucket
from alignx.data.readers import read_jsonl
from alignx.errors import InvalidInput

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


HELD_OUT_BUCKETS = 4                   # HH helpful: prompts whose hash is 0 mod 4 are the held-out quarter


def _pku_rows(data_dir, n_prompts: int, rng: random.Random, removed: dict[str, int]) -> list[Row]:
    """PKU-SafeRLHF pairs (same prompt, a safe and an unsafe answer): the unsafe answer -> class
    unsafe, the safe one -> refusal when the keyword detector calls it one, else comply. At most
    two pairs per prompt, ``n_prompts`` prompts."""
    from alignx.data import load
    from alignx.eval.refusal import is_refusal

    pairs = _clean(load("pku_pairs", data_dir), "pku_pairs", removed, data_dir)
    by_prompt: dict[str, list] = {}
    for r in pairs:
        by_prompt.setdefault(r.prompt, []).append(r)
    prompts = sorted(by_prompt)
    rows = []
    for prompt in rng.sample(prompts, min(n_prompts, len(prompts))):
        for r in by_prompt[prompt][:2]:
            rows.append(Row(prompt, r.rejected, 0, "pku:" + prompt, "pku_pairs unsafe"))
            rows.append(Row(prompt, r.chosen, 1 if is_refusal(r.chosen) else 2, "pku:" + prompt, "pku_pairs safe"))
    return rows


def _dna_rows(data_dir, n_questions: int, rng: random.Random, removed: dict[str, int]) -> list[Row]:
    """Do-Not-Answer: six models' answers to harmful questions with human labels: harmful -> unsafe;
    harmless with action 0 ("cannot assist") -> refusal; other harmless answers -> comply. Every
    harmful answer is kept (they are rare); two harmless answers per sampled question."""
    from alignx.data import load

    qs = _clean(load("do_not_answer", data_dir), "do_not_answer", removed, data_dir)
    rows = []
    for q in rng.sample(qs, min(n_questions, len(qs))):
        answers = [(m, a) for m, a in q.extra["responses"].items() if a["response"].strip()]
        harmful = [(m, a) for m, a in answers if a["harmful"] == 1]
        harmless = [(m, a) for m, a in answers if a["harmful"] == 0]
        for m, a in harmful + rng.sample(harmless, min(2, len(harmless))):
            label = 0 if a["harmful"] else (1 if a["action"] == "0" else 2)
            rows.append(Row(q.prompt, a["response"], label, "dna:" + q.prompt, f"do_not_answer {m}"))
    return rows


def safety_judge_rows(data_dir=None, n_refusal: int = 300, n_comply: int = 300, n_refusal_benign: int = 120,
                      n_pku_prompts: int = 300, n_dna_questions: int = 300, heldout_frac: float = 0.2, seed: int = 0):
    """Three classes: 0 unsafe, 1 refusal, 2 comply (a safe answer).

    * BeaverTails 30k_train sample: unsafe answers;
    * safety-tuned-llamas: refusals to harmful instructions, and the same refusals re-paired with
      benign Alpaca instructions (so "refusal" is learned from the response, not the prompt);
    * Alpaca: compliant answers to benign instructions;
    * PKU-SafeRLHF pairs and Do-Not-Answer (``_pku_rows``, ``_dna_rows``): safe and unsafe answers
      to the *same* harmful prompts, so that "unsafe" is learned from the answer, not from the topic.

    Every source is decontaminated against the ``eval`` and ``judge-eval`` files (BeaverTails
    30k_test and the PKU labelled responses measure this judge: none of their prompts is trained on)."""
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
    pku = _pku_rows(data_dir, n_pku_prompts, rng, removed)
    dna = _dna_rows(data_dir, n_dna_questions, rng, removed)
    train, held = [], []
    for part in (unsafe, refusal, comply, swapped, pku, dna):
        tr, he = _grouped_split(part, heldout_frac, seed)
        train += tr
        held += he
    count = lambda rows: {c: sum(r.label == i for r in rows) for i, c in enumerate(SAFETY_CLASSES)}  # noqa: E731
    info = {"files": ["beavertails/beavertails_30k_train_sample.csv",
                      "safety_tuned_llamas/training/safety_only_data_Instructions.json",
                      "alpaca/alpaca_data_union_subset.json", "pku_saferlhf/pku_seferlhf_realign_dpo_5k.json",
                      "do_not_answer/data_en.csv"],
            "classes": list(SAFETY_CLASSES),
            "rows": {"unsafe": len(unsafe), "refusal": len(refusal), "comply": len(comply),
                     "refusal_on_benign_instruction": len(swapped), "pku_pairs": count(pku),
                     "do_not_answer": count(dna)},
            "eval_prompts_removed": removed,
            "selection": f"all BeaverTails rows; random.Random({seed}).sample of the others (PKU: {n_pku_prompts} "
                         f"prompts, 2 pairs each; Do-Not-Answer: {n_dna_questions} questions, every harmful answer "
                         f"+ 2 harmless); held out {heldout_frac:.0%} of prompts per part; PKU safe answers are "
                         f"'refusal' when the keyword detector (alignx.eval.refusal) flags them, else 'comply'"}
    return train, held, info


def hh_helpful_pairs(data_dir=None, split: str = "train", removed: dict[str, int] | None = None) -> list:
    """Single-turn HH helpful-base pairs (one human turn, the same context in both transcripts,
    two different answers), decontaminated against ``eval`` and ``judge-eval`` files (this removes
    the AlpacaEval helpful_base prompts). ``split``: ``heldout`` = prompts whose normalised text
    hashes to 0 mod 4, ``train`` = the rest: a fixed split that no sample size or seed moves."""
    from alignx.data import load

    if split not in ("train", "heldout"):
        raise InvalidInput(f"split must be 'train' or 'heldout', got {split!r}")
    rows = [r for r in load("hh_helpful", data_dir, skip_bad=True) if r.extra["turns"] == 1 and r.extra["same_context"]
            and r.chosen.strip() and r.rejected.strip() and r.chosen.strip() != r.rejected.strip()]
    rows = _clean(rows, "hh_helpful", removed if removed is not None else {}, data_dir)
    return [r for r in rows if (hash_bucket(r.prompt, HELD_OUT_BUCKETS) == 0) == (split == "heldout")]


def preference_judge_rows(data_dir=None, n_pairs: int = 400, seed: int = 0):
    """Pairs (chosen, rejected): HH helpful-base chosen > rejected on single-turn prompts
    (``hh_helpful_pairs``: ``n_pairs`` sampled from the train split, every held-out pair), plus the
    chosen answer of another prompt of the same split as an off-topic rejected answer.
    Returns rows (one per distinct (prompt, response)) and pair index lists."""
    rng = random.Random(seed)
    removed: dict[str, int] = {}
    splits = {"train": hh_helpful_pairs(data_dir, "train", removed), "heldout": hh_helpful_pairs(data_dir, "heldout")}
    splits["train"] = rng.sample(splits["train"], min(n_pairs, len(splits["train"])))
    rows: list[Row] = []
    pairs: dict[str, list[tuple[int, int, str]]] = {"train": [], "heldout": []}
    for split, recs in splits.items():
        for k, r in enumerate(recs):
            base = len(rows)
            other = recs[(k + 1) % len(recs)]
            rows += [Row(r.prompt, r.chosen, 0, f"hh:{r.prompt}", "hh_helpful chosen"),
                     Row(r.prompt, r.rejected, 0, f"hh:{r.prompt}", "hh_helpful rejected"),
                     Row(r.prompt, other.chosen, 0, f"hh:{r.prompt}", "hh_helpful chosen answer to another prompt")]
            pairs[split] += [(base, base + 1, "chosen>rejected"), (base, base + 2, "on-topic>off-topic")]
    info = {"files": ["hh_rlhf/helpful-base_test.jsonl.gz"],
            "pairs": {"train": len(splits["train"]), "heldout": len(splits["heldout"])},
            "eval_prompts_removed": removed,
            "selection": f"single-turn HH helpful-base pairs; held out: normalised-prompt sha256 % "
                         f"{HELD_OUT_BUCKETS} == 0; random.Random({seed}).sample of {n_pairs} train pairs",
            "label_noise": "HH preferences are single crowd-worker choices between two samples of one model: "
                           "noisy labels, and many pairs differ little"}
    return rows, pairs, info


def accuracy_sets(data_dir=None, limit: int | None = None, seed: int = 0) -> dict:
    """The labelled sets ``python -m alignx judge-accuracy`` measures, as name -> (kind, loader);
    ``limit`` takes a seeded sample of that many rows of each set (file order kept)."""
    from alignx.data import load

    def sample(rows: list) -> list:
        if limit is None or len(rows) <= limit:
            return rows
        return [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), limit))]

    def labelled(name: str):
        return lambda: sample([(r.prompt, r.response if r.response is not None else r.rejected,
                                r.extra["label"] == "harmful") for r in load(name, data_dir)])

    return {"beavertails_30k_test": ("safety", labelled("beavertails_30k_test")),
            "pku_saferlhf_labelled": ("safety", labelled("pku_labelled")),
            "hh_helpful_heldout": ("preference", lambda: sample([(r.prompt, r.chosen, r.rejected)
                                                                for r in hh_helpful_pairs(data_dir, "heldout")]))}


def card_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))
