"""alignx.personal: users and their data, ICA / PBA prompts, Alignment Accuracy, preference inference."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from alignx.data.records import DataError
from alignx.errors import AlignXRuntimeError, InvalidInput
from alignx.personal import data as D
from alignx.personal import infer as I
from alignx.personal import metrics as M
from alignx.personal import prompts as P

COMMA_POLE = "Strong need for Retention (holding onto objects, unwilling to lose or change)"


@pytest.fixture(scope="module")
def dims(data_dir):
    return P.load_dims(data_dir)


@pytest.fixture(scope="module")
def psoups(data_dir):
    return D.load_psoups(data_dir)


def _user(n_pairs: int, n_comments: int = 0) -> D.User:
    history = tuple(D.Pair(f"old request {i}", f"liked answer {i}", f"disliked answer {i}") for i in range(n_pairs))
    return D.User(history, tuple(f"my comment {i}" for i in range(n_comments)))


# --- PBA: discretisation and profile text ------------------------------------------------------

def test_discretize_boundaries():
    assert P.discretize([0.4, 0.6, 0.41, 0.59, 0.5, 0.0, 1.0, 0.39, 0.61]) == [-1, 1, 0, 0, 0, -1, 1, -1, 1]


def test_profile_text_hand_made(dims):
    v = [0.5] * 90
    assert P.profile_text(v, dims) == P.NO_PREFERENCES
    v[0], v[3], v[73], v[2] = 0.0, 1.0, 0.6, 0.4
    text = P.profile_text(v, dims)
    assert text == "This user's preference profile: Older; Low Neuroticism; High Extraversion; Likes humor."
    assert "Young" not in text and "Dislikes humor" not in text
    with pytest.raises(InvalidInput):
        P.profile_text([0.5] * 89, dims)
    assert P.mean_direction([[0.0, 1.0], [1.0, 1.0]]) == [0.5, 1.0]


def test_pba_prompt_sources(dims):
    v = [0.5] * 90
    v[73] = 1.0
    u = D.User((), direction=tuple(v), profile="ignored when a direction is set")
    text = P.pba_prompt("Tell me a joke.", u, dims)
    assert text.startswith("This user's preference profile: Likes humor.")
    assert text.endswith("Request: Tell me a joke.")
    assert P.pba_prompt("q", D.User((), profile="Young, Likes humor"), dims).startswith(
        "This user's preference profile: Young, Likes humor.")
    assert P.pba_prompt("q", D.User(()), dims).startswith(P.NO_PREFERENCES)
    inferred = replace(u, direction=tuple([0.5] * 90))
    assert P.pba_prompt("q", inferred, dims).startswith(P.NO_PREFERENCES)
    assert P.oracle_system(D.User((), persona=" Be friendly. ")) == "Be friendly."
    with pytest.raises(InvalidInput):
        P.oracle_system(D.User(()))
    assert P.plain_prompt("q") == "q"


# --- ICA prompt --------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 2, 3, 4])
def test_ica_prompt_counts(n):
    prompt = "What should I cook tonight?"
    text = P.ica_prompt(prompt, _user(4, 4), n_comments=n, n_pairs=n)
    assert text.count("Preferred:") == n and text.count("Not preferred:") == n
    assert text.count("Request:") == n + 1
    assert sum(f"my comment {i}" in text for i in range(4)) == n
    assert sum(f"old request {i}" in text for i in range(4)) == n
    assert text.endswith(f"Request: {prompt}")
    assert ("earlier preferences" in text) == (n > 0) and ("own comments" in text) == (n > 0)
    # all available (None) and fewer available than asked
    full = P.ica_prompt(prompt, _user(n, n))
    assert full.count("Preferred:") == n and sum(f"my comment {i}" in full for i in range(4)) == n
    assert P.ica_prompt(prompt, _user(n, n), n_comments=4, n_pairs=4) == full


def test_ica_prompt_mixed_and_bounds():
    text = P.ica_prompt("q", _user(3, 1), n_comments=1, n_pairs=2)
    assert text.count("Preferred:") == 2 and "my comment 0" in text
    assert text.index("own comments") < text.index("earlier preferences") < text.index("Request: q")
    long_user = D.User((D.Pair("p" * 1000, "c" * 1000, "r" * 1000),), ("x" * 1000,))
    long = P.ica_prompt("the request " * 100, long_user)
    assert "c" * (P.MAX_CHARS + 1) not in long and "c" * P.MAX_CHARS + "..." in long
    assert long.endswith("the request " * 99 + "the request")      # the request is never cut
    for bad in (-1, 5):
        with pytest.raises(InvalidInput):
            P.ica_prompt("q", _user(4), n_pairs=bad)


# --- P-Soups loading, profile parsing, split ---------------------------------------------------

def test_profile_parsing_real(data_dir, dims):
    files = D.psoups_files(data_dir)
    assert sorted(files) == ["friendly_unfriendly", "student_phd"]
    rows = [r for p in files.values() for r in json.loads(p.read_text())]
    row = next(r for r in rows if COMMA_POLE in r["profile"] and r["profile"].startswith("Older"))
    parsed = D.parse_profile(row["profile"], dims)
    assert COMMA_POLE in parsed.matched and not parsed.unknown
    assert parsed.direction[24] == 1.0 and parsed.direction[0] == 0.0
    assert sum(v != 0.5 for v in parsed.direction) == len(parsed.matched)
    # every item of every real profile names a pole
    assert sum(len(D.parse_profile(r["profile"], dims).unknown) for r in rows) == 0
    # the loader fills user.direction from the profile
    ex = D.load_examples(files["friendly_unfriendly"], dims=dims, limit=3)
    assert ex[0].user.direction == D.profile_to_direction(ex[0].user.profile, dims)
    assert len(ex[0].user.history) == 4 and ex[0].user.persona and ex[0].source == "friendly_unfriendly"


def test_profile_parsing_rules(dims):
    p = D.parse_profile("Older, Made-up trait (a, b), Indifferent to humor, Indifferent to orderliness, "
                        "Prefers avoidance, mediation, compromise to handle conflict, Likes humor, Dislikes humor", dims)
    assert p.unknown == ("Made-up trait (a, b)",) and p.neutral == ("Indifferent to humor",)
    assert p.direction[0] == 0.0 and p.direction[23] == 0.0 and p.direction[15] == 0.0
    assert p.conflicts == (73,) and p.direction[73] == 0.5
    assert D.parse_profile("Indifferent to orderliness", dims, indifferent_neutral=True).direction[23] == 0.5


def test_split_by_prompt(psoups, data_dir):
    again = D.load_psoups(data_dir)
    for name, (train, held) in psoups.items():
        assert [e.row for e in train] == [e.row for e in again[name][0]]          # deterministic
        assert not {e.prompt for e in train} & {e.prompt for e in held}            # no shared prompt
        rows = sorted(e.row for e in train + held)
        assert rows == list(range(600))                                           # every row once
        personas = {e.user.persona for e in train + held}
        assert len(personas) == 2
        assert {e.user.persona for e in train} == personas == {e.user.persona for e in held}
    examples = psoups["student_phd"][0] + psoups["student_phd"][1]
    other = D.split_by_prompt(examples, seed=1)
    assert {e.row for e in other[0]} != {e.row for e in psoups["student_phd"][0]}
    with pytest.raises(InvalidInput):
        D.split_by_prompt(examples, train_share=1.0)


# --- full schema and loader errors -------------------------------------------------------------

def _write(tmp_path, rows, name="rows.json"):
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows))
    return path


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_full_schema_round_trip(tmp_path, data_dir, suffix):
    recs = D.full_schema_records(data_dir, n=4)
    assert {"prompt", "chosen", "rejected", "Preference Direction", "User-Generated Content",
            "Pair-wise Comparative Feedback", "Demographic Information"} <= recs[0].keys()
    out = D.load_examples(_write(tmp_path, recs, "full" + suffix), data_dir=data_dir)
    assert len(out) == 4
    for rec, ex in zip(recs, out):
        assert (ex.prompt, ex.chosen, ex.rejected) == (rec["prompt"], rec["chosen"], rec["rejected"])
        assert ex.user.direction == tuple(rec["Preference Direction"])
        assert ex.user.comments == tuple(c["comment"] for c in rec["User-Generated Content"])
        assert ex.user.history == tuple(D.Pair(h["prompt"], h["chosen"], h["rejected"])
                                        for h in rec["Pair-wise Comparative Feedback"])
        assert ex.user.demographics == rec["Demographic Information"]


def test_loader_errors(tmp_path, data_dir):
    recs = D.full_schema_records(data_dir, n=3)
    bad = json.loads(json.dumps(recs))
    bad[1]["Preference Direction"] = bad[1]["Preference Direction"][:89]
    path = _write(tmp_path, bad, "short.json")
    with pytest.raises(DataError) as e:
        D.load_examples(path)
    assert e.value.row == 1 and e.value.field == "Preference Direction" and str(path) in str(e.value)
    assert "89" in str(e.value)

    bad = json.loads(json.dumps(recs))
    del bad[2]["Pair-wise Comparative Feedback"][1]["chosen"]
    with pytest.raises(DataError) as e:
        D.load_examples(_write(tmp_path, bad, "nochosen.jsonl"))
    assert e.value.row == 2 and e.value.field == "Pair-wise Comparative Feedback"
    assert "nochosen.jsonl" in str(e.value) and "row 2" in str(e.value)

    bad = json.loads(json.dumps(recs))
    del bad[0]["Pair-wise Comparative Feedback"]
    with pytest.raises(DataError) as e:
        D.load_examples(_write(tmp_path, bad, "nohistory.json"))
    assert e.value.row == 0 and e.value.field == "Pair-wise Comparative Feedback"
    assert len(D.load_examples(tmp_path / "nohistory.json", skip_bad=True)) == 2


def test_hub_loader_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AlignXRuntimeError, match="hub-only") as e:
        D.load_alignx_hub(limit=2)
    assert D.HUB_ID in str(e.value) and "P-Soups" in str(e.value)


def test_import_is_light():
    code = ("import sys, alignx.personal as p; "
            "print(sorted(m for m in sys.modules if m.startswith('alignx.personal.') or m == 'transformers'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- Alignment Accuracy ------------------------------------------------------------------------

def test_alignment_accuracy():
    lp = [-12.5, -3.25, -40.0, -7.0]
    same = M.rewards(lp, lp)                       # the reference scored against itself
    res = M.alignment_accuracy(same, M.rewards([-1.0, -2.0, -3.0, -4.0], [-1.0, -2.0, -3.0, -4.0]))
    assert res["value"] == 0.5 and res["n"] == 4 and res["ci95"] == [0.5, 0.5]
    chosen, rejected = [1.0, 2.0, 3.0, 0.5], [0.0, 1.0, 2.5, 0.4]
    groups = ["a", "a", "b", "b"]
    good = M.alignment_accuracy(chosen, rejected, groups=groups)
    bad = M.alignment_accuracy(rejected, chosen, groups=groups)
    assert good["value"] == 1.0 and bad["value"] == 0.0
    assert set(good["by_group"]) == {"a", "b"} and good["by_group"]["a"] == {"value": 1.0, "ci95": [1.0, 1.0], "n": 2}
    mixed = M.alignment_accuracy([1.0, 0.0, 0.0, 1.0, 2.0], [0.0, 1.0, 0.0, 0.0, 1.0], groups=list("xxyyy"))
    assert mixed["value"] == pytest.approx(0.7)
    for r in (mixed, *mixed["by_group"].values()):
        assert r["ci95"][0] <= r["value"] <= r["ci95"][1]
    assert mixed["by_group"]["x"]["value"] == 0.5 and mixed["by_group"]["y"]["value"] == pytest.approx(0.5 / 3 + 2 / 3)
    assert M.rewards([1.0], [0.0], beta=0.1) == [pytest.approx(0.1)]
    assert M.alignment_accuracy(torch.tensor([1.0]), torch.tensor([0.0]))["value"] == 1.0
    with pytest.raises(InvalidInput):
        M.alignment_accuracy([1.0], [0.0, 1.0])


# --- preference inference ----------------------------------------------------------------------

def test_probe_recovers_planted_map(tmp_path):
    g = torch.Generator().manual_seed(0)
    n, d = 240, 24
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * 3 + 1
    a = torch.randn(d, 90, generator=g, dtype=torch.float64) / d ** 0.5
    y = (0.5 + 0.04 * ((x - 1) / 3) @ a).clamp(0, 1) + 0.002 * torch.randn(n, 90, generator=g, dtype=torch.float64)
    y = y.clamp(0, 1)
    probe = I.DirectionProbe().fit(x[:200], y[:200])
    assert probe.l2 in map(float, I.L2_GRID) and len(probe.cv) == len(I.L2_GRID)
    assert I.r2_score(probe.predict(x[200:]), y[200:]) > 0.95
    pred = probe.predict(x[200:])
    assert pred.shape == (40, 90) and float(pred.min()) >= 0 and float(pred.max()) <= 1
    loaded = I.DirectionProbe.load(probe.save(tmp_path / "probe", note="test"))
    assert torch.allclose(loaded.predict(x[200:]), pred) and loaded.l2 == probe.l2
    assert json.loads((tmp_path / "probe" / "probe.json").read_text())["note"] == "test"
    assert I.DirectionProbe().fit(x[:50], y[:50], l2=3.0).l2 == 3.0


def test_identify_persona_separable():
    g = torch.Generator().manual_seed(1)
    base = torch.full((90,), 0.5, dtype=torch.float64)
    base[:10] = 1.0                                     # shared by both personas
    plus, minus = base.clone(), base.clone()
    plus[10:30], minus[10:30] = 0.9, 0.1
    train = torch.cat([plus + 0.05 * torch.randn(20, 90, generator=g, dtype=torch.float64),
                       minus + 0.05 * torch.randn(20, 90, generator=g, dtype=torch.float64)]).clamp(0, 1)
    names = ["friendly"] * 20 + ["unfriendly"] * 20
    test = torch.cat([plus + 0.1 * torch.randn(10, 90, generator=g, dtype=torch.float64),
                      minus + 0.1 * torch.randn(10, 90, generator=g, dtype=torch.float64)]).clamp(0, 1)
    pred = I.identify_persona(test, train, names)
    truth = ["friendly"] * 10 + ["unfriendly"] * 10
    assert I.persona_accuracy(pred, truth) == 1.0
    assert I.persona_accuracy(["a", "b"], ["a", "a"]) == 0.5


def test_pair_features_tiny_model(psoups, dims):
    from alignx.models import load_model

    lm = load_model("tiny-random", device="cpu")
    users = [ex.user for ex in psoups["friendly_unfriendly"][0][:2]]
    f = I.pair_features(lm.model, lm.tokenizer, users, max_length=64)
    assert f.shape == (2, lm.hidden_size) and torch.isfinite(f).all()
    probe = I.DirectionProbe().fit(torch.cat([f, -f]), torch.tensor([u.direction for u in users] * 2), l2=1.0)
    direction, text = I.infer_profile(lm.model, lm.tokenizer, users[0], probe, dims)
    assert len(direction) == 90 and all(0 <= v <= 1 for v in direction) and text.startswith("This user")
    with pytest.raises(InvalidInput):
        I.pair_features(lm.model, lm.tokenizer, [D.User(())])


def test_run_inference_tiny_model(psoups, tmp_path):
    from alignx.models import load_model

    lm = load_model("tiny-random", device="cpu")
    def balanced(rows):          # 3 users of each persona
        personas = sorted({e.user.persona for e in rows})
        return [e for p in personas for e in [x for x in rows if x.user.persona == p][:3]]

    splits = {n: (balanced(tr), balanced(ev)) for n, (tr, ev) in psoups.items()}
    report = I.run_inference(lm.model, lm.tokenizer, splits, tmp_path, max_length=64)
    assert set(report["files"]) == set(psoups) and report["n_train_users"] == 12
    for r in report["files"].values():
        assert r["n_eval_users"] == 6 and 0 <= r["persona_accuracy"] <= 1 and r["chance"] == 0.5
    probe = I.DirectionProbe.load(tmp_path / "probe")
    assert probe.l2 == report["l2"]
    assert json.loads((tmp_path / "probe" / "probe.json").read_text())["report"]["files"]
