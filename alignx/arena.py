"""Side-by-side arena: per-answer badges, a SQLite store of human votes, and Elo ratings.

A vote says "for prompt P, among the answers of modes M1..Mn, mode W is best on axis A".
It counts as W beating every other mode shown (n - 1 pairwise games). Ratings are kept per
(model, axis, mode) and recomputed from the stored votes, oldest first, so the table is a
pure function of the database. Within one vote all pairwise updates use the ratings from
before the vote, so the order of the columns does not matter. See docs/METHOD.md.

``stream_answers`` streams several policies side by side (round robin, one token per column
per step), the loop behind the app's Playground and Side-by-side tabs.

No gradio here: the app (``app/tabs/``) and scripts both use this module.
"""
from __future__ import annotations

from alignx.errors import InvalidInput

import json
import os
import sqlite3
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ContextManager, Iterable, Iterator, Sequence

from alignx.data.records import AXES

if TYPE_CHECKING:
    from alignx.generation import Sampling
    from alignx.policy import Policy

K_FACTOR = 32.0
INITIAL_ELO = 1000.0


# --- streaming answers ---------------------------------------------------------------------------
END_OF_TURN, TOKEN_LIMIT, STOPPED = "end of turn", "token limit", "stopped"


@dataclass
class Answer:
    """One column's answer while it streams. ``ended`` is "" until it is finished, then the
    text is stripped (while streaming it may start with the template's whitespace)."""

    mode: str
    text: str = ""
    tokens: int = 0
    ended: str = ""                 # "" | END_OF_TURN | TOKEN_LIMIT | STOPPED
    seconds: float = 0.0            # wall time from the first request to the end
    # (token text, routing weights) per generated token, for modes that route (MoCaE); else empty
    weights: list[tuple[str, dict[str, float]]] = field(default_factory=list, repr=False)
    started: float = field(default_factory=time.perf_counter, repr=False)

    def finish(self, reason: str) -> None:
        self.ended, self.text = reason, self.text.strip()
        self.seconds = time.perf_counter() - self.started


def stream_answers(policies: dict[str, "Policy"], prompt: str, sampling: "Sampling",
                   stop: threading.Event | None = None,
                   lock: ContextManager | None = None) -> Iterator[dict[str, Answer]]:
    """Answer ``prompt`` with every policy at once: one token per unfinished column per step.

    Yields the same ``{mode: Answer}`` dict after every step, updated in place; the last yield
    has every answer finished. ``stop`` ends all columns before their next forward pass.
    Each forward pass takes the model's own lock (``alignx.generation.model_lock``), so
    concurrent requests on one shared model interleave token by token; ``lock`` (optional) is
    held around each step as well (a caller's extra guard, e.g. a test's pass counter).
    """
    answers = {mode: Answer(mode) for mode in policies}
    streams = {mode: p.stream(prompt, sampling, stop) for mode, p in policies.items()}
    try:
        while streams:
            for mode, stream in list(streams.items()):
                if lock is None:
                    event = next(stream, None)
                else:
                    with lock:
                        event = next(stream, None)
                answer = answers[mode]
                if event is None:   # decode returned: stop signal or max_new_tokens reached
                    stopped = stop is not None and stop.is_set()
                    answer.finish(STOPPED if stopped else TOKEN_LIMIT)
                elif event.finished:
                    answer.finish(END_OF_TURN)
                else:
                    answer.text += event.text
                    answer.tokens += 1
                    if event.weights:
                        answer.weights.append((event.text, dict(event.weights)))
                    continue
                del streams[mode]
            yield answers
    finally:
        for stream in streams.values():
            stream.close()


SAFETY_THRESHOLD = 0.5     # P(unsafe) above it reads "unsafe" (the evaluation's own threshold)


def badges(prompt: str, answer: Answer, judge=None) -> dict[str, str]:
    """What is measured about one answer, shown under its column in the app: label -> value.

    Always its length in generated tokens. With ``judge`` (an ``alignx.eval`` judge, e.g. the
    offline proxy judges) also its safety verdict (P(unsafe) from the judge) and, when the judge
    has reference answers for the prompt (TruthfulQA questions), P(truthful). A measurement the
    judge cannot make is left out, never filled in; every judge value is labeled a proxy when
    the judge says it is one.
    """
    out: dict[str, str] = {"length": f"{answer.tokens} tokens"}
    if judge is None or not answer.text.strip():
        return out
    tag = " (proxy)" if getattr(judge, "proxy", False) else ""
    caps = getattr(judge, "capabilities", frozenset())
    if "unsafe" in caps:
        p = judge.unsafe([prompt], [answer.text])[0]
        if p is not None:
            verdict = "unsafe" if p > SAFETY_THRESHOLD else "safe"
            out["safety" + tag] = f"{verdict} · P(unsafe) {p:.2f}"
    if "truthful" in caps:
        try:
            p = judge.truthful([prompt], [answer.text])[0]
        except Exception:   # noqa: BLE001 - no reference answers for this prompt: not measured
            p = None
        if p is not None:
            out["truthful" + tag] = f"P {p:.2f}"
    return out


# --- votes -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Vote:
    prompt: str
    answers: dict[str, str]         # mode -> answer, every column that was shown
    winner: str                     # the mode judged best
    axis: str                       # helpful | harmless | honest
    model: str                      # base model name (votes of different models never mix)
    meta: dict = field(default_factory=dict)    # e.g. the sampling settings
    created: float = 0.0            # unix time; set by the store
    id: int | None = None
    # the objectives a new vote may name (the Studio's objectives); None: any (votes read back)
    axes: tuple[str, ...] | None = field(default=AXES, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_vote(self.answers, self.winner, self.axis, self.axes)


def check_vote(answers: dict[str, str], winner: str, axis: str, axes=AXES) -> None:
    """Raise ``InvalidInput`` with a readable message if the vote cannot be counted."""
    if not isinstance(axis, str) or not axis.strip():
        raise InvalidInput(f"a vote needs an axis (an objective), got {axis!r}")
    if axes is not None and axis not in axes:
        raise InvalidInput(f"unknown axis {axis!r}; choose from {list(axes)}")
    if not isinstance(answers, dict) or len(answers) < 2:
        raise InvalidInput("a vote needs the answers of at least two modes (mode -> answer)")
    if winner not in answers:
        raise InvalidInput(f"winner {winner!r} is not one of the compared modes {sorted(answers)}")
    if not all(isinstance(a, str) for a in answers.values()):
        raise InvalidInput("every answer must be a string")


def default_votes_path() -> Path:
    """``$ALIGNX_VOTES_DB``, else ``<alignx cache>/votes.sqlite`` (``~/.cache/alignx`` by default)."""
    if os.environ.get("ALIGNX_VOTES_DB"):
        return Path(os.environ["ALIGNX_VOTES_DB"]).expanduser()
    from alignx.models import cache_dir

    return cache_dir() / "votes.sqlite"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL    NOT NULL,
    model   TEXT    NOT NULL,
    axis    TEXT    NOT NULL,
    winner  TEXT    NOT NULL,
    prompt  TEXT    NOT NULL,
    answers TEXT    NOT NULL,   -- JSON object mode -> answer
    meta    TEXT    NOT NULL    -- JSON object
);
CREATE INDEX IF NOT EXISTS votes_model ON votes (model, id);
"""


class VoteStore:
    """Votes in one SQLite file. Safe to share between threads (one connection per call)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_votes_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            with closing(self._connect()) as db, db:
                db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:     # not SQLite, or a SQLite file of something else
            raise InvalidInput(f"{self.path}: not a usable votes database ({exc}); pass another --votes-db "
                               f"or move this file away") from None

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def add(self, vote: Vote) -> Vote:
        created = vote.created or time.time()
        row = (created, vote.model, vote.axis, vote.winner, vote.prompt,
               json.dumps(vote.answers, ensure_ascii=False), json.dumps(vote.meta, ensure_ascii=False))
        with self._lock, closing(self._connect()) as db, db:
            cur = db.execute("INSERT INTO votes (created, model, axis, winner, prompt, answers, meta) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)", row)
            vote_id = cur.lastrowid
        return Vote(vote.prompt, vote.answers, vote.winner, vote.axis, vote.model, vote.meta, created, vote_id, None)

    def votes(self, model: str | None = None) -> list[Vote]:
        """All votes (of ``model`` if given), oldest first."""
        query = "SELECT id, created, model, axis, winner, prompt, answers, meta FROM votes"
        args: tuple = ()
        if model is not None:
            query, args = query + " WHERE model = ?", (model,)
        with closing(self._connect()) as db:
            rows = db.execute(query + " ORDER BY id", args).fetchall()
        return [Vote(prompt, json.loads(answers), winner, axis, mdl, json.loads(meta), created, vid, None)
                for vid, created, mdl, axis, winner, prompt, answers, meta in rows]

    def count(self, model: str | None = None) -> int:
        with closing(self._connect()) as db:
            if model is None:
                return db.execute("SELECT COUNT(*) FROM votes").fetchone()[0]
            return db.execute("SELECT COUNT(*) FROM votes WHERE model = ?", (model,)).fetchone()[0]


# --- Elo ---------------------------------------------------------------------------------------
@dataclass
class Rating:
    elo: float = INITIAL_ELO
    wins: int = 0       # votes this mode won on the axis
    games: int = 0      # votes on the axis in which this mode was shown


def expected(r_a: float, r_b: float) -> float:
    """Probability that a player rated ``r_a`` beats one rated ``r_b``."""
    return 1.0 / (1.0 + 10.0 ** ((r_b - r_a) / 400.0))


def elo_ratings(votes: Iterable[Vote], k: float = K_FACTOR, initial: float = INITIAL_ELO,
                modes: Sequence[str] = (), axes: Sequence[str] = AXES) -> dict[str, dict[str, Rating]]:
    """axis -> mode -> Rating, replaying ``votes`` in order. ``modes`` and ``axes`` are listed even
    unrated; an axis only the votes name joins the table."""
    table: dict[str, dict[str, Rating]] = {axis: {m: Rating(initial) for m in modes} for axis in axes}
    for vote in votes:
        ratings = table.setdefault(vote.axis, {})
        for mode in vote.answers:
            ratings.setdefault(mode, Rating(initial))
        before = {m: ratings[m].elo for m in vote.answers}
        for loser in vote.answers:
            if loser == vote.winner:
                continue
            gain = k * (1.0 - expected(before[vote.winner], before[loser]))
            ratings[vote.winner].elo += gain
            ratings[loser].elo -= gain
        for mode in vote.answers:
            ratings[mode].games += 1
        ratings[vote.winner].wins += 1
    return table
