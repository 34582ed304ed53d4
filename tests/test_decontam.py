"""Decontamination on the real files: the known overlaps of DATA.md are found by the code, near
duplicates are caught, the prefix index equals brute force, and no evaluation prompt reaches any
training set the project builds."""
from __future__ import annotations

import gzip
import json
import random
import time

import pytest

from alignx import data as D
from alignx.data.decontam import EvalIndex, item_texts, jaccard, normalize, words
from alignx.data.roles import eval_records, read_roles


def _found(eval_recs, train, kind=None) -> set[str]:
    """The distinct evaluation prompts (normalised) that some training item duplicates."""
    index = EvalIndex([("e", r.prompt) for r in eval_recs])
    out = set()
    for t in train:
        m = index.match_item(t)
        if m is not None and (kind is None or m.kind == kind):
            out.add(normalize(m.eval_prompt))
    return out


def test_normalize_and_words():
    assert normalize("  Tell me a JOKE!  ") == normalize("tell me a joke") == "tell me a joke"
    assert normalize("What\u2019s  the\n time?\u201d") == "what's the time"
    assert normalize("...") == "" and normalize("C++") == "c"        # punctuation stripped at the ends only
    assert normalize("Is 2+2=4?") == "is 2+2=4"
    assert words("how do i kill a python process") == frozenset("how do i kill a python process".split())


def test_known_overlaps_of_data_md_are_found(data_dir):
    i_alpaca = D.load("safety_eval:I-Alpaca", data_dir)
    assert len(_found(i_alpaca, D.load("alpaca_31k", data_dir), "exact")) == 50        # all 50
    helpful_base = [r for r in D.load("alpaca_eval:text_davinci_003", data_dir) if r.extra["dataset"] == "helpful_base"]
    assert len(helpful_base) == 129
    assert len(_found(helpful_base, D.load("hh_helpful", data_dir, skip_bad=True), "exact")) == 129
    bt = D.load("beavertails_30k_test", data_dir)
    assert len(_found(bt, D.load("pku_pairs", data_dir), "exact")) == 163
    # 399 in DATA.md: one of them is only in an HH row whose chosen reply is empty (skipped as a bad row)
    assert len(_found(bt, D.load("hh_harmless", data_dir, skip_bad=True), "exact")) == 398
    raw = gzip.open(data_dir / "hh_rlhf" / "harmless-base_test.jsonl.gz", "rt", encoding="utf-8")
    first_turns = [json.loads(line)["chosen"].split("\n\nHuman: ", 1)[1].split("\n\nAssistant:", 1)[0] for line in raw]
    assert len(_found(bt, first_turns, "exact")) == 399
    # the whole index removes them too, and says where they came from
    index = EvalIndex.build(data_dir)
    _, rep = index.filter(D.load("alpaca_31k", data_dir), "alpaca_31k")
    assert rep.by_eval["safety_tuned_llamas/evaluation/I-Alpaca.json"] == 50
    _, rep = index.filter(D.load("hh_helpful", data_dir, skip_bad=True), "hh_helpful")
    assert set(rep.by_eval) == {"alpaca_eval/alpaca-7b_model_outputs.json"} and rep.exact >= 129
    assert not _found(D.load("safety_eval:I-CoNa", data_dir) + D.load("safety_eval:I-Controversial", data_dir),
                      D.load("pku_pairs", data_dir) + D.load("alpaca_31k", data_dir))   # DATA.md: no such overlap


def test_near_duplicates_are_caught_and_the_threshold_holds(data_dir):
    index = EvalIndex.build(data_dir)
    target = next(r.prompt for r in D.load("harmbench_test", data_dir) if len(words(normalize(r.prompt))) >= 12)
    ws = target.split()
    one_word = " ".join(ws[:3] + ["purportedly"] + ws[4:])                 # one word replaced
    m = index.match(one_word)
    assert m is not None and m.kind == "near" and m.eval_prompt == target and m.jaccard >= 0.8
    assert index.match(target.upper() + " !!").kind == "exact"                 # case and punctuation
    assert index.match("  " + target.replace(" ", "\n  ") + ".").kind == "exact"  # whitespace
    far = " ".join(ws[: len(ws) // 2] + ["completely", "different", "ending", "about", "gardening", "tips"])
    assert index.match(far) is None
    assert index.match("") is None and index.match("?!") is None
    small = EvalIndex([("e", "one two three four five")])
    assert small.match("one two three four six") is None                    # J = 4/6 < 0.8
    assert small.match("one two three four five six").kind == "near"        # J = 5/6
    with pytest.raises(ValueError, match="threshold"):
        EvalIndex([], threshold=0)


def test_prefix_index_finds_exactly_what_brute_force_finds(data_dir):
    evals = [r.prompt for name in ("beavertails_30k_test", "xstest") for r in D.load(name, data_dir)]
    index = EvalIndex([("e", p) for p in evals])
    eval_words = [words(normalize(p)) for p in evals if normalize(p)]
    hh = [r.prompt for r in D.load("hh_harmless", data_dir, skip_bad=True)]
    hit = [t for t in hh if index.match(t) is not None]
    rng = random.Random(0)
    train = hit + rng.sample([t for t in hh if t not in hit], 200)
    train += [r.prompt for r in rng.sample(D.load("pku_pairs", data_dir), 200)]
    assert sum(index.match(t).kind == "near" for t in hit) >= 10
    for t in train:
        a = words(normalize(t))
        brute = normalize(t) in index.exact or (bool(a) and max(jaccard(a, b) for b in eval_words) >= 0.8)
        assert (index.match(t) is not None) == brute, t


def test_index_covers_every_eval_file_and_split_half(data_dir):
    roles = read_roles(data_dir)
    recs = eval_records(data_dir)
    evals = {f for f, r in roles.items() if r == "eval"}
    splits = {f"{f} (eval half)" for f, r in roles.items() if r.startswith("split:") and "P-Soups" not in f}
    assert set(recs) == evals | splits
    assert len(recs["beavertails/beavertails_30k_test_guardreasoner.json"]) == 3021
    assert len(recs["truthfulqa/v1/TruthfulQA.csv (eval half)"]) == 409
    assert recs["truthfulqa/v1/mc_task.json (eval half)"]
    t0 = time.time()
    index = EvalIndex.build(data_dir)
    assert EvalIndex.build(data_dir) is index and time.time() - t0 < 60       # cached per data directory
    assert EvalIndex.build(data_dir, ("eval", "judge-eval")) is not index
    hb = next(r for r in D.load("harmbench_test", data_dir) if r.extra["context"])
    assert index.match(hb.extra["behavior"]) is not None                         # the bare contextual behavior too
    t0 = time.time()
    kept, rep = index.filter(D.load("alpaca_31k", data_dir), "alpaca_31k")
    assert time.time() - t0 < 30 and rep.total == 31323 and len(kept) == rep.kept   # seconds in practice (1.7 s)


def _mirror(data_dir, tmp_path, roles: dict):
    """A data directory of links to the real folders with its own ROLES.json (nothing copied)."""
    for child in data_dir.iterdir():
        if child.name != "ROLES.json":
            (tmp_path / child.name).symlink_to(child)
    (tmp_path / "ROLES.json").write_text(json.dumps(roles))
    return tmp_path


def test_an_eval_file_without_a_reader_is_an_error_not_a_skip(data_dir, tmp_path):
    raw = json.loads((data_dir / "ROLES.json").read_text())
    raw["xstest/new_eval_set.json"] = {"role": "eval", "sha256": ""}
    for sub in "abc":
        (tmp_path / sub).mkdir()
    with pytest.raises(ValueError, match=r"xstest/new_eval_set.json has role 'eval' but no reader"):
        EvalIndex.build(_mirror(data_dir, tmp_path / "a", raw))
    raw.pop("xstest/new_eval_set.json")
    raw["truthfulqa/other.csv"] = {"role": "split: first half train, second half eval", "sha256": ""}
    with pytest.raises(ValueError, match=r"truthfulqa/other.csv has role 'split: .*SPLIT_EVAL has no reader"):
        EvalIndex.build(_mirror(data_dir, tmp_path / "b", raw))
    raw.pop("truthfulqa/other.csv")
    raw["xstest/xstest_prompts.csv"]["role"] = "evaluation"
    with pytest.raises(D.DataError, match=r"ROLES.json, field 'xstest/xstest_prompts.csv': unknown role 'evaluation'"):
        EvalIndex.build(_mirror(data_dir, tmp_path / "c", raw))
    with pytest.raises(FileNotFoundError, match="ROLES.json is missing"):
        EvalIndex.build(tmp_path)


def _assert_clean(rows, index, plain: set[str], what: str) -> int:
    texts = [t for r in rows for t in item_texts(r)]
    dirty = [t for t in texts if index.match(t) is not None or " ".join(t.lower().split()) in plain]
    assert not dirty, (what, dirty[:3])
    return len(texts)


def test_no_evaluation_prompt_reaches_any_training_set(data_dir):
    """Every builder of training data in the project, on the real files."""
    from alignx.eval.judges import training_data as TD
    from alignx.experts.config import preset
    from alignx.experts.latent import router_prompts, train_items
    from alignx.experts.sft import axis_data, contrast_prompts
    from alignx.negotiax.train import objective_data
    from alignx.personal.data import load_psoups

    index = EvalIndex.build(data_dir)
    # an independent check: lower-case + whitespace, the rule DATA.md states
    plain = {" ".join(r.prompt.lower().split()) for recs in eval_records(data_dir).values() for r in recs}
    checked = {}
    cfg = preset("tiny", rows_per_axis=10**6, heldout_rows=64, benign_mix=2.0, benign_truthfulqa=0.3,
                 template_refusals=1)
    for axis in D.AXES:
        d = axis_data(axis, cfg, data_dir)
        checked[f"axis_data:{axis}"] = _assert_clean(d.train + d.heldout, index, plain, axis)
    contrast = contrast_prompts(preset("tiny", benign_contrast=1.0), data_dir)
    checked["contrast"] = _assert_clean(contrast, index, plain, "contrast")
    prov: dict = {}
    for o, rows in objective_data(D.AXES, data_dir, provenance=prov, harmless_contrast=0.5).items():
        checked[f"negotiax:{o}"] = _assert_clean(rows, index, plain, o)
    assert prov["harmless"]["sources"]["coconot_pref (compliant)"] == 320           # half of the 640 harmless rows
    removed = index.filter(D.load("coconot_pref", data_dir), "coconot_pref")[1].removed
    assert prov["harmless"]["eval_prompts_removed"]["coconot_pref"] == removed
    items, _ = train_items(data_dir, per_axis=10**5)
    checked["latent"] = _assert_clean([p for p, _ in items], index, plain, "latent")
    checked["router"] = _assert_clean(router_prompts(data_dir, per_axis=10**5)[0], index, plain, "router")
    judge = EvalIndex.build(data_dir, ("eval", "judge-eval"))
    splits, _ = TD.truthfulqa_judge_rows(data_dir)
    checked["judge:truthfulqa"] = _assert_clean(splits["truth"][0], judge, plain, "tqa judge")
    train, held, _ = TD.safety_judge_rows(data_dir)
    checked["judge:safety"] = _assert_clean(train + held, judge, plain, "safety judge")
    rows, _, _ = TD.preference_judge_rows(data_dir)
    checked["judge:helpfulness"] = _assert_clean(rows, judge, plain, "helpfulness judge")
    for axis in D.AXES:
        ps = D.axis_pairs(axis, data_dir)
        checked[f"pairs:{axis}"] = _assert_clean(ps.pairs + ps.sft + ps.needs_answers, index, plain, axis)
    for name, (train, _) in load_psoups(data_dir).items():          # P-Soups: split by prompt elsewhere; none found
        history = [p.prompt for ex in train for p in ex.user.history]
        checked[f"psoups:{name}"] = _assert_clean(list(train) + history, index, plain, name)
    assert all(n > 0 for n in checked.values()), checked
    # and the known contaminated prompts really were in the sources before
    assert any(index.match(r.prompt) for r in D.load("alpaca", data_dir, skip_bad=True))


def test_cli_prints_the_table_and_the_sources(data_dir, capsys):
    from alignx.cli import main

    assert main(["data", "decontam", "--data-dir", str(data_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    by = {s["source"]: s for s in out["sources"]}
    assert out["threshold"] == 0.8 and out["eval_prompts"] > 6000 and "xstest/xstest_prompts.csv" in out["eval_sources"]
    assert by["alpaca_31k"]["by_eval"]["safety_tuned_llamas/evaluation/I-Alpaca.json"] == 50
    assert by["alpaca"]["removed"] == 7 and by["hh_helpful"]["removed"] >= 129 and by["pku_pairs"]["removed"] > 1000
    assert by["truthfulqa/v1/TruthfulQA.csv (train half)"]["removed"] >= 1
    assert main(["data", "decontam", "--data-dir", str(data_dir)]) == 0
    table = capsys.readouterr().out
    assert "| alpaca_31k | 31323 |" in table and table.count("\n|") > 20
    assert main(["data", "list", "--data-dir", str(data_dir)]) == 0
    listing = capsys.readouterr().out
    assert "xstest" in listing and "eval" in listing and "beavertails_30k_test" in listing
