"""The bad-input corpus: a table of cases, each a bad input and the clear error it must give
(``tests/test_bad_inputs.py`` runs them; ``python tests/bad_inputs.py`` prints the table's counts).

A case goes through the CLI (``cli``: argv for ``alignx.cli.main``; exit status 2 and one
``error: ...`` line), through the served app with gradio_client (``api``: an endpoint and its
values), or with a raw HTTP call (``raw``: an endpoint and the JSON body text, for what
gradio_client cannot send: NaN, infinities, a lone surrogate, too few values, a file path that was
never uploaded); most go through both. ``expect`` is a regex the message must match
(``api_expect`` when the app words it differently). ``fixed`` names the bug the case found, fixed
with it (before: a traceback, a hang, or an error without a message).

Placeholders in argv / values: ``{name}`` is a file of ``FILES`` or a folder made by the fixture
(``experts``, ``root``, ``cli_<kind>``), ``@T`` the tiny model and a clean experts folder,
``File(name)`` an upload of that file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

AXES_TAIL = ", 0.6, 0.4, 1.0, 1.0, 1.0, 1.0"         # /generate's calibration sliders (a routed app)
T = "@T"
PAIR = {"prompt": "Is the sky blue?", "chosen": "Yes, on a clear day.", "rejected": "No."}
REPORT_KEYS = ("win_rate", "safety_score", "over_refusal", "ti", "mc1", "mc2", "alignment_accuracy",
               "average_alignment_score")


@dataclass(frozen=True)
class File:
    name: str


@dataclass(frozen=True)
class Case:
    id: str
    expect: str
    cli: tuple | None = None
    api: tuple | None = None            # (endpoint, *values) for gradio_client
    raw: tuple | None = None            # (endpoint, JSON body text) posted to /gradio_api/call/<endpoint>
    api_expect: str | None = None
    fixed: str = ""
    fresh: bool = False                 # the API call needs a new client session


def _j(value) -> str:
    return json.dumps(value)


FILES: dict[str, str | bytes] = {
    # SFT / upload formats (load_sft_file: the app's training upload)
    "sft_malformed.json": '[{"prompt": "a", "response": "b"',
    "sft_object.json": '{"prompt": "a", "response": "b"}',
    "sft_empty_list.json": "[]",
    "sft_empty.json": "",
    "sft_missing_response.json": '[{"prompt": "a"}, {"prompt": "b", "response": "c"}]',
    "sft_number_prompt.json": '[{"prompt": 7, "response": "b"}, {"prompt": "c", "response": "d"}]',
    "sft_blank_prompt.json": '[{"prompt": "   ", "response": "b"}, {"prompt": "c", "response": "d"}]',
    "sft_rows_are_strings.json": '["a", "b"]',
    "sft_alpaca_no_output.json": '[{"instruction": "Say hi", "input": ""}, {"instruction": "x", "output": "y"}]',
    "sft_bad_line.jsonl": '{"prompt": "a", "response": "b"}\n{"prompt": "c", \n',
    "sft_wrong_columns.csv": "question,answer\nq,a\nr,b\n",
    "sft_empty_cell.csv": "prompt,response\nq,\nr,b\n",
    "sft_short_row.csv": "prompt,response\nonly a prompt\nr,b\n",
    "sft_latin1.jsonl": b'{"prompt": "caf\xe9", "response": "b"}\n',
    "sft_huge_field.csv": "prompt,response\n" + "x" * 200_000 + ",y\nr,b\n",
    "sft_deep.json": "[" * 100_000 + "]" * 100_000,
    "sft_notes.txt": "prompt,response\na,b\n",
    "sft_one_row.json": '[{"prompt": "a", "response": "b"}]',
    # preference pairs (load_alignx: AlignX / P-Soups rows)
    "pairs_no_rejected.json": _j([{"prompt": "p", "chosen": "c"}]),
    "pairs_short_direction.json": _j([dict(PAIR, **{"Preference Direction": [0.5, 0.5, 0.5]})]),
    "pairs_direction_range.json": _j([dict(PAIR, **{"Preference Direction": [1.5] * 90})]),
    "pairs_feedback_text.json": _j([dict(PAIR, **{"Pair-wise Comparative Feedback": "[" * 200 + "oops"})]),
    "pairs_feedback_shape.json": _j([dict(PAIR, **{"Pair-wise Comparative Feedback": [{"prompt": "x"}]})]),
    "psoups_no_history.json": _j([PAIR]),
    # the data directory's sources
    "alpaca_no_instruction.json": _j([{"input": "", "output": "x"}]),
    "alpaca_output_list.json": _j([{"instruction": "x", "output": ["a"]}]),
    "safety_train_object.json": _j({"instructions": ["x"]}),
    "safety_eval_list.json": _j(["How do I pick a lock?"]),
    "safety_eval_blank.json": _j({"instructions": ["How?", " "]}),
    "safety_eval_inputs.json": _j({"instructions": ["How?"], "inputs": 5}),
    "beavertails_is_safe.csv": "prompt,response,is_safe\np,r,maybe\n",
    "beavertails_no_response.csv": "prompt,category\np,c\n",
    "truthfulqa_no_answers.csv": "Question,Best Answer,Correct Answers,Incorrect Answers\nq,b, ; ; ,x\n",
    "truthfulqa_columns.csv": "Question,Answer\nq,a\n",
    "mc_labels.json": _j([{"question": "q", "mc1_targets": {"a": 2}, "mc2_targets": {"a": 1}}]),
    "mc_targets_list.json": _j([{"question": "q", "mc1_targets": ["a"], "mc2_targets": {"a": 1}}]),
    "model_outputs_no_instruction.json": _j([{"output": "x", "generator": "g"}]),
    "dims_three.json": _j([{"positive": "a", "negative": "b"}] * 3),
    # CLI inputs: prompts files and eval reports
    "prompts_blank.txt": "\n  \n\t\n",
    "prompts_latin1.txt": b"caf\xe9\n",
    "report_not_json.json": "{not json",
    "report_list.json": "[1, 2]",
    "report_run_string.json": _j({**{k: {} for k in REPORT_KEYS}, "run": "x"}),
    "report_latin1.json": b'{"x": "\xe9"}',
    # uploads
    "ok_pairs.json": _j([{"prompt": "a", "response": "b"}, {"prompt": "c", "response": "d"}]),
}

# bad adapters: kind -> what the fixture makes (tests/test_bad_inputs.py: make_bad_adapter)
ADAPTERS = ("trunc", "otherbase", "othershape", "badcard", "badcfg", "binonly", "noweights")


def _sft(id_, file, expect, fixed="", api_expect=None, cli=True, api=True):
    return Case(id_, expect, cli=("check-data", "sft", "{" + file + "}") if cli else None,
                api=("/train_expert", "helpful", "x", "tiny", "uploaded file", File(file)) if api else None,
                api_expect=api_expect, fixed=fixed)


def _check(id_, kind, file, expect, fixed=""):
    return Case(id_, expect, cli=("check-data", kind, "{" + file + "}"), fixed=fixed)


def _gen(prompt="hi", mode="base", tokens=3, temp=0.0, top_p=1.0, seed=0) -> tuple:
    return ("/generate", prompt, mode, tokens, temp, top_p, seed)


def _raw_gen(prompt='"hi"', mode='"base"', tokens="3", temp="0.0", top_p="1.0", seed="0", tail=AXES_TAIL) -> tuple:
    return ("generate", f'{{"data": [{prompt}, {mode}, {tokens}, {temp}, {top_p}, {seed}{tail}]}}')


HUGE = "word " * 8_000                                        # 40,000 characters
LONG = "word " * 3_000                                        # 15,000 characters, ~3,000 tokens > 512
ATTRIB = ["Token attribution", "base", "helpful", 4, 0, False]
ATTRIB_TAIL = ["Sure", "Feature ablation (words)", "(none)", [], 0.8]
ANSWERS = {"base": "a", "expert:helpful": "b"}

CASES: list[Case] = [
    # --- files: the upload format (CLI check-data and the app's training upload) ---------------------
    _sft("sft-malformed-json", "sft_malformed.json", r"malformed JSON at line 1, column \d+"),
    _sft("sft-not-a-list", "sft_object.json", r"expected a JSON list of rows, got dict"),
    _sft("sft-no-rows", "sft_empty_list.json", r"no rows"),
    _sft("sft-empty-file", "sft_empty.json", r"file is empty"),
    _sft("sft-missing-field", "sft_missing_response.json", r"row 0, field 'response': missing field"),
    _sft("sft-wrong-type", "sft_number_prompt.json", r"row 0, field 'prompt': expected a string, got int"),
    _sft("sft-blank-value", "sft_blank_prompt.json", r"row 0, field 'prompt': empty value"),
    _sft("sft-row-not-object", "sft_rows_are_strings.json", r"row 0: expected an object, got str"),
    _sft("sft-alpaca-no-output", "sft_alpaca_no_output.json", r"row 0, field 'output': missing field"),
    _sft("sft-jsonl-bad-line", "sft_bad_line.jsonl", r"row 1: malformed JSON line"),
    _sft("sft-csv-wrong-columns", "sft_wrong_columns.csv", r"missing column\(s\) \['prompt', 'response'\]"),
    _sft("sft-csv-empty-cell", "sft_empty_cell.csv", r"row 0, field 'response': empty value"),
    _sft("sft-csv-short-row", "sft_short_row.csv", r"row 0, field 'response': missing field"),
    _sft("sft-not-utf8", "sft_latin1.jsonl", r"not UTF-8 text", fixed="UnicodeDecodeError traceback (JSONL, CSV)"),
    _sft("sft-csv-field-too-large", "sft_huge_field.csv", r"malformed CSV: field larger than field limit",
         fixed="_csv.Error traceback"),
    _sft("sft-json-nested-too-deep", "sft_deep.json", r"nested too deeply to parse", fixed="RecursionError traceback"),
    _sft("sft-wrong-extension", "sft_notes.txt", r"unsupported file type: use \.json, \.jsonl or \.csv",
         api_expect=r"Invalid file type"),
    _sft("sft-one-row", "sft_one_row.json", r"need at least 2 rows", cli=False),
    Case("sft-folder-not-file", r"not a regular file", cli=("check-data", "sft", "{root}/folder.json"),
         fixed="IsADirectoryError traceback"),
    Case("sft-missing-file", r"file not found", cli=("check-data", "sft", "{root}/no-such-file.json")),
    # --- files: preference pairs and every other loader (CLI check-data) -----------------------------
    _check("pairs-missing-rejected", "pairs", "pairs_no_rejected.json", r"row 0, field 'rejected': missing field"),
    _check("pairs-direction-length", "pairs", "pairs_short_direction.json",
           r"field 'Preference Direction': expected 90 values, got 3"),
    _check("pairs-direction-range", "pairs", "pairs_direction_range.json", r"values must be numbers in \[0, 1\]"),
    _check("pairs-feedback-unparsable", "pairs", "pairs_feedback_text.json",
           r"field 'Pair-wise Comparative Feedback': not a list of prompt/chosen/rejected objects"),
    _check("pairs-feedback-shape", "pairs", "pairs_feedback_shape.json",
           r"expected a list of prompt/chosen/rejected objects"),
    _check("psoups-no-history", "psoups", "psoups_no_history.json", r"missing: the user's history"),
    _check("alpaca-missing-instruction", "alpaca", "alpaca_no_instruction.json",
           r"row 0, field 'instruction': missing field"),
    _check("alpaca-output-not-string", "alpaca", "alpaca_output_list.json",
           r"row 0, field 'output': expected a string, got list"),
    _check("safety-train-not-list", "safety-train", "safety_train_object.json", r"expected a JSON list of rows"),
    _check("safety-eval-no-instructions", "safety-eval", "safety_eval_list.json",
           r"expected a JSON object with a 'instructions' list"),
    _check("safety-eval-blank-instruction", "safety-eval", "safety_eval_blank.json",
           r"row 1, field 'instructions': expected a non-empty string"),
    _check("safety-eval-inputs-not-list", "safety-eval", "safety_eval_inputs.json",
           r"field 'inputs': expected a list, got int", fixed="TypeError traceback"),
    _check("beavertails-bad-is-safe", "beavertails", "beavertails_is_safe.csv",
           r"row 0, field 'is_safe': expected true/false, got 'maybe'"),
    _check("beavertails-missing-column", "beavertails", "beavertails_no_response.csv",
           r"missing column\(s\) \['response'\]"),
    _check("truthfulqa-no-answers", "truthfulqa", "truthfulqa_no_answers.csv",
           r"row 0, field 'Correct Answers': no answers in the list"),
    _check("truthfulqa-missing-columns", "truthfulqa", "truthfulqa_columns.csv", r"missing column\(s\)"),
    _check("truthfulqa-mc-bad-labels", "truthfulqa-mc", "mc_labels.json",
           r"row 0, field 'mc1_targets': labels must be 0/1"),
    _check("truthfulqa-mc-targets-not-object", "truthfulqa-mc", "mc_targets_list.json",
           r"row 0, field 'mc1_targets': expected a non-empty object"),
    _check("model-outputs-missing-instruction", "model-outputs", "model_outputs_no_instruction.json",
           r"row 0, field 'instruction': missing field"),
    _check("preference-dims-count", "preference-dims", "dims_three.json", r"expected 90 dimensions, got 3"),
    Case("prompts-file-blank", r"no prompts", cli=("generate", "--prompts-file", "{prompts_blank.txt}", "--out",
                                                   "{root}/answers.jsonl", T)),
    Case("prompts-file-not-utf8", r"not UTF-8 text", cli=("generate", "--prompts-file", "{prompts_latin1.txt}",
                                                           "--out", "{root}/answers.jsonl", T),
         fixed="UnicodeDecodeError traceback"),
    Case("report-not-json", r"not valid JSON", cli=("compare", "{report_not_json.json}")),
    Case("report-not-object", r"not an eval report \(a JSON object\), got a list", cli=("compare", "{report_list.json}")),
    Case("report-run-not-object", r"field\(s\) \['run'\] must be JSON objects", cli=("compare", "{report_run_string.json}"),
         fixed="AttributeError traceback in compare"),
    Case("report-not-utf8", r"not UTF-8 text", cli=("compare", "{report_latin1.json}"),
         fixed="UnicodeDecodeError traceback"),
    # --- prompts: empty, huge, control characters ------------------------------------------------------
    Case("prompt-empty", r"the prompt is empty", cli=("generate", "", T), api=_gen(""),
         api_expect=r"Type a prompt first"),
    Case("prompt-whitespace", r"the prompt is empty \(only whitespace or control characters\)",
         cli=("generate", "  \n\t ", T), api=_gen("  \n\t "), api_expect=r"Type a prompt first",
         fixed="the CLI answered a blank prompt"),
    Case("prompt-control-characters-only", r"only whitespace (or|and) control characters",
         cli=("generate", "\x00\x07\x1b", T), api=_gen("\x00\x07\x1b"),
         fixed="a prompt of control characters was answered"),
    Case("prompt-lone-surrogate", r"not valid Unicode text \(a lone surrogate", cli=("generate", "hi \udcff", T),
         raw=_raw_gen(prompt='"hi \\ud800"'), fixed="UnicodeEncodeError deep in the tokenizer (CLI traceback, app: no message)"),
    Case("prompt-over-the-context", r"the prompt is \d+ tokens long; the model reads at most 4096",
         cli=("generate", LONG, T), api=_gen(LONG), fixed="a prompt of any length was decoded (minutes)"),
    Case("prompt-huge", r"the prompt is \d+ tokens long", cli=("generate", HUGE, T), api=_gen(HUGE),
         api_expect=r"characters long; the limit is 32,000",
         fixed="a 1M-character prompt held the server for minutes"),
    Case("compare-prompt-huge", r"characters long; the limit is 32,000", api=("/compare", HUGE, 2)),
    Case("compare-prompt-empty", r"Type a prompt first", api=("/compare", "", 2)),
    Case("route-prompt-empty", r"prompt is empty", cli=("route", "", T), api=("/route", ""),
         api_expect=r"Type a prompt first"),
    Case("route-prompt-huge", r"characters long; the limit is 32,000", api=("/route", HUGE),
         fixed="tokenizing a huge prompt held the server"),
    Case("personalize-prompt-empty", r"Type a prompt first", api=("/personalize", " ")),
    Case("attribution-prompt-huge", r"attribution reads prompts of at most 4,000 characters",
         cli=("interp", "attribute", "--mode", "base", "w " * 2_600, "--out", "{root}/interp", T),
         api=("/interpret", *ATTRIB, "w " * 2_600, *ATTRIB_TAIL), fixed="one forward pass per word of any prompt"),
    # --- sampling values, NaN and infinite slider values ---------------------------------------------
    Case("max-new-tokens-zero", r"max_new_tokens must be in \[1, 2048\], got 0",
         cli=("generate", "hi", "--max-new-tokens", "0", T), api=_gen(tokens=0), api_expect=r"less than minimum value 1"),
    Case("max-new-tokens-huge", r"max_new_tokens must be in \[1, 2048\]",
         cli=("generate", "hi", "--max-new-tokens", "100000", T), api=_gen(tokens=100_000),
         api_expect=r"greater than maximum value 1024"),
    Case("max-new-tokens-not-a-number", r"invalid int value: 'ten'|index 2 \(a `slider` component\)",
         cli=("generate", "hi", "--max-new-tokens", "ten", T), raw=_raw_gen(tokens='"ten"'),
         fixed="app: an error without a message"),
    Case("max-new-tokens-infinite", r"invalid int value: 'inf'", cli=("generate", "hi", "--max-new-tokens", "inf", T),
         raw=_raw_gen(tokens="Infinity"), api_expect=r"greater than maximum value 1024"),
    Case("temperature-negative", r"temperature must be in \[0, 5\]", cli=("generate", "hi", "--temperature", "-1", T),
         api=_gen(temp=-1.0), api_expect=r"less than minimum value 0"),
    Case("temperature-nan", r"temperature must be in \[0, 5\] \(0 = greedy\), got nan",
         cli=("generate", "hi", "--temperature", "nan", T), raw=_raw_gen(temp="NaN")),
    Case("temperature-infinite", r"temperature must be in \[0, 5\]|greater than maximum value 2",
         cli=("generate", "hi", "--temperature", "inf", T), raw=_raw_gen(temp="Infinity")),
    Case("top-p-zero", r"top_p must be in \(0, 1\], got 0", cli=("generate", "hi", "--top-p", "0", T),
         api=_gen(top_p=0.0), api_expect=r"less than minimum value 0.05"),
    Case("top-p-nan", r"top_p must be in \(0, 1\], got nan", cli=("generate", "hi", "--top-p", "nan", T),
         raw=_raw_gen(top_p="NaN")),
    Case("seed-too-large", r"seed must be an integer in \[-2\*\*63, 2\*\*64\)", cli=("generate", "hi", "--seed",
                                                                                 str(2 ** 70), T),
         api=_gen(temp=0.5, seed=2 ** 70), fixed="ValueError 'Overflow when unpacking long long' (app: no message)"),
    Case("seed-nan", r"invalid int value: 'nan'|cannot convert float NaN to integer",
         cli=("generate", "hi", "--seed", "nan", T), raw=_raw_gen(temp="0.5", seed="NaN"),
         fixed="app: an error without a message"),
    Case("compare-temperature-out-of-range", r"temperature must be in \[0, 5\]", api=("/compare", "hi", 2, 9.0)),
    Case("compare-top-p-nan", r"top_p must be in \(0, 1\], got nan", raw=("compare", '{"data": ["hi", 2, 0.0, NaN, 0]}')),
    Case("compare-seed-nan", r"seed must be an integer, got nan", raw=("compare", '{"data": ["hi", 2, 0.5, 1.0, NaN]}')),
    Case("personalize-temperature-nan", r"temperature must be in \[0, 5\]",
         raw=("personalize", '{"data": ["hi", "Preference dimensions", "", null, "", [], 4, NaN]}')),
    Case("personalize-tokens-zero", r"max_new_tokens must be in \[1, 2048\]",
         api=("/personalize", "hi", "Preference dimensions", "", None, "", [], 0)),
    Case("lambda1-nan", r"lambda1 must be (a finite number|in \[0, 1\]), got nan",
         cli=("route", "hi", "--lambda1", "nan", T), raw=("recalibrate", '{"data": [NaN, 0.4, 1.0, 1, 1, 1]}')),
    Case("lambda1-out-of-range", r"lambda1 (and lambda2 )?must be in \[0, 1\]", cli=("route", "hi", "--lambda1", "2", T),
         api=("/recalibrate", 2.0)),
    Case("lambdas-both-zero", r"lambda1 and lambda2 cannot both be 0",
         cli=("route", "hi", "--lambda1", "0", "--lambda2", "0", T), api=("/recalibrate", 0.0, 0.0)),
    Case("router-temperature-infinite", r"temperature must be (in \[0.05, 20\]|a finite number), got inf",
         cli=("route", "hi", "--temperature", "inf", T), raw=("recalibrate", '{"data": [0.6, 0.4, Infinity, 1, 1, 1]}')),
    Case("preference-nan", r"preference (for 'honest' must be in \[0, 1\]|honest must be a finite number), got nan",
         cli=("route", "hi", "--preferences", "honest=nan", T),
         raw=("recalibrate", '{"data": [0.6, 0.4, 1.0, 1, 1, NaN]}')),
    Case("preferences-all-zero", r"at least one preference must be above 0",
         cli=("route", "hi", "--preferences", "helpful=0,harmless=0,honest=0", T), api=("/recalibrate", 0.6, 0.4, 1.0, 0, 0, 0)),
    Case("preference-unknown-objective", r"preferences name unknown expert\(s\) \['funny'\]",
         cli=("route", "hi", "--preferences", "funny=1", T)),
    Case("preferences-bad-syntax", r"expected NAME=VALUE pairs", cli=("route", "hi", "--preferences", "honest", T)),
    Case("recalibrate-not-a-number", r"argument --lambda1: invalid float value: 'a'",
         cli=("route", "hi", "--lambda1", "a", T), api=("/recalibrate", "a"),
         api_expect=r"lambda1 must be a number, got 'a'"),
    Case("recalibrate-before-route", r"Route a prompt first", api=("/recalibrate",), fresh=True),
    Case("routed-generate-lambda-nan", r"lambda1 must be a finite number, got nan",
         raw=_raw_gen(mode='"mocae-logit"', tail=", NaN, 0.4, 1.0, 1, 1, 1")),
    Case("routed-generate-lambda-negative-infinite", r"less than minimum value 0",
         raw=_raw_gen(mode='"mocae-logit"', tail=", -Infinity, 0.4, 1.0, 1, 1, 1")),
    Case("sweep-lambda-nan", r"lambda1 must be in \[0, 1\], got nan", cli=("sweep", "--lambda1", "nan", "--out",
                                                                         "{root}/sweep", T)),
    Case("sweep-suite-without-parts", r"suite 'safety-core' has no AlpacaEval or no TruthfulQA part",
         cli=("sweep", "--suite", "safety-core", "--out", "{root}/sweep", T)),
    # --- modes ----------------------------------------------------------------------------------
    Case("mode-unknown-expert", r"unknown expert 'nope'", cli=("generate", "hi", "--mode", "expert:nope", T),
         api=_gen(mode="expert:nope"), api_expect=r"expert:nope'?.* is not in the list of choices"),
    Case("mode-unknown-negotiax-variant", r"unknown NegotiaX mode 'negotiax:bogus'",
         cli=("generate", "hi", "--mode", "negotiax:bogus", T), api=_gen(mode="negotiax:bogus"),
         api_expect=r"not in the list of choices"),
    Case("mode-empty", r"mode must be a non-empty string", cli=("generate", "hi", "--mode", "", T), api=_gen(mode=None)),
    Case("eval-unknown-mode", r"unknown mode 'nope'|Unknown mode\(s\) \['nope'\]",
         cli=("eval", "--mode", "nope", "--out", "{root}/eval", T), api=("/evaluate", ["nope"])),
    Case("eval-unknown-suite", r"[Uu]nknown suite 'nope'", cli=("eval", "--suite", "nope", "--out", "{root}/eval", T),
         api=("/evaluate", ["base"], "nope")),
    Case("eval-unknown-judge", r"[Uu]nknown judge 'nope'", cli=("eval", "--judge", "nope", "--out", "{root}/eval", T),
         api=("/evaluate", ["base"], "quick", "nope")),
    Case("eval-no-modes", r"mode must be a non-empty string, got ''", cli=("eval", "--mode", "", "--out",
                                                                          "{root}/eval", T),
         api=("/evaluate", []), api_expect=r"Choose at least one mode"),
    Case("interp-unknown-mode", r"unknown mode 'nope'", cli=("interp", "attribute", "--mode", "nope", "hi", "--out",
                                                               "{root}/interp", T),
         api=("/interpret", "Head importance", "nope", "helpful", 4, 0, False, "p"),
         api_expect=r"nope'?.* is not in the list of choices"),
    Case("interp-unknown-analysis", r"argument ANALYSIS: invalid choice: 'X'", cli=("interp", "X"),
         api=("/interpret", "X", "base", "helpful", 4, 0, False, "p"),
         api_expect=r"X'?.* is not in the list of choices"),
    Case("interp-unknown-method", r"argument --method: invalid choice: 'Letters'",
         cli=("interp", "attribute", "--method", "Letters", "hi", "--out", "{root}/interp"),
         api=("/interpret", *ATTRIB, "hi", "Sure", "Letters"), api_expect=r"Letters'?.* is not in the list of choices"),
    Case("interp-rows-negative", r"n_rows must be >= 1, got -3",
         cli=("interp", "heads", "--mode", "base", "--rows", "-3", "--out", "{root}/interp", T),
         api=("/interpret", "Head importance", "base", "helpful", -3, 0, False, "p"),
         api_expect=r"less than minimum value 2"),
    Case("interp-rows-nan", r"argument --rows: invalid int value: 'nan'",
         raw=("interpret", '{"data": ["Head importance", "base", "helpful", NaN, 0, false, "p", "t", '
                           '"Feature ablation (words)", "(none)", [], 0.8, "Negotiation weights per token", "x"]}'),
         cli=("interp", "heads", "--rows", "nan", "--out", "{root}/interp"),
         api_expect=r"Held-out rows must be a number in \[1, 10000\], got nan",
         fixed="ValueError 'cannot convert float NaN to integer' without a message"),
    Case("interp-runs-outside", r"/etc/report\.json: no report\.json here",
         cli=("interp", "forgetting", "/etc", "/tmp", "--out", "{root}/interp"),
         api_expect=r"/etc'?.* is not in the list of choices",
         api=("/interpret", "Forgetting", "base", "helpful", 4, 0, False, "p", "t", "Feature ablation (words)",
              "(none)", ["/etc"])),
    Case("interp-forgetting-one-run", r"Pick at least two eval runs",
         api=("/interpret", "Forgetting", "base", "helpful", 4, 0, False, "p")),
    Case("personalize-unknown-source", r"unknown source 'Nope'", api=("/personalize", "hi", "Nope")),
    Case("personalize-unknown-user", r"unknown P-Soups user 'nobody#1'", api=("/personalize", "hi", "P-Soups user",
                                                                             "nobody#1")),
    Case("personalize-ragged-history", r"history row 1: fill in preferred and not preferred",
         api=("/personalize", "hi", "Typed history", "", [["a"]])),
    Case("personalize-unknown-pole", r"unknown preference pole 'no-such-pole'",
         api=("/personalize", "hi", "Preference dimensions", "", None, "", ["no-such-pole"])),
    Case("check-data-unknown-kind", r"argument KIND: invalid choice: 'nope'", cli=("check-data", "nope", "x.json")),
    Case("train-unknown-axis", r"unknown axis \['funny'\]|funny'?.* is not in the list of choices",
         cli=("train-experts", "--base", "tiny-random", "--axes", "funny", "--out", "{root}/train"),
         api=("/train_expert", "funny", "x", "tiny", "uploaded file", File("ok_pairs.json"))),
    Case("train-unknown-preset", r"unknown preset 'huge'|huge'?.* is not in the list of choices",
         cli=("train-experts", "--base", "tiny-random", "--preset", "huge", "--out", "{root}/train"),
         api=("/train_expert", "helpful", "x", "huge", "uploaded file", File("ok_pairs.json"))),
    Case("train-sft-experts-wrong-method", r"--sft-experts goes with --method sft\+dpo \(got --method dpo\)",
         cli=("train-experts", "--base", "tiny-random", "--method", "dpo", "--sft-experts", "{root}",
              "--out", "{root}/train")),
    Case("train-sft-experts-not-experts", r"--sft-experts .*harmless has no adapter_config\.json and card\.json",
         cli=("train-experts", "--base", "tiny-random", "--method", "sft+dpo", "--axes", "harmless",
              "--sft-experts", "{root}", "--out", "{root}/train")),
    # --- votes ----------------------------------------------------------------------------------
    Case("vote-answers-not-object", r"answers must be a JSON object \{mode: answer\}, got str",
         api=("/vote", "p", "notadict", "base", "helpful"), fixed="'dictionary update sequence element' message"),
    Case("vote-unknown-modes", r"answers name mode\(s\) this app does not serve: \['m0', 'm1'\]",
         api=("/vote", "p", {"m0": "a", "m1": "b"}, "m0", "helpful"),
         fixed="votes for modes the app does not serve were stored and ranked on the leaderboard"),
    Case("vote-answer-too-long", r"longer than 50,000 characters",
         api=("/vote", "p", {"base": "a" * 60_000, "expert:helpful": "b"}, "base", "helpful"),
         fixed="answers of any size were stored"),
    Case("vote-one-answer", r"at least two modes", api=("/vote", "p", {"base": "a"}, "base", "helpful")),
    Case("vote-winner-not-compared", r"winner 'nobody' is not one of the compared modes",
         api=("/vote", "p", ANSWERS, "nobody", "helpful")),
    Case("vote-unknown-axis", r"unknown axis 'funny'", api=("/vote", "p", ANSWERS, "base", "funny")),
    Case("vote-answer-not-string", r"every answer must be a string",
         api=("/vote", "p", {"base": 1, "expert:helpful": "b"}, "base", "helpful")),
    Case("vote-empty-prompt", r"Type a prompt first", api=("/vote", "", ANSWERS, "base", "helpful")),
    # --- malformed API calls to every endpoint --------------------------------------------------
    Case("api-unknown-endpoint", r"argument COMMAND: invalid choice: 'nope'", cli=("nope",),
         raw=("nope", '{"data": []}'), api_expect=r"Could not infer function index for API name: nope",
         fixed="a bare 500 Internal Server Error"),
    Case("api-generate-no-values", r"give either a prompt or --prompts-file", cli=("generate", T),
         raw=("generate", '{"data": []}'), api_expect=r"didn't receive enough input values \(needed: 13, got: 0\)",
         fixed="an error without a message"),
    Case("api-stop-data-not-list", r"Input should be a valid list", raw=("stop", '{"data": "x"}')),
    Case("api-leaderboard-not-json", r"JSON decode error", raw=("leaderboard", "{data: ]")),
    Case("api-compare-missing-values", r"didn't receive enough input values", raw=("compare", '{"data": ["hi"]}')),
    Case("api-vote-missing-values", r"didn't receive enough input values", raw=("vote", '{"data": ["p"]}')),
    Case("api-route-no-body-data", r"Field required", raw=("route", '{"prompt": "hi"}')),
    Case("api-recalibrate-data-object", r"Input should be a valid list", raw=("recalibrate", '{"data": {"lambda1": 1}}')),
    Case("api-evaluate-missing-values", r"didn't receive enough input values", raw=("evaluate", '{"data": [NaN]}')),
    Case("api-interpret-missing-values", r"didn't receive enough input values", raw=("interpret", '{"data": ["X"]}')),
    Case("api-personalize-missing-values", r"didn't receive enough input values", raw=("personalize", '{"data": [42]}')),
    Case("api-load-expert-missing-values", r"didn't receive enough input values", raw=("load_expert", '{"data": []}')),
    Case("api-train-missing-values", r"didn't receive enough input values", raw=("train_expert", '{"data": ["helpful"]}')),
    Case("api-list-experts-data-number", r"Input should be a valid list", raw=("list_experts", '{"data": 5}')),
    Case("api-cancel-training-not-json", r"JSON decode error", raw=("cancel_training", "not json")),
    # --- uploads: names, paths, size ------------------------------------------------------------
    Case("upload-missing", r"Upload a \.json, \.jsonl or \.csv training file first",
         api=("/train_expert", "helpful", "x", "tiny", "uploaded file", None)),
    Case("upload-name-traversal", r"Expert name '\.\./evil': use 1-64 letters",
         api=("/train_expert", "helpful", "../evil", "tiny", "uploaded file", File("ok_pairs.json"))),
    Case("upload-server-path", r"not uploaded by a user",
         raw=("train_expert", '{"data": ["helpful", "x", "tiny", "uploaded file", {"path": "{ok_pairs.json}", '
                              '"meta": {"_type": "gradio.FileData"}}]}')),
    Case("upload-url", r"a URL is not fetched",
         raw=("train_expert", '{"data": ["helpful", "x", "tiny", "uploaded file", {"path": '
                              '"http://127.0.0.1:9/x.json", "meta": {"_type": "gradio.FileData"}}]}'),
         fixed="the server downloaded a URL given as the training file"),
    Case("upload-over-size-limit", r"File size exceeded maximum allowed size of 20971520 bytes",
         raw=("upload", "21mb")),
    # --- adapters: another base model, truncated safetensors, traversal and symlinks --------------
    *[Case(f"adapter-{kind}", expect, cli=("generate", "hi", "--model", "tiny-random", "--experts-dir",
                                             "{cli_" + kind + "}"),
           api=("/load_expert", kind), fixed=fixed)
      for kind, expect, fixed in (
          ("trunc", r"adapter_model\.safetensors: not a complete safetensors file", "SafetensorError traceback"),
          ("otherbase", r"was trained for base model 'HuggingFaceTB/SmolLM2-135M-Instruct', not 'tiny-random'", ""),
          ("othershape", r"has shape \[4, 32\], but module 'model\.layers\.0\.self_attn\.q_proj' has in_features 64",
           "size-mismatch RuntimeError, the adapter half injected"),
          ("badcard", r"card\.json: not a readable JSON card", "JSONDecodeError traceback"),
          ("badcfg", r"adapter_config\.json: not a LoRA adapter config", "peft traceback"),
          ("binonly", r"has no adapter_model\.safetensors \(only safetensors adapters are loaded\)", "peft traceback"),
          ("noweights", r"holds no tensors", "peft traceback"))],
    Case("adapter-runs-truncated", r"not a complete safetensors file", api=("/load_expert", "runs/trunc2")),
    Case("adapter-symlink-outside", r"'escape' is not an adapter folder of the experts or runs folder",
         api=("/load_expert", "escape"), fixed="a symlink in the experts folder loaded an adapter from anywhere"),
    Case("adapter-name-traversal", r"Expert name '\.\./experts/helpful': use 1-64 letters",
         api=("/load_expert", "../experts/helpful")),
    Case("adapter-runs-traversal", r"Expert name '\.\./\.\./etc'", api=("/load_expert", "runs/../../etc")),
    Case("adapter-absolute-path", r"Expert name '/etc/passwd'", api=("/load_expert", "/etc/passwd")),
    Case("adapter-empty-choice", r"Pick an adapter folder first", api=("/load_expert", "")),
    Case("adapter-unknown-folder", r"'nosuch' is not an adapter folder", api=("/load_expert", "nosuch")),
    Case("adapter-already-loaded", r"an expert named 'helpful' is already loaded", api=("/load_expert", "helpful")),
]


def summary() -> dict:
    """Counts of the table (what docs/RESULTS.md reports)."""
    return {"cases": len(CASES), "cli": sum(c.cli is not None for c in CASES),
            "app": sum(c.api is not None or c.raw is not None for c in CASES),
            "both": sum(c.cli is not None and (c.api is not None or c.raw is not None) for c in CASES),
            "found a bug": sum(bool(c.fixed) for c in CASES)}


if __name__ == "__main__":
    print(json.dumps(summary()))
    for c in CASES:
        if c.fixed:
            print(f"{c.id}: {c.fixed}")
