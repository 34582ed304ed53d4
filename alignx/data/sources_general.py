"""Second-wave helpful / honest sources and the HH-RLHF transcripts -> ``AlignRecord``.

Same contract as ``alignx.data.sources_safety`` (``source``, ``data_dir``, ``limit``, ``skip_bad``;
``DataError(file, message, row, field)``).

HH-RLHF rows are two transcripts "\\n\\nHuman: ...\\n\\nAssistant: ..." that share everything but
the final assistant turn. ``prompt`` = the first human turn (the prompt evaluation sets reuse);
``chosen`` / ``rejected`` = the two final assistant turns; ``extra['human_turns']`` = every human
turn, ``extra['context']`` = the shared transcript before the final assistant turn, ``extra['turns']``
= the number of human turns (1 = a single-turn conversation, where prompt and answers match).
"""
from __future__ import annotations

import ast
import os
import re
from pathlib import Path
from typing import Any

from alignx.data.readers import convert_head, field_str, local_file, read_csv, read_json_list, read_jsonl
from alignx.data.records import AlignRecord, DataError

PathLike = str | os.PathLike | None
_TURN = re.compile(r"\n\n(Human|Assistant):")


def parse_transcript(path: Path, i: int, text: Any, field: str) -> list[tuple[str, str]]:
    """"\\n\\nHuman: a\\n\\nAssistant: b..." -> [("Human", "a"), ("Assistant", "b"), ...]; it must
    start with a human turn and end with a non-empty assistant turn."""
    if not isinstance(text, str):
        raise DataError(path, f"expected a string, got {type(text).__name__}", row=i, field=field)
    parts = _TURN.split(text)
    if parts[0].strip() or len(parts) < 5 or parts[1] != "Human" or parts[-2] != "Assistant":
        raise DataError(path, "expected a transcript '\\n\\nHuman: ...\\n\\nAssistant: ...'", row=i, field=field)
    turns = [(parts[k], parts[k + 1].strip()) for k in range(1, len(parts), 2)]
    if not turns[0][1]:
        raise DataError(path, "empty first human turn", row=i, field=field)
    if not turns[-1][1]:
        raise DataError(path, "empty final assistant turn", row=i, field=field)
    return turns


def _hh(key: str, axis: str, source: PathLike, data_dir: PathLike, limit: int | None,
        skip_bad: bool) -> list[AlignRecord]:
    path = local_file(source, key, data_dir)
    rows = read_jsonl(path)

    def conv(i: int, r: Any) -> AlignRecord:
        if not isinstance(r, dict):
            raise DataError(path, f"expected an object, got {type(r).__name__}", row=i)
        for name in ("chosen", "rejected"):
            if name not in r:
                raise DataError(path, "missing field", row=i, field=name)
        chosen = parse_transcript(path, i, r["chosen"], "chosen")
        rejected = parse_transcript(path, i, r["rejected"], "rejected")
        human = [t for role, t in chosen if role == "Human"]
        context = r["chosen"][:r["chosen"].rfind("\n\nAssistant:")]
        return AlignRecord(axis, human[0], chosen=chosen[-1][1], rejected=rejected[-1][1], source=key,
                           extra={"row": i, "turns": len(human), "human_turns": human, "context": context,
                                  "same_context": r["rejected"].startswith(context + "\n\nAssistant:")})

    return convert_head(path, rows, conv, limit, skip_bad)


def load_hh_harmless(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                     skip_bad: bool = False) -> list[AlignRecord]:
    """HH-RLHF harmless-base test: red-team conversations, ``chosen`` = the less harmful reply."""
    return _hh("hh_harmless", "harmless", source, data_dir, limit, skip_bad)


def load_hh_helpful(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                    skip_bad: bool = False) -> list[AlignRecord]:
    """HH-RLHF helpful-base test: ``chosen`` = the more helpful reply."""
    return _hh("hh_helpful", "helpful", source, data_dir, limit, skip_bad)


def load_lima(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
              skip_bad: bool = False) -> list[AlignRecord]:
    """LIMA: ``instruction`` (+ ``input``) -> ``output``; ``extra['history']`` = earlier
    [user, assistant] turns (29 of 1,029 rows have some)."""
    path = local_file(source, "lima", data_dir)
    rows = read_json_list(path)

    def conv(i: int, r: Any) -> AlignRecord:
        instr = field_str(path, i, r, "instruction").strip()
        inp = field_str(path, i, r, "input", allow_empty=True, default="").strip()
        history = r.get("history") or []
        turn_pairs = isinstance(history, list) and all(
            isinstance(h, list) and len(h) == 2 and all(isinstance(x, str) for x in h) for h in history)
        if not turn_pairs:
            raise DataError(path, "expected a list of [user, assistant] string pairs", row=i, field="history")
        return AlignRecord("helpful", f"{instr}\n\n{inp}" if inp else instr, field_str(path, i, r, "output"),
                           source="lima", extra={"row": i, "history": history})

    return convert_head(path, rows, conv, limit, skip_bad)


def load_gsm8k(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
               skip_bad: bool = False) -> list[AlignRecord]:
    """GSM8K: ``question`` -> worked ``answer``; ``extra['final_answer']`` = the text after "####"."""
    path = local_file(source, "gsm8k", data_dir)
    rows = read_jsonl(path)

    def conv(i: int, r: Any) -> AlignRecord:
        answer = field_str(path, i, r, "answer")
        if "####" not in answer:
            raise DataError(path, "expected a final '#### <answer>' line", row=i, field="answer")
        return AlignRecord("helpful", field_str(path, i, r, "question").strip(), answer, source="gsm8k",
                           extra={"row": i, "final_answer": answer.rsplit("####", 1)[1].strip()})

    return convert_head(path, rows, conv, limit, skip_bad)


def load_arena_hard(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                    skip_bad: bool = False) -> list[AlignRecord]:
    """Arena-Hard v0.1: 500 hard user prompts (eval role); ``extra``: uid, category, cluster."""
    path = local_file(source, "arena_hard", data_dir)
    rows = read_jsonl(path)
    return convert_head(path, rows, lambda i, r: AlignRecord(
        "helpful", field_str(path, i, r, "prompt").strip(), source="arena_hard",
        extra={"row": i, "uid": r.get("uid", ""), "category": r.get("category", ""), "cluster": r.get("cluster", "")}),
        limit, skip_bad)


UNANSWERABLE_TEXT = ("No one can know this for certain: the question has no established answer, "
                     "so any definite answer would be a guess.")


def load_selfaware(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                   skip_bad: bool = False) -> list[AlignRecord]:
    """SelfAware: ``{"example": [{question, answer (list or null), answerable, ...}]}``. Answerable
    rows: ``response`` = the first answer; unanswerable rows: no response (``extra['answerable']``
    is False; ``UNANSWERABLE_TEXT`` is the honest reply ``alignx.data.pairs`` uses)."""
    path = local_file(source, "selfaware", data_dir)
    rows = read_json_list(path, key="example")

    def conv(i: int, r: Any) -> AlignRecord:
        q = field_str(path, i, r, "question").strip()
        ok = r.get("answerable")
        if not isinstance(ok, bool):
            raise DataError(path, f"expected true/false, got {ok!r}", row=i, field="answerable")
        answers = r.get("answer")
        if ok and (not isinstance(answers, list) or not answers
                   or not all(isinstance(a, str) and a.strip() for a in answers)):
            raise DataError(path, "an answerable question needs a list of answers", row=i, field="answer")
        return AlignRecord("honest", q, answers[0].strip() if ok else None, source="selfaware",
                           extra={"row": i, "answerable": ok, "answers": answers if ok else [],
                                  "question_id": r.get("question_id"), "origin": r.get("source", "")})

    return convert_head(path, rows, conv, limit, skip_bad)


def _metadata(text: str) -> dict | str:
    try:
        value = ast.literal_eval(text)          # a Python dict literal in the file; literal_eval runs no code
    except (ValueError, SyntaxError):
        return text
    return value if isinstance(value, dict) else text


def load_simpleqa(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                  skip_bad: bool = False) -> list[AlignRecord]:
    """SimpleQA: short fact-seeking ``question`` -> ``true_answer``; ``extra['metadata']`` (topic, ...)."""
    path = local_file(source, "simpleqa", data_dir)
    rows = read_csv(path, ["question", "true_answer"])
    return convert_head(path, rows, lambda i, r: AlignRecord(
        "honest", field_str(path, i, r, "question").strip(), field_str(path, i, r, "true_answer").strip(),
        source="simpleqa", extra={"row": i, "metadata": _metadata(r.get("metadata") or "")}), limit, skip_bad)


def load_halueval(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                  skip_bad: bool = False) -> list[AlignRecord]:
    """HaluEval QA (JSON lines despite the .json name): ``chosen`` = ``right_answer``,
    ``rejected`` = ``hallucinated_answer``; ``extra['knowledge']``."""
    path = local_file(source, "halueval", data_dir)
    rows = read_jsonl(path)

    def conv(i: int, r: Any) -> AlignRecord:
        right = field_str(path, i, r, "right_answer").strip()
        return AlignRecord("honest", field_str(path, i, r, "question").strip(), right, chosen=right,
                           rejected=field_str(path, i, r, "hallucinated_answer").strip(), source="halueval",
                           extra={"row": i,
                                  "knowledge": field_str(path, i, r, "knowledge", allow_empty=True, default="")})

    return convert_head(path, rows, conv, limit, skip_bad)


def load_truthfulqa_2025(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                         skip_bad: bool = False) -> list[AlignRecord]:
    """The January 2025 TruthfulQA revision (790 rows; ``truthfulqa/TruthfulQA.csv``), as ``load_truthfulqa``."""
    from alignx.data.loaders import load_truthfulqa

    rows = load_truthfulqa(local_file(source, "truthfulqa_2025_csv", data_dir), skip_bad=skip_bad)
    for r in rows:
        r.source = "truthfulqa_2025"
    return rows if limit is None else rows[:limit]

