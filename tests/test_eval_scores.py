"""Log-likelihood scoring: longest-first order with results in the caller's order, the score cache
(a rerun scores nothing; another policy's file is set aside), the reference cache shared across
runs, and the base-weights fingerprint that keys it."""
from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest
import torch

from alignx.eval.options import reference_cache
from alignx.eval.runner import SCORES, run_suite
from alignx.eval.scores import ScoreCache, chunked_logprob, weights_fingerprint
from tests.test_eval_runner import SUITE, ScriptedJudge, ScriptedPolicy, _lp_factory


class CountingPolicy:
    """log p = -(len(prompt) + len(continuation)); records every batch it is asked to score."""

    def __init__(self):
        self.batches: list[list[tuple[str, str]]] = []

    def logprob(self, prompts, conts, batch_size=8):
        self.batches.append(list(zip(prompts, conts)))
        return [-float(len(p) + len(c)) for p, c in zip(prompts, conts)]


def test_longest_first_in_callers_order_and_cached(tmp_path):
    prompts = ["a", "bbbbbbbb", "cc", "a", "dddd"]
    conts = ["x", "y", "zzzzzzzzzz", "x", ""]
    cache = ScoreCache(tmp_path / "s.json", "k1")
    pol = CountingPolicy()
    out = chunked_logprob(pol, prompts, conts, batch_size=1, bar_desc="", progress=False, cache=cache)
    assert out == [-(len(p) + len(c)) for p, c in zip(prompts, conts)]
    scored = [pc for b in pol.batches for pc in b]
    assert scored == [("cc", "zzzzzzzzzz"), ("bbbbbbbb", "y"), ("dddd", ""), ("a", "x")]   # longest first, once
    again = CountingPolicy()
    reread = ScoreCache(tmp_path / "s.json", "k1")
    assert chunked_logprob(again, prompts, conts, 1, "", False, reread) == out and again.batches == []
    more = CountingPolicy()                                  # only the new pair is scored
    assert chunked_logprob(more, prompts + ["e"], conts + ["f"], 1, "", False, reread)[-1] == -2.0
    assert more.batches == [[("e", "f")]]
    uncached = CountingPolicy()
    assert chunked_logprob(uncached, prompts, conts, 2, "", False) == out and len(uncached.batches) == 1


def test_cache_of_another_policy_or_unreadable_is_set_aside(tmp_path):
    path = tmp_path / "s.json"
    c = ScoreCache(path, "k1")
    c.scores["h"] = -1.5
    c.save()
    assert ScoreCache(path, "k1").scores == {"h": -1.5}
    other = ScoreCache(path, "k2")
    assert other.scores == {} and not path.exists()
    assert json.loads((tmp_path / "s.json.stale").read_text())["key"] == "k1"
    path.write_text('{"key": "k2", "scor')                  # a torn file from an older writer
    assert ScoreCache(path, "k2").scores == {}


def test_rerun_and_reference_scores_are_not_recomputed(tmp_path, data_dir):
    from alignx.eval.suites import build_tasks

    tasks = build_tasks(SUITE, data_dir)
    answers = {it["prompt"]: "fine" for it in tasks.generation_items()}
    judge = ScriptedJudge()
    judges = {c: judge for c in judge.capabilities}

    class Counted(ScriptedPolicy):
        def __init__(self, bonus):
            super().__init__(answers, _lp_factory(tasks, bonus))
            self.scored = 0

        def logprob(self, prompts, continuations, batch_size=8):
            self.scored += len(prompts)
            return super().logprob(prompts, continuations, batch_size)

    ref_cache = ScoreCache(tmp_path / "ref.json", "ref")
    kw = dict(n_boot=50, data_dir=data_dir, tasks=tasks, progress=False, ref_cache=ref_cache)
    pi, ref = Counted(0.5), Counted(0.0)
    first = run_suite(SUITE, pi, judges, tmp_path / "a", ref_policy=ref, run_info={"model": "m", "mode": "x"}, **kw)
    n_pairs = sum(len(p) for p in tasks.pairs.values())
    assert ref.scored == 2 * n_pairs and pi.scored > 2 * n_pairs and (tmp_path / "a" / SCORES).exists()
    pi2, ref2 = Counted(0.5), Counted(0.0)
    rerun = run_suite(SUITE, pi2, judges, tmp_path / "a", ref_policy=ref2, run_info={"model": "m", "mode": "x"}, **kw)
    assert pi2.scored == 0 and ref2.scored == 0
    for key in ("mc1", "mc2", "alignment_accuracy"):
        assert rerun[key]["value"] == first[key]["value"]
    pi3, ref3 = Counted(0.5), Counted(0.0)                   # another mode, same reference: pi only
    run_suite(SUITE, pi3, judges, tmp_path / "b", ref_policy=ref3, run_info={"model": "m", "mode": "y"}, **kw)
    assert ref3.scored == 0 and pi3.scored == pi.scored


def test_reference_scored_ahead_is_what_a_run_would_score(tmp_path, data_dir):
    """``score_reference`` fills the reference cache with the log-probs a run's Alignment Accuracy
    stage would compute itself: a run after it scores no reference pair and reports the same AA."""
    from alignx.eval.runner import score_reference
    from alignx.eval.suites import build_tasks

    tasks = build_tasks(SUITE, data_dir)
    answers = {it["prompt"]: "fine" for it in tasks.generation_items()}
    judge = ScriptedJudge()
    judges = {c: judge for c in judge.capabilities}
    scored = []

    class Counted(ScriptedPolicy):
        def logprob(self, prompts, continuations, batch_size=8):
            scored.append(len(prompts))
            return super().logprob(prompts, continuations, batch_size)

    ahead = ScoreCache(tmp_path / "ahead.json", "ref")
    n = score_reference(Counted(answers, _lp_factory(tasks, 0.0)), tasks, 4, False, ahead)
    assert n == sum(len(p) for p in tasks.pairs.values()) and len(ahead.scores) > 0 and sum(scored) == 2 * n
    scored.clear()
    kw = dict(n_boot=50, data_dir=data_dir, tasks=tasks, progress=False, run_info={"model": "m", "mode": "x"})
    after = run_suite(SUITE, ScriptedPolicy(answers, _lp_factory(tasks, 0.5)), judges, tmp_path / "a",
                      ref_policy=Counted(answers, _lp_factory(tasks, 0.0)),
                      ref_cache=ScoreCache(tmp_path / "ahead.json", "ref"), **kw)
    assert scored == []                                          # every reference pair came from the cache
    inline = run_suite(SUITE, ScriptedPolicy(answers, _lp_factory(tasks, 0.5)), judges, tmp_path / "b",
                       ref_policy=ScriptedPolicy(answers, _lp_factory(tasks, 0.0)),
                       ref_cache=ScoreCache(tmp_path / "inline.json", "ref"), **kw)
    assert after["alignment_accuracy"] == inline["alignment_accuracy"]


def test_cli_reference_only_fills_the_cache(tmp_path, data_dir, capsys):
    from alignx.cli import main

    base = ["eval", "--suite", "quick", "--model", "tiny-random", "--data-dir", str(data_dir), "--no-progress"]
    assert main([*base, "--reference-only", "--ref-cache", str(tmp_path / "ref"), "--batch-size", "8"]) == 0
    assert "reference log-probs of 50 pairs (quick, batch 8)" in capsys.readouterr().err
    cache = json.loads(next((tmp_path / "ref").glob("ref-*.json")).read_text())
    assert len(cache["scores"]) == 100 and all(v < 0 for v in cache["scores"].values())     # chosen + rejected
    assert main([*base, "--reference-only", "--ref-cache", "none"]) == 2
    assert "--ref-cache none leaves nothing to fill" in capsys.readouterr().err
    assert main(base) == 2 and "--out is required" in capsys.readouterr().err


def test_weights_fingerprint_and_reference_cache(tiny_lm, tmp_path):
    from peft import LoraConfig, get_peft_model

    model = copy.deepcopy(tiny_lm.model)
    base = weights_fingerprint(model)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    assert weights_fingerprint(peft_model) == base           # adapters are not the reference's weights
    with torch.no_grad():
        next(p for n, p in peft_model.named_parameters() if "lora_" not in n).add_(1e-3)
    assert weights_fingerprint(peft_model) != base

    def studio(m):
        return SimpleNamespace(lm=SimpleNamespace(name="tiny"), tokenizer=tiny_lm.tokenizer, model=m)

    one = reference_cache(studio(tiny_lm.model), str(tmp_path))
    assert one.path.parent == tmp_path and one.path.name.startswith("ref-")
    assert reference_cache(studio(tiny_lm.model), str(tmp_path)).key == one.key
    assert reference_cache(studio(peft_model), str(tmp_path)).key != one.key
    assert reference_cache(studio(tiny_lm.model), "none") is None


@pytest.mark.parametrize("command", ["eval", "sweep"])
def test_cli_ref_cache_flag(command):
    from alignx.cli import build_parser

    args = build_parser().parse_args([command, "--out", "x", "--ref-cache", "none"])
    assert args.ref_cache == "none"
    assert build_parser().parse_args([command, "--out", "x"]).ref_cache is None


def test_two_writers_of_one_cache_lose_nothing(tmp_path):
    a, b = ScoreCache(tmp_path / "r.json", "k"), ScoreCache(tmp_path / "r.json", "k")
    chunked_logprob(CountingPolicy(), ["p1"], ["c"], 1, "", False, a)
    pol = CountingPolicy()                                    # b sees a's score at its start
    chunked_logprob(pol, ["p1", "p2"], ["c", "c"], 1, "", False, b)
    assert pol.batches == [[("p2", "c")]]
    assert len(ScoreCache(tmp_path / "r.json", "k").scores) == 2
    c = ScoreCache(tmp_path / "r.json", "k")
    c.scores.clear()                                          # a writer that knows only its own score
    c.scores["p3"] = -1.0
    c.save()
    assert len(ScoreCache(tmp_path / "r.json", "k").scores) == 3
