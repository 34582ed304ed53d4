"""Per-axis supervised data for the experts, and its tokenization (loss on response tokens only).

helpful  = Alpaca instruction -> response.
harmless = harmful instruction -> safe refusal (safety-tuned-llamas training set), mixed with
           benign Alpaca rows so the expert learns *when* to refuse (over-refusal stays low).
honest   = TruthfulQA training half: question -> best answer, plus each other correct answer.
Every evaluation prompt of ``ROLES.json`` is removed from training, exact (normalised) and near
duplicates (word-Jaccard >= 0.8; ``alignx.data.decontam``): 7 I-Alpaca prompts are in Alpaca.
BeaverTails unsafe responses are never targets (they are latent-head negatives only).
"""
from __future__ import annotations

from alignx.errors import InvalidInput, MissingFile

import logging
import math
import random
import re
from collections import Counter
from dataclasses import replace

import torch

from alignx import data as D
from alignx.data.decontam import EvalIndex, eval_prompt_set
from alignx.experts.config import AxisData, ExpertConfig
from alignx.generation import chat_prompt_ids

log = logging.getLogger(__name__)


def evaluation_prompts(data_dir=None) -> set[str]:
    """Every prompt of an evaluation file of ``ROLES.json`` as written (stripped). Exact copies only:
    training sets are filtered with ``eval_index(data_dir).filter`` (normalised + near-duplicates)."""
    return eval_prompt_set(data_dir)


def eval_index(data_dir=None) -> EvalIndex:
    """The decontamination index of ``data_dir`` (``alignx.data.decontam``; cached per directory)."""
    return EvalIndex.build(data_dir)


def _clean(rows: list, source: str, removed: dict[str, int], data_dir=None) -> list:
    """``rows`` without evaluation prompts; the count dropped is added to ``removed[source]``."""
    kept, report = eval_index(data_dir).filter(rows, source)
    removed[source] = removed.get(source, 0) + report.removed
    return kept


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]{3,}", text.lower())


def nearest_rows(queries: list[str], pool: list[str], n: int) -> list[int]:
    """Indices of ``n`` distinct pool rows, taken round-robin over the queries, each query's
    nearest untaken rows first; TF-IDF cosine over words of 3+ letters. For the harmless expert:
    benign prompts on the same topics as the refusals (hard negatives), so that the expert must
    tell harm from topic instead of refusing a topic."""
    if n <= 0 or not queries or not pool:
        return []
    docs = [_words(t) for t in queries + pool]
    df = Counter(w for d in docs for w in set(d))
    vocab = {w: i for i, w in enumerate(w for w, c in df.items() if c >= 2)}
    x = torch.zeros(len(docs), max(1, len(vocab)))
    for r, d in enumerate(docs):
        for w, c in Counter(d).items():
            if w in vocab:
                x[r, vocab[w]] = (1 + math.log(c)) * math.log(len(docs) / df[w])
    x = torch.nn.functional.normalize(x, dim=1)
    order = (x[:len(queries)] @ x[len(queries):].T).argsort(dim=1, descending=True).tolist()
    target, taken, seen = min(n, len(pool)), [], set()
    cursor = [0] * len(queries)
    while len(taken) < target:          # every ranking lists the whole pool: an untaken row is always left
        for q, ranked in enumerate(order[:target - len(taken)]):
            while ranked[cursor[q]] in seen:
                cursor[q] += 1
            seen.add(ranked[cursor[q]])
            taken.append(ranked[cursor[q]])
    return taken


def _take(rows: list[tuple[str, str]], cfg: ExpertConfig, rng: random.Random, source: str | None = None,
          removed: dict[str, int] | None = None, data_dir=None) -> tuple[list, list]:
    """Seeded shuffle, the first ``cfg.heldout_rows`` held out, then ``cfg.rows_per_axis`` for
    training. With ``source``, the source's evaluation prompts are dropped from both parts *after*
    the split, so a new evaluation file removes rows but never reshuffles the others (held-out rows
    stay held out); ``removed[source]`` counts them in the whole source, as the cards record."""
    rows = list(rows)
    rng.shuffle(rows)
    if source is not None:
        clean = set(_clean(rows, source, removed if removed is not None else {}, data_dir))
        rows = [r if r in clean else None for r in rows]           # None: an evaluation prompt, dropped below
    heldout, train = rows[:cfg.heldout_rows], rows[cfg.heldout_rows:]
    if cfg.rows_per_axis is not None:
        train = train[:cfg.rows_per_axis]
    return [r for r in train if r is not None], [r for r in heldout if r is not None]


def _tqa_answered(share: float, name: str, seed: int, data_dir=None) -> list:
    """A seeded ``share`` of the TruthfulQA training-half rows whose best answer is an answer
    ("I have no comment." is a refusal: left out)."""
    if not 0.0 <= share <= 1.0:
        raise InvalidInput(f"{name} must be in [0, 1], got {share}")
    rows = [r for r in tqa_train_half(data_dir) if "no comment" not in r.response.lower()]
    return random.Random(seed).sample(rows, int(round(len(rows) * share)))


def tqa_train_half(data_dir=None, removed: dict[str, int] | None = None) -> list:
    """The TruthfulQA training half (file order, H3Fusion) without evaluation prompts (one of its
    questions is an AlpacaEval instruction, one is in the 2025 revision's evaluation half)."""
    return _clean(D.split_half(D.load_truthfulqa(data_dir=data_dir))[0], "truthfulqa_train_half",
                  removed if removed is not None else {}, data_dir)


def _tqa_benign(cfg: ExpertConfig, data_dir=None) -> list[tuple[str, str]]:
    """``cfg.benign_truthfulqa`` of the TruthfulQA training-half questions with their best answer:
    benign questions about everyday dangers, answered, never refused (the test half is never used;
    questions whose best answer is "I have no comment." are left out)."""
    rows = _tqa_answered(cfg.benign_truthfulqa, "benign_truthfulqa", cfg.seed + 2, data_dir)
    return [(r.prompt, r.response if r.response.endswith(".") else r.response + ".") for r in rows]


# The "why" openers of the safety-tuned-llamas refusal set (66 of its rows start with the first two).
CONTRAST_TEMPLATES = ("Explain why", "Analyze why", "Describe why", "List reasons why")


def contrast_prompts(cfg: ExpertConfig, data_dir=None, removed: dict[str, int] | None = None) -> list[str]:
    """``cfg.benign_contrast`` of the TruthfulQA training-half best answers (true statements), each
    put in one of the refusal set's own "why" templates: "Explain why nothing in particular happens
    if you swallow gum." Benign prompts with a harmful prompt's surface form, so the expert cannot
    learn "refuse this template". Their targets are the base model's own answers
    (``train.self_distill``): the expert should answer them exactly as the base does. Prompts that
    duplicate an evaluation prompt are dropped (counted in ``removed['contrast_benign']``)."""
    out: list[str] = []
    for i, r in enumerate(_tqa_answered(cfg.benign_contrast, "benign_contrast", cfg.seed + 3, data_dir)):
        statement = re.sub(r"^(yes|no),\s+", "", r.response.strip().rstrip("."), flags=re.I)
        first = statement.split(" ", 1)[0]
        if first in _LOWER_FIRST:                    # "The ..." -> "the ...", but "Mark Twain ..." stays
            statement = first.lower() + statement[len(first):]
        out.append(f"{CONTRAST_TEMPLATES[i % len(CONTRAST_TEMPLATES)]} {statement}.")
    return _clean(out, "contrast_benign", removed if removed is not None else {}, data_dir)


_LOWER_FIRST = {"The", "A", "An", "It", "It's", "There", "Nothing", "No", "You", "People", "Most", "Some", "All",
                "If", "In", "This", "That", "They", "Many", "Not", "Only", "Every", "None", "Humans", "We", "Your"}


def axis_data(axis: str, cfg: ExpertConfig, data_dir=None,
              pairs: list[tuple[str, str]] | None = None) -> AxisData:
    """The axis's training and held-out pairs; ``pairs`` (e.g. from an uploaded file) replace
    the built-in sources, still split into train and held-out."""
    if axis not in D.AXES:
        raise InvalidInput(f"unknown axis {axis!r}; choose from {list(D.AXES)}")
    rng = random.Random(cfg.seed)
    if pairs is not None:
        if len(pairs) < 2:
            raise InvalidInput(f"need at least 2 training pairs, got {len(pairs)}")
        removed: dict[str, int] = {}
        try:
            pairs = _clean(list(pairs), "custom", removed, data_dir)
        except MissingFile as exc:          # an uploaded file without a data directory: nothing to check against
            log.warning("custom pairs not decontaminated: %s", exc)
        if len(pairs) < 2:
            raise InvalidInput(f"need at least 2 training pairs, got {len(pairs)} after removing "
                               f"{removed.get('custom', 0)} evaluation prompts")
        held_n = min(cfg.heldout_rows, max(1, len(pairs) // 10))
        train, held = _take(pairs, replace(cfg, heldout_rows=held_n), rng)
        return AxisData(axis, train, held, {"custom": len(train)}, removed)
    removed = {}
    if axis in ("helpful", "harmless"):
        alpaca_raw = [(r.prompt, r.response) for r in D.load_alpaca(data_dir=data_dir, skip_bad=True)]
    if axis == "helpful":
        train, held = _take(alpaca_raw, cfg, rng, "alpaca", removed, data_dir)
        return AxisData(axis, train, held, {"alpaca": len(train)}, removed)
    if axis == "harmless":
        alpaca = _clean(alpaca_raw, "alpaca", removed, data_dir)   # a pool to sample from: cleaned first
        refusals_raw = [(r.prompt, r.response) for r in D.load_safety_instructions(data_dir=data_dir, skip_bad=True)]
        train, held = _take(refusals_raw, cfg, rng, "safety_refusals", removed, data_dir)
        refusals = _clean(refusals_raw, "safety_refusals", {}, data_dir)   # the pool (already counted above)
        benign_pool = alpaca[:]
        random.Random(cfg.seed + 1).shuffle(benign_pool)
        n_benign = int(round(len(train) * cfg.benign_mix))
        n_near = int(round(n_benign * cfg.benign_nearest))
        near = nearest_rows([p for p, _ in train], [p for p, _ in benign_pool], n_near)
        chosen = set(near)
        rest = [i for i in range(len(benign_pool)) if i not in chosen][:n_benign - len(near)]
        benign = [benign_pool[i] for i in near + rest]
        tqa = _tqa_benign(cfg, data_dir)
        if cfg.template_refusals < 0:
            raise InvalidInput(f"template_refusals must be >= 0, got {cfg.template_refusals}")
        taken = set(train) | set(held)
        unused = [r for r in refusals if r not in taken]
        templated = [r for r in train + unused if r[0].startswith(CONTRAST_TEMPLATES)] * cfg.template_refusals
        mixed = train + benign + tqa + templated
        rng.shuffle(mixed)
        sources = {"safety_refusals": len(train), "alpaca_benign": len(benign)}
        if near:
            sources["alpaca_benign_nearest"] = len(near)
        if tqa:
            sources["truthfulqa_benign"] = len(tqa)
            tqa_train_half(data_dir, removed)          # records the TruthfulQA rows removed
        if templated:
            sources["template_refusals"] = len(templated)
        if not benign:
            removed.pop("alpaca")                       # no Alpaca row in this mix
        return AxisData(axis, mixed, held, sources, removed)
    pairs = []
    for r in D.split_half(D.load_truthfulqa(data_dir=data_dir))[0]:
        answers = [r.response] + [a for a in r.extra["correct_answers"] if a != r.response][:2]
        pairs.extend((r.prompt, a if a.endswith(".") else a + ".") for a in answers)
    train, held = _take(pairs, cfg, rng, "truthfulqa_train_half", removed, data_dir)
    return AxisData(axis, train, held, {"truthfulqa_train_half": len(train)}, removed)


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
        raise InvalidInput("no training examples left after tokenization (empty dataset or max_length too small)")
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
