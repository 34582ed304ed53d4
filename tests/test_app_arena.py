"""alignx.arena without a server: Elo arithmetic, the vote store, side-by-side streaming."""
from __future__ import annotations

import copy
import sqlite3
import threading

import pytest

from alignx.arena import (END_OF_TURN, INITIAL_ELO, STOPPED, TOKEN_LIMIT, Answer, Vote, VoteStore, badges,
                          elo_ratings, expected, stream_answers)
from alignx.generation import Sampling


def vote(winner, *others, axis="helpful", model="m"):
    return Vote("p", {m: f"answer of {m}" for m in (winner, *others)}, winner, axis, model)


def test_elo_two_modes_one_vote_moves_by_half_k():
    table = elo_ratings([vote("a", "b")])
    assert table["helpful"]["a"].elo == pytest.approx(1016.0)
    assert table["helpful"]["b"].elo == pytest.approx(984.0)
    assert (table["helpful"]["a"].wins, table["helpful"]["a"].games) == (1, 1)
    assert (table["helpful"]["b"].wins, table["helpful"]["b"].games) == (0, 1)
    assert table["honest"] == {}                      # other axes untouched


def test_elo_winner_beats_every_other_column_from_pre_vote_ratings():
    table = elo_ratings([vote("a", "b"), vote("c", "a", "b")], modes=["a", "b", "c", "d"])["helpful"]
    # second vote: c (1000) beats a (1016) and b (984), both computed from the ratings before it
    gain_a = 32 * (1 - expected(1000, 1016))
    gain_b = 32 * (1 - expected(1000, 984))
    assert table["c"].elo == pytest.approx(1000 + gain_a + gain_b)
    assert table["a"].elo == pytest.approx(1016 - gain_a)
    assert table["b"].elo == pytest.approx(984 - gain_b)
    assert table["d"].elo == INITIAL_ELO and table["d"].games == 0
    total = sum(r.elo for r in table.values())
    assert total == pytest.approx(4 * INITIAL_ELO)   # Elo is zero-sum


def test_elo_column_order_does_not_matter():
    one = elo_ratings([vote("a", "b", "c")])["helpful"]
    two = elo_ratings([Vote("p", {"c": "", "b": "", "a": ""}, "a", "helpful", "m")])["helpful"]
    assert {m: r.elo for m, r in one.items()} == pytest.approx({m: r.elo for m, r in two.items()})


@pytest.mark.parametrize("answers, winner, axis, message", [
    ({"a": "x", "b": "y"}, "a", "funny", "unknown axis"),
    ({"a": "x"}, "a", "helpful", "at least two"),
    ({"a": "x", "b": "y"}, "c", "helpful", "not one of the compared modes"),
    ({"a": "x", "b": 3}, "a", "helpful", "must be a string"),
])
def test_bad_votes_are_refused(answers, winner, axis, message):
    with pytest.raises(ValueError, match=message):
        Vote("p", answers, winner, axis, "m")


def test_vote_store_round_trip_and_model_scoping(tmp_path):
    store = VoteStore(tmp_path / "sub" / "votes.sqlite")
    first = store.add(Vote("p1", {"base": "x", "expert:helpful": "y"}, "expert:helpful", "helpful", "m1",
                           {"temperature": 0.0}))
    store.add(vote("a", "b", model="m2"))
    assert first.id == 1 and first.created > 0
    assert store.count() == 2 and store.count("m1") == 1
    (back,) = store.votes("m1")
    assert back.answers == {"base": "x", "expert:helpful": "y"} and back.meta == {"temperature": 0.0}
    assert back.winner == "expert:helpful" and back.axis == "helpful" and back.prompt == "p1"
    # a second store on the same file sees the same votes (the app reopens it per call)
    assert [v.model for v in VoteStore(store.path).votes()] == ["m1", "m2"]
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT COUNT(*) FROM votes").fetchone()[0] == 2


def test_vote_store_default_path_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNX_VOTES_DB", str(tmp_path / "v.sqlite"))
    assert VoteStore().path == tmp_path / "v.sqlite"
    monkeypatch.delenv("ALIGNX_VOTES_DB")
    monkeypatch.setenv("ALIGNX_CACHE", str(tmp_path / "cache"))
    assert VoteStore().path == tmp_path / "cache" / "votes.sqlite"


def test_vote_store_concurrent_writers(tmp_path):
    store = VoteStore(tmp_path / "v.sqlite")
    threads = [threading.Thread(target=lambda: [store.add(vote("a", "b")) for _ in range(10)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count() == 40


@pytest.fixture(scope="module")
def tiny_studio():
    from alignx.studio import Studio

    return Studio.load("tiny-random", None, device="cpu")


def test_stream_answers_round_robin_and_badges(tiny_studio):
    policies = {"a": tiny_studio.policy("base"), "b": tiny_studio.policy("base")}
    steps = [{m: (a.tokens, a.ended) for m, a in answers.items()}
             for answers in stream_answers(policies, "Hello", Sampling(5, temperature=1.0))]
    assert len(steps) == 6                          # 5 tokens, then one step that finds the limit
    assert steps[0] == {"a": (1, ""), "b": (1, "")}  # one token per column per step
    assert steps[-1] == {"a": (5, TOKEN_LIMIT), "b": (5, TOKEN_LIMIT)}
    answer = Answer("a", text="hi", tokens=5)
    assert badges("prompt", answer) == {"length": "5 tokens"}


def test_stream_answers_stop_ends_every_column(tiny_studio):
    stop = threading.Event()
    policies = {"a": tiny_studio.policy("base"), "b": tiny_studio.policy("base")}
    seen = 0
    for answers in stream_answers(policies, "Hello", Sampling(500, temperature=1.0), stop):
        seen += 1
        if seen == 3:
            stop.set()
    assert {a.ended for a in answers.values()} == {STOPPED}
    assert all(a.tokens == 3 for a in answers.values())


def test_answer_finish_strips_and_times():
    answer = Answer("base", text="\n  Hello  ")
    answer.finish(END_OF_TURN)
    assert answer.text == "Hello" and answer.ended == END_OF_TURN and answer.seconds >= 0


def test_run_state_copies_fresh_per_session():
    from app.context import Run

    run = Run()
    stop = run.begin()
    clone = copy.deepcopy(run)           # what gradio does for each new session
    assert clone is not run and not clone.active and clone.stop is not stop
    assert run.request_stop() and stop.is_set()
    run.end()
    assert not run.request_stop()        # nothing running: Stop is a no-op
