"""Preference pairs per axis on the real files (decontaminated, counted per source), and the
validating reader of a user's pair file: each bad row names the file, the row and the field."""
from __future__ import annotations

import json

import pytest

from alignx import data as D
from alignx.data import DataError
from alignx.data.pairs import REFUSALS, axis_pairs, load_pair_file
from alignx.data.sources_general import UNANSWERABLE_TEXT
from test_personal import _write


def _valid(rows):
    return all(isinstance(r.chosen, str) and r.chosen.strip() and isinstance(r.rejected, str) and r.rejected.strip()
               and r.chosen != r.rejected for r in rows)


def test_harmless_pairs_both_directions(data_dir):
    ps = axis_pairs("harmless", data_dir)
    assert set(ps.sources) == {"pku_pairs", "hh_harmless", "do_not_answer", "refusal_vs_unsafe", "coconot_pref"}
    assert _valid(ps.pairs) and not ps.sft and sum(ps.sources.values()) == len(ps.pairs)
    assert ps.removed["pku_pairs"] > 1000 and ps.removed["hh_harmless"] > 0      # BeaverTails 30k_test prompts
    from alignx.data.splits import is_validation

    held = sum(is_validation(r.prompt) for r in D.load("oktest", data_dir))       # report-experts' validation quarter
    assert 0 < held < 150 and len(ps.needs_answers) == 300 - held                # OKTest: answers not generated here
    assert ps.removed["oktest"] == 0 and not any(is_validation(r.prompt) for r in ps.needs_answers)
    pku = next(p for p in ps.pairs if p.source == "pku_pairs")
    raw = D.load("pku_pairs", data_dir)[pku.extra["row"]]
    assert (pku.chosen, pku.rejected) == (raw.chosen, raw.rejected)              # safe over unsafe
    dna = [p for p in ps.pairs if p.source == "do_not_answer"]
    row = D.load("do_not_answer", data_dir)[dna[0].extra["row"]].extra["responses"]
    assert row[dna[0].extra["chosen_model"]]["harmful"] == 0 and row[dna[0].extra["rejected_model"]]["harmful"] == 1
    coco = [p for p in ps.pairs if p.source == "coconot_pref"]
    assert all(p.extra["direction"] == "comply" for p in coco)                   # the anti-over-refusal direction
    from alignx.eval.refusal import is_refusal

    ref = [p for p in ps.pairs if p.source == "refusal_vs_unsafe"]
    assert all(is_refusal(p.chosen) for p in ref) and all(p.extra["paired_by"] for p in ref)
    hh = [p for p in ps.pairs if p.source == "hh_harmless"]
    assert all(p.extra["turns"] == 1 for p in hh)
    multi = axis_pairs("harmless", data_dir, limit=60, multi_turn=True)
    long = [p for p in multi.pairs if p.source == "hh_harmless" and p.extra["turns"] > 1]
    assert long and all(p.prompt.startswith("Human: ") and "\nAssistant: " in p.prompt for p in long)


def test_oktest_answers_are_given_not_generated(data_dir):
    from alignx.data.splits import is_validation

    train = [r.prompt for r in D.load("oktest", data_dir, limit=10) if not is_validation(r.prompt)]
    assert 0 < len(train) < 10                                           # the validation quarter is left out
    ps = axis_pairs("harmless", data_dir, limit=10, oktest_answers=lambda prompts: [f"Sure. {p}" for p in prompts])
    ok = [p for p in ps.pairs if p.source == "oktest"]
    assert len(ok) == ps.sources["oktest"] == len(train) and not ps.needs_answers
    assert all(p.chosen == f"Sure. {p.prompt}" and p.rejected in REFUSALS for p in ok)
    partial = axis_pairs("harmless", data_dir, limit=10, oktest_answers={train[0]: "An answer."})
    assert partial.sources["oktest"] == 1 and len(partial.needs_answers) == len(train) - 1
    with pytest.raises(ValueError, match=f"returned 1 answers for {len(train)} prompts"):
        axis_pairs("harmless", data_dir, limit=10, oktest_answers=lambda prompts: ["one"])


def test_helpful_and_honest_pairs(data_dir):
    hp = axis_pairs("helpful", data_dir)
    assert set(hp.sources) == {"hh_helpful", "lima"} and _valid(hp.pairs)
    assert hp.removed["hh_helpful"] > 0                               # AlpacaEval helpful_base prompts
    assert all(r.response and r.source == "lima" for r in hp.sft) and hp.sources["lima"] == len(hp.sft)
    ho = axis_pairs("honest", data_dir)
    assert set(ho.sources) == {"truthfulqa_train_half", "halueval", "selfaware", "selfaware_unanswerable"}
    assert _valid(ho.pairs) and all(r.response == UNANSWERABLE_TEXT for r in ho.sft)
    test_half = {r.prompt for r in D.split_half(D.load("truthfulqa", data_dir))[1]}
    tqa = [p for p in ho.pairs if p.source == "truthfulqa_train_half"]
    assert tqa and not {p.prompt for p in tqa} & test_half
    assert ho.removed["truthfulqa_train_half"] > 0                    # an AlpacaEval instruction is in the train half
    one = axis_pairs("honest", data_dir, limit=5, per_question=1)
    assert one.sources["truthfulqa_train_half"] == 5
    with pytest.raises(ValueError, match="unknown axis"):
        axis_pairs("funny", data_dir)
    with pytest.raises(ValueError, match="per_question"):
        axis_pairs("honest", data_dir, per_question=0)


def _file(tmp_path, rows, name="pairs.json"):
    return _write(tmp_path, rows, name)          # a JSON list, or JSON lines for a .jsonl name


GOOD = {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "I cannot help with that."}


@pytest.mark.parametrize("bad,pattern", [
    ({"prompt": "p", "rejected": "r"}, r"row 1, field 'chosen': missing field"),
    (dict(GOOD, rejected=""), r"row 1, field 'rejected': empty value"),
    (dict(GOOD, rejected="   "), r"row 1, field 'rejected': empty value"),
    (dict(GOOD, prompt=3), r"row 1, field 'prompt': expected a string, got int"),
    (dict(GOOD, chosen=["a", "b"]), r"row 1, field 'chosen': expected a string, got list"),
    (dict(GOOD, rejected=None), r"row 1, field 'rejected': missing field"),
    (dict(GOOD, rejected="Blue."), r"row 1, field 'rejected': chosen and rejected are the same text"),
    ("just a string", r"row 1: expected an object, got str"),
])
@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_bad_pair_file_names_file_row_and_field(tmp_path, bad, pattern, suffix):
    path = _file(tmp_path, [GOOD, bad], "pairs" + suffix)
    with pytest.raises(DataError, match=f"pairs{suffix}, " + pattern):
        load_pair_file(path)
    assert len(load_pair_file(path, skip_bad=True)) == 1


def test_pair_file_reads_and_rejects_bad_files(tmp_path):
    rows = load_pair_file(_file(tmp_path, [dict(GOOD, note="x"), GOOD], "p.jsonl"), axis="harmless")
    assert len(rows) == 2 and rows[0].chosen == "Blue." and rows[0].extra == {"note": "x", "row": 0}
    assert rows[0].axis == "harmless" and rows[0].source == "file:p.jsonl"
    with pytest.raises(DataError, match="unsupported file type"):
        load_pair_file(tmp_path / "p.csv")
    (tmp_path / "obj.json").write_text(json.dumps({"prompt": "p"}))
    with pytest.raises(DataError, match="expected a JSON list of rows"):
        load_pair_file(tmp_path / "obj.json")
    (tmp_path / "broken.jsonl").write_text(json.dumps(GOOD) + "\n{nope\n")
    with pytest.raises(DataError, match=r"broken.jsonl, row 1: malformed JSON line"):
        load_pair_file(tmp_path / "broken.jsonl")
    with pytest.raises(DataError, match="file not found"):
        load_pair_file(tmp_path / "missing.json")
    with pytest.raises(DataError, match=r"no usable rows \(1 skipped\)"):
        load_pair_file(_file(tmp_path, [dict(GOOD, chosen="")]), skip_bad=True)
