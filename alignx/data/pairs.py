"""Preference pairs per axis for DPO-style training, decontaminated, as ``AlignRecord(chosen, rejected)``.

``axis_pairs(axis, data_dir)`` -> ``PairSet``: ``pairs`` (chosen over rejected), ``sft`` (rows
with a ``response`` only: answers without a negative), ``needs_answers`` (prompts whose chosen
side must be generated, e.g. OKTest), ``sources`` (rows per source) and ``removed`` (rows dropped
per source as evaluation prompts, ``alignx.data.decontam``). Sources (all role ``train``):

harmless
  * ``pku_pairs``: PKU-SafeRLHF safe > unsafe response;
  * ``hh_harmless``: HH-RLHF harmless-base chosen > rejected (single-turn conversations unless
    ``multi_turn``: then the prompt is the transcript up to the final reply);
  * ``do_not_answer``: per question, each human-labelled harmful answer < a harmless answer of
    another model to the same question (models taken in file order, cycled);
  * ``refusal_vs_unsafe``: each BeaverTails ``30k_train`` unsafe answer < the safety-tuned-llamas
    refusal of the same prompt, or else of the instruction nearest by TF-IDF cosine (none of the
    140 sample prompts is a safety-tuned-llamas instruction; ``extra['paired_by']`` says which;
    only answers the keyword detector calls refusals, some of that set's answers comply);
  * ``coconot_pref``: the other direction, compliant ``chosen`` > over-refusing ``rejected``;
  * ``oktest``: benign prompts with harmful-looking words (its validation quarter,
    ``alignx.data.splits.is_validation``, is left out for ``report-experts --split validation``); the chosen side is an answer given by
    ``oktest_answers`` (a callable on the prompt list, e.g. the base model's own greedy answers,
    or a dict prompt -> answer), the rejected side a refusal (``REFUSALS``, cycled). Without
    ``oktest_answers`` the prompts are returned in ``needs_answers``; nothing is generated here.
helpful
  * ``hh_helpful``: HH-RLHF helpful-base chosen > rejected (single-turn unless ``multi_turn``);
  * ``lima``: LIMA answers (SFT rows).
  AlpacaEval generator pairs (a stronger vs a weaker generator's output) are not built: every
  ``alpaca_eval/*`` file has role ``eval`` in ROLES.json, so no instruction of them may be
  trained on, and they hold no other instructions.
honest
  * ``truthfulqa_train_half``: TruthfulQA first half (file order, v1): the best answer > the best
    incorrect answer, then further correct > incorrect answers (up to ``per_question`` pairs);
  * ``halueval``: right answer > hallucinated answer;
  * ``selfaware``: answerable questions: the answer > ``UNANSWERABLE_TEXT`` (no hedging when an
    answer exists); unanswerable questions: SFT rows with ``UNANSWERABLE_TEXT``.

``load_pair_file(path)`` reads a user's pair file (JSON list or JSONL of ``prompt``, ``chosen``,
``rejected``), every row checked: ``DataError`` names the file, row and field.
"""
from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from alignx.data.decontam import EvalIndex, normalize
from alignx.data.readers import convert_rows, field_str, read_json_list, read_jsonl
from alignx.data.records import AXES, AlignRecord, DataError
from alignx.data.registry import load
from alignx.data.sources_general import UNANSWERABLE_TEXT
from alignx.errors import InvalidInput

PathLike = str | os.PathLike | None
Answers = Callable[[list[str]], list[str]] | Mapping[str, str]
REFUSALS = ("I'm sorry, but I can't help with that.",
            "I cannot assist with this request.",
            "I'm not able to help with that, as it could be harmful.")


@dataclass
class PairSet:
    axis: str
    pairs: list[AlignRecord] = field(default_factory=list)
    sft: list[AlignRecord] = field(default_factory=list)
    needs_answers: list[AlignRecord] = field(default_factory=list)
    sources: dict[str, int] = field(default_factory=dict)       # rows kept per source (pairs + sft)
    removed: dict[str, int] = field(default_factory=dict)       # rows dropped as evaluation prompts

    def add(self, source: str, rows: list[AlignRecord], index: EvalIndex, sft: bool = False) -> None:
        kept, report = index.filter(rows, source)
        self.removed[source] = self.removed.get(source, 0) + report.removed
        self.sources[source] = self.sources.get(source, 0) + len(kept)
        (self.sft if sft else self.pairs).extend(kept)


def _pair(axis: str, prompt: str, chosen: str, rejected: str, source: str, **extra: Any) -> AlignRecord:
    return AlignRecord(axis, prompt, chosen=chosen, rejected=rejected, source=source, extra=extra)


def _hh(name: str, axis: str, data_dir: PathLike, limit: int | None, multi_turn: bool) -> list[AlignRecord]:
    out = []
    for r in load(name, data_dir, limit=limit, skip_bad=True):
        if not r.extra["same_context"] or r.chosen == r.rejected:
            continue
        if r.extra["turns"] == 1:
            out.append(_pair(axis, r.prompt, r.chosen, r.rejected, name, row=r.extra["row"], turns=1))
        elif multi_turn:
            context = (r.extra["context"].strip().replace("\n\nHuman: ", "\nHuman: ")
                       .replace("\n\nAssistant: ", "\nAssistant: "))
            out.append(_pair(axis, context, r.chosen, r.rejected, name, row=r.extra["row"], turns=r.extra["turns"],
                             match_texts=r.extra["human_turns"]))
    return out


def _do_not_answer(data_dir: PathLike, limit: int | None) -> list[AlignRecord]:
    out = []
    for r in load("do_not_answer", data_dir, limit=limit):
        resp = r.extra["responses"]
        good = [m for m, v in resp.items() if v["harmful"] == 0 and v["response"].strip()]
        bad = [m for m, v in resp.items() if v["harmful"] == 1 and v["response"].strip()]
        for k, m in enumerate(bad):
            if good:
                g = good[k % len(good)]
                out.append(_pair("harmless", r.prompt, resp[g]["response"], resp[m]["response"], "do_not_answer",
                                 row=r.extra["row"], chosen_model=g, rejected_model=m))
    return out


def _tfidf(texts: list[str]) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Unit TF-IDF vectors (words of 3+ letters, idf = log(n / df)) as sparse dicts."""
    docs = [re.findall(r"[a-z]{3,}", t.lower()) for t in texts]
    df = Counter(w for d in docs for w in set(d))
    idf = {w: math.log(len(docs) / c) for w, c in df.items()}
    vecs = []
    for d in docs:
        v = {w: (1 + math.log(c)) * idf[w] for w, c in Counter(d).items()}
        norm = math.sqrt(sum(x * x for x in v.values())) or 1.0
        vecs.append({w: x / norm for w, x in v.items()})
    return vecs, idf


def _refusal_vs_unsafe(data_dir: PathLike, limit: int | None) -> list[AlignRecord]:
    """BeaverTails unsafe answer < the safety-tuned-llamas refusal of the same prompt, else of the
    instruction nearest by TF-IDF cosine (``extra['paired_by']`` and ``extra['refusal_prompt']``). Only
    answers that the keyword detector calls refusals are used (some of the set's answers comply)."""
    from alignx.eval.refusal import is_refusal

    refusals = [r for r in load("safety_instructions", data_dir, skip_bad=True) if is_refusal(r.response)]
    unsafe = [r for r in load("beavertails", data_dir, limit=limit) if r.rejected is not None]
    by_prompt = {normalize(r.prompt): r for r in refusals}
    vecs, _ = _tfidf([r.prompt for r in refusals] + [r.prompt for r in unsafe])
    ref_vecs, bt_vecs = vecs[:len(refusals)], vecs[len(refusals):]
    postings: dict[str, list[int]] = {}
    for i, v in enumerate(ref_vecs):
        for w in v:
            postings.setdefault(w, []).append(i)
    out = []
    for r, v in zip(unsafe, bt_vecs):
        same = by_prompt.get(normalize(r.prompt))
        if same is not None:
            out.append(_pair("harmless", r.prompt, same.response, r.rejected, "refusal_vs_unsafe",
                             paired_by="same prompt"))
            continue
        scores: dict[int, float] = {}
        for w, x in v.items():
            for i in postings.get(w, ()):
                scores[i] = scores.get(i, 0.0) + x * ref_vecs[i][w]
        best_i = min(scores, key=lambda i: (-scores[i], i)) if scores else 0
        best = refusals[best_i]
        out.append(_pair("harmless", r.prompt, best.response, r.rejected, "refusal_vs_unsafe",
                         paired_by=f"nearest instruction (TF-IDF cosine {scores.get(best_i, 0.0):.2f})",
                         refusal_prompt=best.prompt))
    return out


def _oktest(data_dir: PathLike, limit: int | None, answers: Answers | None, out: PairSet, index: EvalIndex) -> None:
    from alignx.data.splits import is_validation

    rows, report = index.filter(load("oktest", data_dir, limit=limit), "oktest")
    out.removed["oktest"] = report.removed
    rows = [r for r in rows if not is_validation(r.prompt)]     # the validation quarter (report-experts)
    if answers is None:
        out.needs_answers.extend(rows)
        return
    prompts = [r.prompt for r in rows]
    given = [answers.get(p) for p in prompts] if isinstance(answers, Mapping) else list(answers(prompts))
    if len(given) != len(prompts):
        raise InvalidInput(f"oktest_answers returned {len(given)} answers for {len(prompts)} prompts")
    kept = [_pair("harmless", p, a.strip(), REFUSALS[i % len(REFUSALS)], "oktest", row=r.extra["row"])
            for i, (p, a, r) in enumerate(zip(prompts, given, rows)) if isinstance(a, str) and a.strip()]
    out.needs_answers.extend(r for r, a in zip(rows, given) if not (isinstance(a, str) and a.strip()))
    out.pairs.extend(kept)
    out.sources["oktest"] = len(kept)


def _truthfulqa(data_dir: PathLike, limit: int | None, per_question: int) -> list[AlignRecord]:
    from alignx.data.splits import split_half

    out = []
    for r in split_half(load("truthfulqa", data_dir))[0][:limit]:
        correct = [r.response] + [a for a in r.extra["correct_answers"] if a != r.response]
        incorrect = [r.rejected] + [a for a in r.extra["incorrect_answers"] if a != r.rejected]
        distinct = [(c, i) for c, i in zip(correct, incorrect) if c.strip() != i.strip()]   # one has "Unknown" in both
        out += [_pair("honest", r.prompt, c, i, "truthfulqa_train_half", row=r.extra["row"])
                for c, i in distinct[:per_question]]
    return out


def axis_pairs(axis: str, data_dir: PathLike = None, limit: int | None = None, multi_turn: bool = False,
               oktest_answers: Answers | None = None, per_question: int = 3) -> PairSet:
    """The decontaminated pairs and SFT rows of ``axis`` (see the module docstring); ``limit``
    reads at most that many rows of each source file (tests)."""
    if axis not in AXES:
        raise InvalidInput(f"unknown axis {axis!r}; choose from {list(AXES)}")
    if per_question < 1:
        raise InvalidInput(f"per_question must be >= 1, got {per_question}")
    index = EvalIndex.build(data_dir)
    out = PairSet(axis)
    if axis == "harmless":
        out.add("pku_pairs", [_pair("harmless", r.prompt, r.chosen, r.rejected, "pku_pairs", row=r.extra["row"])
                              for r in load("pku_pairs", data_dir, limit=limit) if r.chosen != r.rejected], index)
        out.add("hh_harmless", _hh("hh_harmless", "harmless", data_dir, limit, multi_turn), index)
        out.add("do_not_answer", _do_not_answer(data_dir, limit), index)
        out.add("refusal_vs_unsafe", _refusal_vs_unsafe(data_dir, limit), index)
        out.add("coconot_pref", [_pair("harmless", r.prompt, r.chosen, r.rejected, "coconot_pref", row=r.extra["row"],
                                       direction="comply")
                                 for r in load("coconot_pref", data_dir, limit=limit)], index)
        _oktest(data_dir, limit, oktest_answers, out, index)
    elif axis == "helpful":
        out.add("hh_helpful", _hh("hh_helpful", "helpful", data_dir, limit, multi_turn), index)
        out.add("lima", load("lima", data_dir, limit=limit), index, sft=True)
    else:
        out.add("truthfulqa_train_half", _truthfulqa(data_dir, limit, per_question), index)
        out.add("halueval", [_pair("honest", r.prompt, r.chosen, r.rejected, "halueval", row=r.extra["row"])
                             for r in load("halueval", data_dir, limit=limit) if r.chosen != r.rejected], index)
        selfaware = load("selfaware", data_dir, limit=limit)
        out.add("selfaware", [_pair("honest", r.prompt, r.response, UNANSWERABLE_TEXT, "selfaware", row=r.extra["row"])
                              for r in selfaware if r.extra["answerable"]], index)
        out.add("selfaware_unanswerable", [AlignRecord("honest", r.prompt, UNANSWERABLE_TEXT, source="selfaware",
                                                       extra={"row": r.extra["row"]})
                                           for r in selfaware if not r.extra["answerable"]], index, sft=True)
    return out


def load_pair_file(source: str | os.PathLike, *, axis: str = "custom", limit: int | None = None,
                   skip_bad: bool = False) -> list[AlignRecord]:
    """A user's preference pairs: a JSON list (``.json``) or JSON lines (``.jsonl``) of objects with
    non-empty string ``prompt``, ``chosen`` and ``rejected`` (chosen != rejected); other fields go
    to ``extra``. A bad row raises ``DataError(file, message, row, field)``."""
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".jsonl"):
        raise DataError(path, "unsupported file type: use .json (a list of objects) or .jsonl")
    rows = read_jsonl(path) if suffix == ".jsonl" else read_json_list(path)

    def conv(i: int, r: Any) -> AlignRecord:
        prompt, chosen, rejected = (field_str(path, i, r, k) for k in ("prompt", "chosen", "rejected"))
        if chosen.strip() == rejected.strip():
            raise DataError(path, "chosen and rejected are the same text", row=i, field="rejected")
        extra = {k: v for k, v in r.items() if k not in ("prompt", "chosen", "rejected")}
        return AlignRecord(axis, prompt, chosen=chosen, rejected=rejected, source=f"file:{path.name}",
                           extra=dict(extra, row=i))

    out = convert_rows(path, rows, conv, skip_bad)
    return out if limit is None else out[:limit]
