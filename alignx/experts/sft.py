"""Per-axis supervised data for the experts, and its tokenization (loss on response tokens only).

helpful  = Alpaca instruction -> response.
harmless = harmful instruction -> safe refusal (safety-tuned-llamas training set), mixed with
           benign Alpaca rows so the expert learns *when* to refuse (over-refusal stays low).
honest   = TruthfulQA training half: question -> best answer, plus each other correct answer.
Any prompt of an evaluation set is removed from training (7 I-Alpaca prompts are in Alpaca).
BeaverTails unsafe responses are never targets (they are latent-head negatives only).
"""
from __future__ import annotations

import random
from dataclasses import replace

import torch

from alignx import data as D
from alignx.experts.config import AxisData, ExpertConfig
from alignx.generation import chat_prompt_ids


def evaluation_prompts(data_dir=None) -> set[str]:
    """Every prompt that any evaluation reads: never trained on."""
    out = {r.prompt.strip() for name in D.SAFETY_HARMFUL_SETS + D.SAFETY_BENIGN_SETS
           for r in D.load_safety_eval(name, data_dir=data_dir)}
    out |= {r.prompt.strip() for r in D.split_half(D.load_truthfulqa(data_dir=data_dir))[1]}
    ref = D.resolve_data_dir(data_dir) / D.paths.FILES["alpaca_eval_reference"]
    out |= {r.prompt.strip() for r in D.load_model_outputs(ref)}
    return out


def _take(rows: list[tuple[str, str]], cfg: ExpertConfig, rng: random.Random) -> tuple[list, list]:
    rows = list(rows)
    rng.shuffle(rows)
    heldout, train = rows[:cfg.heldout_rows], rows[cfg.heldout_rows:]
    if cfg.rows_per_axis is not None:
        train = train[:cfg.rows_per_axis]
    return train, heldout


def axis_data(axis: str, cfg: ExpertConfig, data_dir=None,
              pairs: list[tuple[str, str]] | None = None) -> AxisData:
    """The axis's training and held-out pairs; ``pairs`` (e.g. from an uploaded file) replace
    the built-in sources, still split into train and held-out."""
    if axis not in D.AXES:
        raise ValueError(f"unknown axis {axis!r}; choose from {list(D.AXES)}")
    rng = random.Random(cfg.seed)
    if pairs is not None:
        if len(pairs) < 2:
            raise ValueError(f"need at least 2 training pairs, got {len(pairs)}")
        held_n = min(cfg.heldout_rows, max(1, len(pairs) // 10))
        train, held = _take(pairs, replace(cfg, heldout_rows=held_n), rng)
        return AxisData(axis, train, held, {"custom": len(train)})
    banned = evaluation_prompts(data_dir)
    alpaca = [(r.prompt, r.response) for r in D.load_alpaca(data_dir=data_dir, skip_bad=True)
              if r.prompt.strip() not in banned]
    if axis == "helpful":
        train, held = _take(alpaca, cfg, rng)
        return AxisData(axis, train, held, {"alpaca": len(train)})
    if axis == "harmless":
        refusals = [(r.prompt, r.response) for r in D.load_safety_instructions(data_dir=data_dir, skip_bad=True)
                    if r.prompt.strip() not in banned]
        train, held = _take(refusals, cfg, rng)
        benign_pool = alpaca[:]
        random.Random(cfg.seed + 1).shuffle(benign_pool)
        benign = benign_pool[:int(round(len(train) * cfg.benign_mix))]
        mixed = train + benign
        rng.shuffle(mixed)
        return AxisData(axis, mixed, held, {"safety_refusals": len(train), "alpaca_benign": len(benign)})
    tqa_train = D.split_half(D.load_truthfulqa(data_dir=data_dir))[0]
    pairs = []
    for r in tqa_train:
        answers = [r.response] + [a for a in r.extra["correct_answers"] if a != r.response][:2]
        pairs.extend((r.prompt, a if a.endswith(".") else a + ".") for a in answers)
    train, held = _take(pairs, cfg, rng)
    return AxisData(axis, train, held, {"truthfulqa_train_half": len(train)})


def tokenize_pair(tokenizer, prompt: str, response: str, max_length: int) -> dict:
    """Chat-templated prompt + response + end-of-turn; labels -100 on the prompt."""
    p = chat_prompt_ids(tokenizer, prompt)
    r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (p + r)[:max_length]
    labels = ([-100] * len(p) + r)[:max_length]
    return {"input_ids": ids, "labels": labels, "attention_mask": [1] * len(ids)}


def tokenize(tokenizer, pairs: list[tuple[str, str]], max_length: int):
    from datasets import Dataset

    rows = [tokenize_pair(tokenizer, p, r, max_length) for p, r in pairs]
    rows = [r for r in rows if any(x != -100 for x in r["labels"])]  # prompt filled the window
    if not rows:
        raise ValueError("no training examples left after tokenization (empty dataset or max_length too small)")
    return Dataset.from_list(rows)


class PadCollator:
    """Right-pads input_ids/attention_mask/labels to the longest row of the batch."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict:
        width = max(len(r["input_ids"]) for r in rows)

        def pad(key, value):
            return torch.tensor([list(r[key]) + [value] * (width - len(r[key])) for r in rows])

        return {"input_ids": pad("input_ids", self.pad_id), "attention_mask": pad("attention_mask", 0),
                "labels": pad("labels", -100)}
