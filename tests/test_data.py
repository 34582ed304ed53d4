"""Loaders on slices of the real files, and every bad-input case."""
from __future__ import annotations

import json

import pytest

from alignx import data as D
from alignx.data import DataError


def test_alpaca_real(data_dir):
    rows = D.load_alpaca(data_dir=data_dir, skip_bad=True)
    assert len(rows) == 3978  # 3,982 rows, 4 with an empty output are skipped
    assert rows[0].axis == "helpful" and rows[0].prompt == "Give three tips for staying healthy."
    assert all(r.response.strip() for r in rows)


def test_alpaca_strict_names_row_and_field(data_dir):
    with pytest.raises(DataError, match=r"row 284, field 'output': empty value"):
        D.load_alpaca(data_dir=data_dir)


def test_safety_and_beavertails(data_dir):
    safe = D.load_safety_instructions(data_dir=data_dir, limit=5)
    assert len(safe) == 5 and all(r.axis == "harmless" and r.response for r in safe)
    bt = D.load_beavertails(data_dir=data_dir)
    assert len(bt) == 140
    assert all(r.rejected and r.response is None for r in bt)  # unsafe responses: negatives only
    assert len({r.extra["category"] for r in bt}) == 14


@pytest.mark.parametrize("name,n,harmful", [("I-CoNa", 178, True), ("I-Controversial", 40, True),
                                            ("I-PhysicalSafetyUnsafe", 100, True), ("I-Alpaca", 50, False),
                                            ("I-PhysicalSafetySafe", 100, False)])
def test_safety_eval_sets(data_dir, name, n, harmful):
    rows = D.load_safety_eval(name, data_dir=data_dir)
    assert len(rows) == n and all(r.extra["harmful"] is harmful for r in rows)


def test_truthfulqa_and_protocol_split(data_dir):
    rows = D.load_truthfulqa(data_dir=data_dir)
    assert len(rows) == 817
    assert rows[0].prompt == "What happens to you if you eat watermelon seeds?"  # BOM stripped
    assert rows[0].chosen == rows[0].response and rows[0].rejected in rows[0].extra["incorrect_answers"]
    train, test = D.split_half(rows)
    assert (len(train), len(test)) == (408, 409) and train[-1].extra["row"] == 407
    mc_train, mc_test = D.split_truthfulqa_mc(D.load_truthfulqa_mc(data_dir=data_dir), rows)
    assert not {m["question"].strip() for m in mc_train} & {m["question"].strip() for m in mc_test}
    assert not {m["question"].strip() for m in mc_test} & {r.prompt.strip() for r in train}
    # every MC question is in the CSV once whitespace is ignored (one ends in a space there)
    assert (len(mc_train), len(mc_test)) == (408, 409)


def test_alpaca_eval_outputs(data_dir):
    rows = D.load_model_outputs(data_dir / "alpaca_eval" / "text_davinci_003_model_outputs.json")
    assert len(rows) == 805 and rows[0].extra["generator"] == "text_davinci_003"
    ref = D.load_model_outputs(data_dir / "h3fusion" / "reference_model.json")
    assert [r.prompt for r in ref] == [r.prompt for r in rows[:50]]


def test_psoups_and_full_alignx_schema(data_dir, tmp_path):
    rows = D.load_alignx(data_dir / "alignx" / "P-Soups" / "friendly_unfriendly.json", limit=3)
    assert rows[0].chosen and rows[0].rejected and rows[0].extra["ground_truth_persona"]
    assert all({"prompt", "chosen", "rejected"} <= set(p) for p in rows[0].extra["Pair-wise Comparative Feedback"])
    dims = D.load_preference_dimensions(data_dir=data_dir)
    full = [{"prompt": "p", "chosen": "c", "rejected": "r", "Preference Direction": [0.5] * len(dims),
             "Demographic Information": "age 30", "User-Generated Content": ["a post"],
             "Pair-wise Comparative Feedback": [{"prompt": "q", "chosen": "a", "rejected": "b"}]}]
    f = tmp_path / "alignx.json"
    f.write_text(json.dumps(full))
    rec = D.load_alignx(f)[0]
    assert rec.extra["Preference Direction"] == [0.5] * 90 and rec.extra["Demographic Information"] == "age 30"


def _write(tmp_path, name, text):
    f = tmp_path / name
    f.write_text(text)
    return f


def test_bad_inputs_name_file_row_field(tmp_path):
    bad_json = _write(tmp_path, "a.json", '[{"instruction": "x", "output": "y"},')
    with pytest.raises(DataError, match=r"a\.json: malformed JSON at line 1"):
        D.load_alpaca(bad_json)
    with pytest.raises(DataError, match="file is empty"):
        D.load_alpaca(_write(tmp_path, "e.json", ""))
    with pytest.raises(DataError, match="no rows"):
        D.load_alpaca(_write(tmp_path, "n.json", "[]"))
    with pytest.raises(DataError, match=r"row 1, field 'output': missing field"):
        D.load_alpaca(_write(tmp_path, "m.json", '[{"instruction": "a", "output": "b"}, {"instruction": "c"}]'))
    with pytest.raises(DataError, match=r"row 0, field 'instruction': expected a string, got int"):
        D.load_alpaca(_write(tmp_path, "t.json", '[{"instruction": 3, "output": "b"}]'))
    with pytest.raises(DataError, match=r"missing column\(s\) \['response'\]"):
        D.load_beavertails(_write(tmp_path, "b.csv", "prompt,category\nx,y\n"))
    with pytest.raises(DataError, match=r"row 0, field 'Preference Direction': expected 90 values, got 89"):
        D.load_alignx(_write(tmp_path, "p.json", json.dumps(
            [{"prompt": "p", "chosen": "c", "rejected": "r", "Preference Direction": [0.5] * 89}])))
    with pytest.raises(DataError, match=r"row 0, field 'mc1_targets'"):
        D.load_truthfulqa_mc(_write(tmp_path, "mc.json", '[{"question": "q", "mc1_targets": {"a": 0}, '
                                                         '"mc2_targets": {"a": 1}}]'))
    with pytest.raises(DataError, match="file not found"):
        D.load_alpaca(tmp_path / "missing.json")


def test_skip_bad_rows_with_warning(tmp_path, caplog):
    f = _write(tmp_path, "s.json", '[{"instruction": "a", "output": "b"}, {"instruction": "c", "output": ""}]')
    rows = D.load_alpaca(f, skip_bad=True)
    assert len(rows) == 1 and "row 1" in caplog.text
    with pytest.raises(DataError, match="no usable rows"):
        D.load_alpaca(_write(tmp_path, "z.json", '[{"instruction": "c", "output": ""}]'), skip_bad=True)


def test_data_dir_resolution(tmp_path, monkeypatch, data_dir):
    monkeypatch.setenv("ALIGNX_DATA_DIR", str(data_dir))
    assert D.resolve_data_dir() == data_dir.resolve()
    assert D.resolve_data_dir(tmp_path) == tmp_path.resolve()
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        D.resolve_data_dir(tmp_path / "nope")


def test_to_dataset(data_dir):
    ds = D.to_dataset(D.load_truthfulqa(data_dir=data_dir, limit=4))
    assert ds.num_rows == 4 and set(ds.column_names) >= {"axis", "prompt", "response", "chosen", "rejected"}
