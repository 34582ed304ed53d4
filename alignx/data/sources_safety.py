"""Second-wave safety sources (DATA.md, "Sources (second wave)") -> ``AlignRecord``.

Every loader: ``load_x(source=None, *, data_dir=None, limit=None, skip_bad=False)``; ``source`` is
a local file (default: the data directory's file), ``limit`` keeps the first rows (only those
are validated), bad rows raise ``DataError(file, message, row, field)`` (``skip_bad`` logs and
drops them). Unsafe answers are kept as ``rejected``, never as ``response`` (a training target).
Labels go to ``extra``: ``harmful`` (the prompt is a harmful request: True/False), ``label``,
``category``, ``row`` (the file row), plus each source's own fields.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from alignx.data.readers import (convert_head, field_str, local_file, read_csv, read_json, read_json_list,
                                 read_jsonl, split_list)
from alignx.data.records import AlignRecord, DataError

PathLike = str | os.PathLike | None
HONESTY_SUBCATEGORIES = ("false presuppositions", "universal unknowns")   # CoCoNot: honesty prompts


def _text(path: Path, i: int, r: Any, name: str) -> str:
    return field_str(path, i, r, name).strip()


def load_xstest(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                skip_bad: bool = False) -> list[AlignRecord]:
    """XSTest: 250 safe prompts that look unsafe and 200 unsafe contrasts; ``extra['label']`` is
    ``safe``/``unsafe`` (``harmful`` = label is unsafe), ``type`` the prompt type."""
    path = local_file(source, "xstest", data_dir)
    rows = read_csv(path, ["prompt", "type", "label"])

    def conv(i: int, r: dict) -> AlignRecord:
        label = _text(path, i, r, "label")
        if label not in ("safe", "unsafe"):
            raise DataError(path, f"expected 'safe' or 'unsafe', got {label!r}", row=i, field="label")
        return AlignRecord("harmless", _text(path, i, r, "prompt"), source="xstest",
                           extra={"row": i, "id": r.get("id", ""), "label": label, "harmful": label == "unsafe",
                                  "type": r.get("type", ""), "focus": r.get("focus", ""), "note": r.get("note", "")})

    return convert_head(path, rows, conv, limit, skip_bad)


def _coconot(key: str, name: str, pref: bool, source: PathLike, data_dir: PathLike, limit: int | None,
             skip_bad: bool) -> list[AlignRecord]:
    path = local_file(source, key, data_dir)
    rows = read_jsonl(path)

    def conv(i: int, r: Any) -> AlignRecord:
        prompt = _text(path, i, r, "prompt")
        sub = field_str(path, i, r, "subcategory", allow_empty=True, default="")
        extra = {"row": i, "id": r.get("id", ""), "category": field_str(path, i, r, "category"), "subcategory": sub,
                 "honesty": sub in HONESTY_SUBCATEGORIES}
        if pref:
            extra.update(harmful=False, chosen_model=r.get("chosen_model", ""),
                         rejected_model=r.get("rejected_model", ""))
            return AlignRecord("harmless", prompt, chosen=field_str(path, i, r, "chosen"),
                               rejected=field_str(path, i, r, "rejected"), source=name, extra=extra)
        extra["harmful"] = name == "coconot_eval" and extra["category"] == "Requests with safety concerns"
        extra["should_comply"] = name == "coconot_contrast"
        return AlignRecord("harmless", prompt, source=name, extra=extra)

    return convert_head(path, rows, conv, limit, skip_bad)


def load_coconot_pref(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                      skip_bad: bool = False) -> list[AlignRecord]:
    """CoCoNot contrast preferences: compliant ``chosen`` over an over-refusing ``rejected``."""
    return _coconot("coconot_pref", "coconot_pref", True, source, data_dir, limit, skip_bad)


def load_coconot_contrast(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                          skip_bad: bool = False) -> list[AlignRecord]:
    """CoCoNot contrast evaluation (379 prompts to comply with): ``extra['should_comply'] = True``."""
    return _coconot("coconot_contrast", "coconot_contrast", False, source, data_dir, limit, skip_bad)


def load_coconot_eval(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                      skip_bad: bool = False) -> list[AlignRecord]:
    """CoCoNot noncompliance evaluation (1,001 prompts not to comply with fully)."""
    return _coconot("coconot_eval", "coconot_eval", False, source, data_dir, limit, skip_bad)


def load_oktest(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                skip_bad: bool = False) -> list[AlignRecord]:
    """OKTest: benign prompts with harmful-looking words (no answers; trailing newlines stripped)."""
    path = local_file(source, "oktest", data_dir)
    rows = read_csv(path, ["prompt"])
    return convert_head(path, rows, lambda i, r: AlignRecord("harmless", _text(path, i, r, "prompt"), source="oktest",
                                                              extra={"row": i, "harmful": False}), limit, skip_bad)


def load_pku_pairs(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                   skip_bad: bool = False) -> list[AlignRecord]:
    """PKU-SafeRLHF pairs: ``response`` = [safe, unsafe] (a list or a JSON string of one) ->
    ``chosen`` = safe, ``rejected`` = unsafe."""
    path = local_file(source, "pku_pairs", data_dir)
    rows = read_json_list(path)

    def conv(i: int, r: Any) -> AlignRecord:
        prompt = _text(path, i, r, "prompt")
        if not isinstance(r, dict) or r.get("response") is None:
            raise DataError(path, "missing field", row=i, field="response")
        safe, unsafe = split_list(path, i, r["response"], "response", n=2)
        return AlignRecord("harmless", prompt, chosen=safe, rejected=unsafe, source="pku_pairs",
                           extra={"row": i, "harmful": True})

    return convert_head(path, rows, conv, limit, skip_bad)


def parse_guardreasoner(path: Path, i: int, r: Any) -> tuple[str, str, str]:
    """GuardReasoner row -> (prompt, response, label): ``input`` = "Human user:\\n{prompt}\\n\\nAI
    assistant:\\n{response}\\n\\n", ``output`` ends with "Response: harmful" / "unharmful"."""
    text = field_str(path, i, r, "input")
    head, sep, response = text.partition("\n\nAI assistant:\n")
    if not head.startswith("Human user:\n") or not sep:
        raise DataError(path, "expected 'Human user:\\n...\\n\\nAI assistant:\\n...'", row=i, field="input")
    prompt = head[len("Human user:\n"):].strip()
    if not prompt:
        raise DataError(path, "empty prompt", row=i, field="input")
    last = field_str(path, i, r, "output").strip().rsplit("\n", 1)[-1].strip()
    if last not in ("Response: harmful", "Response: unharmful"):
        raise DataError(path, f"expected a last line 'Response: harmful|unharmful', got {last!r}", row=i,
                        field="output")
    return prompt, response.strip(), last.split(": ", 1)[1]


def _guardreasoner(key: str, name: str, source: PathLike, data_dir: PathLike, limit: int | None,
                   skip_bad: bool) -> list[AlignRecord]:
    path = local_file(source, key, data_dir)
    rows = read_json_list(path)

    def conv(i: int, r: Any) -> AlignRecord:
        prompt, response, label = parse_guardreasoner(path, i, r)
        extra = {"row": i, "label": label, "harmful_response": label == "harmful"}
        if label == "harmful":
            return AlignRecord("harmless", prompt, rejected=response, source=name, extra=extra)
        return AlignRecord("harmless", prompt, response, source=name, extra=extra)

    return convert_head(path, rows, conv, limit, skip_bad)


def load_pku_labelled(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                      skip_bad: bool = False) -> list[AlignRecord]:
    """PKU-SafeRLHF test responses labelled harmful/unharmful (role judge-eval). A harmful answer
    is ``rejected``, an unharmful one ``response``; ``extra['label']`` says which."""
    return _guardreasoner("pku_labelled", "pku_labelled", source, data_dir, limit, skip_bad)


def load_beavertails_30k_test(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                              skip_bad: bool = False) -> list[AlignRecord]:
    """BeaverTails 30k_test (the H3Fusion harmlessness set: its first 500 prompts in file order),
    one labelled response per row, as ``load_pku_labelled``."""
    return _guardreasoner("beavertails_30k_test", "beavertails_30k_test", source, data_dir, limit, skip_bad)


DNA_MODELS = ("GPT4", "ChatGPT", "Claude", "ChatGLM2", "llama2-7b-chat", "vicuna-7b")


def load_do_not_answer(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                       skip_bad: bool = False) -> list[AlignRecord]:
    """Do-Not-Answer: harmful questions; ``extra['responses']`` = model -> {response, harmful (0/1,
    human label), action (0-5)} for the six models."""
    path = local_file(source, "do_not_answer", data_dir)
    rows = read_csv(path, ["question"] + [f"{m}_{c}" for m in DNA_MODELS for c in ("response", "harmful")])

    def conv(i: int, r: dict) -> AlignRecord:
        responses = {}
        for m in DNA_MODELS:
            harmful = (r.get(f"{m}_harmful") or "").strip()
            if harmful not in ("0", "1"):
                raise DataError(path, f"expected 0 or 1, got {harmful!r}", row=i, field=f"{m}_harmful")
            responses[m] = {"response": field_str(path, i, r, f"{m}_response", allow_empty=True),
                            "harmful": int(harmful), "action": (r.get(f"{m}_action") or "").strip()}
        return AlignRecord("harmless", _text(path, i, r, "question"), source="do_not_answer",
                           extra={"row": i, "id": r.get("id", ""), "harmful": True, "risk_area": r.get("risk_area", ""),
                                  "types_of_harm": r.get("types_of_harm", ""),
                                  "specific_harms": r.get("specific_harms", ""), "responses": responses})

    return convert_head(path, rows, conv, limit, skip_bad)


def _instructions(key: str, axis: str, harmful: bool, source: PathLike, data_dir: PathLike, limit: int | None,
                  skip_bad: bool) -> list[AlignRecord]:
    """refusal_direction/*.json: a list of ``instruction``, ``category`` (may be null)."""
    path = local_file(source, key, data_dir)
    rows = read_json_list(path)

    def conv(i: int, r: Any) -> AlignRecord:
        cat = r.get("category") if isinstance(r, dict) else None
        return AlignRecord(axis, _text(path, i, r, "instruction"), source=key,
                           extra={"row": i, "harmful": harmful, "category": cat if isinstance(cat, str) else ""})

    return convert_head(path, rows, conv, limit, skip_bad)


def load_advbench(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                  skip_bad: bool = False) -> list[AlignRecord]:
    """AdvBench harmful behaviors (520 instructions)."""
    return _instructions("advbench", "harmless", True, source, data_dir, limit, skip_bad)


def load_strongreject(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                      skip_bad: bool = False) -> list[AlignRecord]:
    """StrongREJECT harmful instructions (313), with a category."""
    return _instructions("strongreject", "harmless", True, source, data_dir, limit, skip_bad)


def load_tdc2023(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                 skip_bad: bool = False) -> list[AlignRecord]:
    """TDC 2023 red-teaming behaviors (100)."""
    return _instructions("tdc2023", "harmless", True, source, data_dir, limit, skip_bad)


def load_rd_alpaca(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                   skip_bad: bool = False) -> list[AlignRecord]:
    """Alpaca-52k instructions without an input field (31,323; no answers): helpful prompts."""
    return _instructions("rd_alpaca", "helpful", False, source, data_dir, limit, skip_bad)


def _harmbench(key: str, source: PathLike, data_dir: PathLike, limit: int | None, skip_bad: bool) -> list[AlignRecord]:
    path = local_file(source, key, data_dir)
    rows = read_csv(path, ["Behavior", "FunctionalCategory", "SemanticCategory", "ContextString", "BehaviorID"])

    def conv(i: int, r: dict) -> AlignRecord:
        behavior = _text(path, i, r, "Behavior")
        context = (r.get("ContextString") or "").strip()
        prompt = f"{context}\n\n---\n\n{behavior}" if context else behavior      # HarmBench's contextual template
        extra = {"row": i, "harmful": True, "behavior": behavior, "context": context,
                 "functional_category": r.get("FunctionalCategory", ""), "category": r.get("SemanticCategory", ""),
                 "tags": r.get("Tags", ""), "behavior_id": field_str(path, i, r, "BehaviorID")}
        if context:
            extra["match_texts"] = [behavior]          # decontamination also matches the bare behavior
        return AlignRecord("harmless", prompt, source=key, extra=extra)

    return convert_head(path, rows, conv, limit, skip_bad)


def load_harmbench_val(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                       skip_bad: bool = False) -> list[AlignRecord]:
    """HarmBench text behaviors, validation split (80; train role). Contextual behaviors get the
    context in the prompt ("{context}\\n\\n---\\n\\n{behavior}")."""
    return _harmbench("harmbench_val", source, data_dir, limit, skip_bad)


def load_harmbench_test(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                        skip_bad: bool = False) -> list[AlignRecord]:
    """HarmBench text behaviors, test split (320; eval role), as ``load_harmbench_val``."""
    return _harmbench("harmbench_test", source, data_dir, limit, skip_bad)


def _nested_questions(path: Path, data: Any) -> list[dict]:
    """``{category: {subcategory: [question, ...]}}`` (or a plain list) -> rows in file order."""
    if isinstance(data, list):
        return [{"question": q, "category": "", "subcategory": ""} for q in data]
    if not isinstance(data, dict):
        raise DataError(path, f"expected a list or an object category -> subcategory -> questions, "
                              f"got {type(data).__name__}")
    rows = []
    for cat, subs in data.items():
        if not isinstance(subs, dict):
            raise DataError(path, f"expected an object subcategory -> questions, got {type(subs).__name__}", field=cat)
        for sub, qs in subs.items():
            if not isinstance(qs, list):
                raise DataError(path, f"expected a list of questions, got {type(qs).__name__}", field=f"{cat}/{sub}")
            rows += [{"question": q, "category": cat, "subcategory": sub.rstrip(":")} for q in qs]
    if not rows:
        raise DataError(path, "no rows")
    return rows


def _red_instruct(key: str, source: PathLike, data_dir: PathLike, limit: int | None,
                  skip_bad: bool) -> list[AlignRecord]:
    path = local_file(source, key, data_dir)
    rows = _nested_questions(path, read_json(path))

    def conv(i: int, r: dict) -> AlignRecord:
        return AlignRecord("harmless", _text(path, i, r, "question"), source=key,
                           extra={"row": i, "harmful": True, "category": r["category"],
                                  "subcategory": r["subcategory"]})

    return convert_head(path, rows, conv, limit, skip_bad)


def load_catqa(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
               skip_bad: bool = False) -> list[AlignRecord]:
    """CatQA (English): harmful questions, category -> subcategory -> questions (550)."""
    return _red_instruct("catqa", source, data_dir, limit, skip_bad)


def load_dangerousqa(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                     skip_bad: bool = False) -> list[AlignRecord]:
    """DangerousQA: a list of 200 harmful questions."""
    return _red_instruct("dangerousqa", source, data_dir, limit, skip_bad)


def load_harmfulqa(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                   skip_bad: bool = False) -> list[AlignRecord]:
    """HarmfulQA: harmful questions by topic -> subtopic (1,960)."""
    return _red_instruct("harmfulqa", source, data_dir, limit, skip_bad)


def load_simplesafetytests(source: PathLike = None, *, data_dir: PathLike = None, limit: int | None = None,
                           skip_bad: bool = False) -> list[AlignRecord]:
    """SimpleSafetyTests: 100 clearly harmful prompts (``prompts_final``) in five harm areas."""
    path = local_file(source, "simplesafetytests", data_dir)
    rows = read_csv(path, ["prompts_final", "harm_area", "category"])
    return convert_head(path, rows, lambda i, r: AlignRecord(
        "harmless", _text(path, i, r, "prompts_final"), source="simplesafetytests",
        extra={"row": i, "id": r.get("id", ""), "harmful": True, "harm_area": r.get("harm_area", ""),
               "category": r.get("category", "")}), limit, skip_bad)
