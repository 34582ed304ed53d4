"""Loaders: every source becomes a list of ``AlignRecord``.

Each loader takes ``source``: None (the file in the data directory), a file path, or a hub
dataset id (loaded with ``datasets.load_dataset``, which needs a network). Bad rows raise a
``DataError`` naming file, row and field; ``skip_bad=True`` drops them with a warning.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from alignx.data.paths import FILES, resolve_data_dir
from alignx.data.readers import convert_rows, field_str, read_csv, read_json_list, read_jsonl
from alignx.data.records import AlignRecord, DataError

log = logging.getLogger(__name__)
PathLike = str | os.PathLike | None

HUB_IDS = {"alpaca": "tatsu-lab/alpaca", "beavertails": "PKU-Alignment/BeaverTails",
           "truthfulqa": "truthful_qa"}
N_PREFERENCE_DIMS = 90


def _locate(source: PathLike, key: str, data_dir: PathLike) -> Path | str:
    """A local path (explicit, or the data directory's file), or a hub id string."""
    if source is None:
        return resolve_data_dir(data_dir) / FILES[key]
    p = Path(source).expanduser()
    if p.exists() or str(source).startswith((".", "/", "~")) or p.suffix in (".json", ".jsonl", ".csv"):
        return p
    return str(source)


def _hub_rows(hub_id: str, split: str, config: str | None = None) -> list[dict]:
    from datasets import load_dataset

    try:
        ds = load_dataset(hub_id, config, split=split)
    except Exception as exc:  # noqa: BLE001 - one clear message instead of a deep traceback
        raise DataError(hub_id, f"could not load from the hub ({type(exc).__name__}); offline? "
                                f"pass a local file or --data-dir instead") from None
    return list(ds)


def _prompt(instruction: str, inp: str) -> str:
    return f"{instruction}\n\n{inp}" if inp and inp.strip() else instruction


def _limit(rows: list, limit: int | None) -> list:
    return rows if limit is None else rows[:limit]


def load_alpaca(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                skip_bad: bool = False, axis: str = "helpful") -> list[AlignRecord]:
    """Alpaca instruction data (``instruction``, ``input``, ``output``) -> helpful records."""
    loc = _locate(source, "alpaca", data_dir)
    rows = _hub_rows(loc, "train") if isinstance(loc, str) else read_json_list(loc)
    name = str(loc)

    def conv(i: int, r: Any) -> AlignRecord:
        instr = field_str(Path(name), i, r, "instruction")
        inp = field_str(Path(name), i, r, "input", allow_empty=True, default="")
        out = field_str(Path(name), i, r, "output")
        extra = {k: v for k, v in r.items() if k not in ("instruction", "input", "output")}
        return AlignRecord(axis, _prompt(instr, inp), out, source=f"alpaca:{Path(name).name}",
                           extra=dict(extra, row=i, instruction=instr, input=inp))

    return _limit(convert_rows(Path(name), rows, conv, skip_bad), limit)


def load_safety_instructions(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                             skip_bad: bool = False) -> list[AlignRecord]:
    """Harmful instructions with safe, refusing answers (safety-tuned-llamas) -> harmless records."""
    return load_alpaca(source if source is not None else resolve_data_dir(data_dir) / FILES["safety_train"],
                       limit=limit, skip_bad=skip_bad, axis="harmless")


def load_safety_eval(name: str, *, data_dir: PathLike = None, source: PathLike = None,
                     limit: int | None = None) -> list[AlignRecord]:
    """A safety-tuned-llamas evaluation set (``I-CoNa``, ``I-Alpaca``, ...): prompts only.
    Benign sets (I-Alpaca, I-PhysicalSafetySafe) are tagged ``extra['harmful'] = False``."""
    path = Path(source) if source else resolve_data_dir(data_dir) / FILES["safety_eval"] / f"{name}.json"
    rows = read_json_list(path, key="instructions")
    raw = json.loads(path.read_text(encoding="utf-8-sig"))
    inputs = raw.get("inputs") or [""] * len(rows)
    if not isinstance(inputs, list):
        raise DataError(path, f"expected a list, got {type(inputs).__name__}", field="inputs")
    harmful = name not in ("I-Alpaca", "I-PhysicalSafetySafe")
    out = []
    for i, instr in enumerate(rows):
        if not isinstance(instr, str) or not instr.strip():
            raise DataError(path, "expected a non-empty string", row=i, field="instructions")
        inp = inputs[i] if i < len(inputs) and isinstance(inputs[i], str) else ""
        out.append(AlignRecord("harmless", _prompt(instr, inp), source=f"safety_eval:{name}",
                               extra={"row": i, "harmful": harmful, "set": name}))
    return _limit(out, limit)


def load_beavertails(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                     skip_bad: bool = False) -> list[AlignRecord]:
    """BeaverTails rows (``prompt``, ``response``, ``category``/``is_safe``). The response is kept as
    ``rejected`` when unsafe (a negative, never a training target) and as ``response`` when safe."""
    loc = _locate(source, "beavertails", data_dir)
    if isinstance(loc, str):
        rows = _hub_rows(loc, "30k_train")
    elif loc.suffix == ".csv":
        rows = read_csv(loc, ["prompt", "response"])
    elif loc.suffix == ".jsonl":
        rows = read_jsonl(loc)
    else:
        rows = read_json_list(loc)
    name = Path(str(loc))

    def conv(i: int, r: Any) -> AlignRecord:
        prompt = field_str(name, i, r, "prompt")
        resp = field_str(name, i, r, "response")
        safe = r.get("is_safe", False)
        if isinstance(safe, str):
            if safe.strip().lower() not in ("true", "false", "0", "1", ""):
                raise DataError(name, f"expected true/false, got {safe!r}", row=i, field="is_safe")
            safe = safe.strip().lower() in ("true", "1")
        extra = {k: v for k, v in r.items() if k not in ("prompt", "response")}
        extra.update(row=i, is_safe=bool(safe))
        if safe:
            return AlignRecord("harmless", prompt, resp, source="beavertails", extra=extra)
        return AlignRecord("harmless", prompt, rejected=resp, source="beavertails", extra=extra)

    return _limit(convert_rows(name, rows, conv, skip_bad), limit)


def _answers(path: Path, i: int, r: dict, name: str) -> list[str]:
    value = field_str(path, i, r, name)
    answers = [a.strip() for a in value.split(";") if a.strip()]
    if not answers:
        raise DataError(path, "no answers in the list", row=i, field=name)
    return answers


def load_truthfulqa(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                    skip_bad: bool = False) -> list[AlignRecord]:
    """TruthfulQA generation CSV -> honest records: prompt = question, response = best answer,
    chosen/rejected = best answer / first incorrect answer; lists kept in ``extra``."""
    loc = _locate(source, "truthfulqa_csv", data_dir)
    if isinstance(loc, str):
        rows = [{"Type": r["type"], "Category": r["category"], "Question": r["question"],
                 "Best Answer": r["best_answer"], "Correct Answers": "; ".join(r["correct_answers"]),
                 "Incorrect Answers": "; ".join(r["incorrect_answers"]), "Source": r["source"]}
                for r in _hub_rows(loc, "validation", "generation")]
        loc = Path(loc)
    else:
        rows = read_csv(loc, ["Question", "Best Answer", "Correct Answers", "Incorrect Answers"])

    def conv(i: int, r: dict) -> AlignRecord:
        q = field_str(loc, i, r, "Question")
        best = field_str(loc, i, r, "Best Answer")
        correct = _answers(loc, i, r, "Correct Answers")
        incorrect = _answers(loc, i, r, "Incorrect Answers")
        best_incorrect = (r.get("Best Incorrect Answer") or "").strip() or incorrect[0]
        return AlignRecord("honest", q, best, chosen=best, rejected=best_incorrect, source="truthfulqa",
                           extra={"row": i, "type": r.get("Type", ""), "category": r.get("Category", ""),
                                  "correct_answers": correct, "incorrect_answers": incorrect,
                                  "source_url": r.get("Source", "")})

    return _limit(convert_rows(loc, rows, conv, skip_bad), limit)


def load_truthfulqa_mc(source: PathLike = None, *, data_dir: PathLike = None,
                       limit: int | None = None) -> list[dict]:
    """TruthfulQA multiple choice: ``question``, ``mc1_targets``, ``mc2_targets`` (answer -> 0/1)."""
    loc = _locate(source, "truthfulqa_mc", data_dir)
    if isinstance(loc, str):
        raise DataError(loc, "hub loading of the MC task is not supported: pass mc_task.json")
    rows = read_json_list(loc)
    for i, r in enumerate(rows):
        field_str(loc, i, r, "question")
        for key in ("mc1_targets", "mc2_targets"):
            t = r.get(key) if isinstance(r, dict) else None
            if not isinstance(t, dict) or not t:
                raise DataError(loc, "expected a non-empty object answer -> 0/1", row=i, field=key)
            if any(v not in (0, 1) for v in t.values()) or 1 not in t.values():
                raise DataError(loc, "labels must be 0/1 with at least one 1", row=i, field=key)
    return _limit(rows, limit)


def load_model_outputs(source: str | os.PathLike, *, limit: int | None = None,
                       skip_bad: bool = False) -> list[AlignRecord]:
    """AlpacaEval ``model_outputs.json`` (``instruction``, ``output``, ``generator``, ``dataset``)."""
    path = Path(source)
    rows = read_json_list(path)

    def conv(i: int, r: Any) -> AlignRecord:
        instr = field_str(path, i, r, "instruction")
        out = field_str(path, i, r, "output", allow_empty=True)
        return AlignRecord("helpful", instr, out, source=f"alpaca_eval:{path.name}",
                           extra={"row": i, "generator": r.get("generator", ""), "dataset": r.get("dataset", "")})

    return _limit(convert_rows(path, rows, conv, skip_bad), limit)


def _preference_direction(path: Path, i: int, value: Any) -> list[float]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise DataError(path, "not a JSON list of numbers", row=i, field="Preference Direction") from None
    if not isinstance(value, list) or len(value) != N_PREFERENCE_DIMS:
        n = len(value) if isinstance(value, list) else type(value).__name__
        raise DataError(path, f"expected {N_PREFERENCE_DIMS} values, got {n}", row=i, field="Preference Direction")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in value):
        raise DataError(path, "values must be numbers in [0, 1]", row=i, field="Preference Direction")
    return [float(v) for v in value]


def _comparative_feedback(path: Path, i: int, value: Any) -> list[dict]:
    if isinstance(value, str):
        import ast

        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
            raise DataError(path, "not a list of prompt/chosen/rejected objects", row=i,
                            field="Pair-wise Comparative Feedback") from None
    if not isinstance(value, list) or not all(
            isinstance(p, dict) and {"prompt", "chosen", "rejected"} <= p.keys() for p in value):
        raise DataError(path, "expected a list of prompt/chosen/rejected objects", row=i,
                        field="Pair-wise Comparative Feedback")
    return value


def load_alignx(source: str | os.PathLike, *, limit: int | None = None, skip_bad: bool = False) -> list[AlignRecord]:
    """AlignX / P-Soups preference rows. Keeps ``Preference Direction`` (90 values, validated),
    ``Demographic Information``, ``User-Generated Content``, ``Pair-wise Comparative Feedback``,
    and the P-Soups ``ground_truth_persona``/``profile`` in ``extra``."""
    path = Path(source)
    rows = read_jsonl(path) if path.suffix == ".jsonl" else read_json_list(path)

    def conv(i: int, r: Any) -> AlignRecord:
        prompt = field_str(path, i, r, "prompt")
        chosen = field_str(path, i, r, "chosen")
        rejected = field_str(path, i, r, "rejected")
        extra: dict[str, Any] = {"row": i}
        for k, v in r.items():
            if k in ("prompt", "chosen", "rejected"):
                continue
            if k == "Preference Direction":
                v = _preference_direction(path, i, v)
            elif k == "Pair-wise Comparative Feedback":
                v = _comparative_feedback(path, i, v)
            extra[k] = v
        return AlignRecord("personal", prompt, chosen=chosen, rejected=rejected,
                           source=f"alignx:{path.name}", extra=extra)

    return _limit(convert_rows(path, rows, conv, skip_bad), limit)


def load_preference_dimensions(source: PathLike = None, *, data_dir: PathLike = None) -> list[dict]:
    """The 90 AlignX preference dimensions, in ``Preference Direction`` index order."""
    path = Path(source) if source else resolve_data_dir(data_dir) / FILES["preference_dimensions"]
    rows = read_json_list(path)
    if len(rows) != N_PREFERENCE_DIMS:
        raise DataError(path, f"expected {N_PREFERENCE_DIMS} dimensions, got {len(rows)}")
    for i, r in enumerate(rows):
        field_str(path, i, r, "positive")
        field_str(path, i, r, "negative")
    return rows


def load_sft_file(source: str | os.PathLike, *, axis: str = "helpful", limit: int | None = None,
                  skip_bad: bool = False) -> list[AlignRecord]:
    """A user's training file: JSON list / JSONL of ``{instruction, input?, output}`` (Alpaca) or
    ``{prompt, response}``, or CSV with ``prompt,response`` columns. Every row is validated."""
    path = Path(source)
    if path.suffix.lower() == ".csv":
        rows = read_csv(path, ["prompt", "response"])
    elif path.suffix.lower() == ".jsonl":
        rows = read_jsonl(path)
    elif path.suffix.lower() == ".json":
        rows = read_json_list(path)
    else:
        raise DataError(path, "unsupported file type: use .json, .jsonl or .csv")

    def conv(i: int, r: Any) -> AlignRecord:
        if isinstance(r, dict) and "instruction" in r:
            prompt = _prompt(field_str(path, i, r, "instruction"),
                             field_str(path, i, r, "input", allow_empty=True, default=""))
            response = field_str(path, i, r, "output")
        else:
            prompt, response = field_str(path, i, r, "prompt"), field_str(path, i, r, "response")
        return AlignRecord(axis, prompt, response, source=f"file:{path.name}", extra={"row": i})

    return _limit(convert_rows(path, rows, conv, skip_bad), limit)
