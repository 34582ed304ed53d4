"""Pure helpers of the Personalize tab (no gradio, no model): the three ways to give a user
(a P-Soups user, a typed history, chosen preference poles), the groups of the 90 preference
dimensions, and labels. Bad input raises ``InputError`` (a ``ValueError``) with a readable
message; the tab turns it into a ``gr.Error``.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

from alignx.personal.data import Pair, User

PSOUPS, TYPED, POLES = "P-Soups user", "Typed history", "Preference dimensions"
SOURCES = (PSOUPS, TYPED, POLES)
_ALIASES = {"psoups": PSOUPS, "p-soups": PSOUPS, "user": PSOUPS, "history": TYPED, "typed": TYPED,
            "dimensions": POLES, "poles": POLES}
HISTORY_COLUMNS = ("prompt", "preferred", "not preferred")
MAX_PAIRS = 4
PER_FILE = 40          # P-Soups evaluation users offered per file, balanced over its personas

# The 90 AlignX dimensions by index range (preference_dimensions_90.json): name, first, end (exclusive).
GROUPS = (
    ("Demographics & personality", 0, 7),         # age, gender, the Big Five
    ("Lifestyle, money & safety", 7, 14),         # food, living, sleep, investing, saving, safety
    ("Communication, work & learning", 14, 23),   # interaction, conflict, style, work, knowledge, creativity
    ("Psychological needs", 23, 40),              # Murray's needs: order ... play
    ("What an answer should be", 40, 47),         # harmless, instruction-following, honest, truthful, helpful ...
    ("Interests: science, media & life", 47, 69),
    ("Interests: money, arts & culture", 69, 90),
)


class InputError(ValueError):
    """A user input the tab cannot use; the message says what to fix."""


def normalize_source(source: str | None) -> str:
    """One of ``SOURCES`` (case-insensitive; short aliases: psoups, history, dimensions)."""
    text = (source or "").strip()
    for s in SOURCES:
        if text.lower() == s.lower():
            return s
    if text.lower() in _ALIASES:
        return _ALIASES[text.lower()]
    raise InputError(f"unknown source {source!r}: use one of {', '.join(SOURCES)}")


def dimension_groups(dims: Sequence[dict]) -> list[tuple[str, list[dict]]]:
    """``GROUPS`` applied to ``dims``: [(group name, its dimensions)], every dimension exactly once."""
    groups = [(name, [d for d in dims if lo <= int(d["index"]) < hi]) for name, lo, hi in GROUPS]
    covered = sorted(int(d["index"]) for _, ds in groups for d in ds)
    if covered != sorted(int(d["index"]) for d in dims):
        raise InputError(f"the dimension groups cover {len(covered)} of {len(dims)} dimensions")
    return groups


def pole_choices(group: Sequence[dict]) -> list[str]:
    """Both pole names of each dimension of a group, positive first, in dimension order."""
    return [d[k].strip() for d in group for k in ("positive", "negative")]


def direction_from_poles(chosen: Iterable[str], dims: Sequence[dict]) -> tuple[float, ...]:
    """Chosen pole names -> a direction: 1 for a positive pole, 0 for a negative one, 0.5 for a
    dimension with no pole chosen. An unknown name, or both poles of one dimension, is an error."""
    poles = {}
    for d in dims:
        poles[d["positive"].strip()] = (int(d["index"]), 1.0)
        poles[d["negative"].strip()] = (int(d["index"]), 0.0)
    direction = [0.5] * len(dims)
    picked: dict[int, str] = {}
    for name in chosen or ():
        name = str(name).strip()
        if name not in poles:
            raise InputError(f"unknown preference pole {name!r}")
        index, value = poles[name]
        if index in picked and picked[index] != name:
            raise InputError(f"both poles of one dimension are chosen: {picked[index]!r} and {name!r}; keep one")
        picked[index], direction[index] = name, value
    return tuple(direction)


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def user_from_history(rows, comments: str | None = "") -> User:
    """Typed rows (prompt, preferred, not preferred) and optional comments -> a ``User``.

    Empty rows are skipped; a row with some but not all cells filled, or with the same preferred
    and not preferred answer, is an error naming the row (1-based); at least one complete row and
    at most ``MAX_PAIRS``. Comments are separated by blank lines (at most ``MAX_PAIRS`` are used)."""
    pairs = []
    for i, row in enumerate(rows or [], 1):
        if isinstance(row, dict):
            row = [row.get(c) for c in HISTORY_COLUMNS]
        cells = [_cell(v) for v in list(row)[:3]] + [""] * max(0, 3 - len(list(row)))
        if not any(cells):
            continue
        missing = [c for c, v in zip(HISTORY_COLUMNS, cells) if not v]
        if missing:
            raise InputError(f"history row {i}: fill in {' and '.join(missing)} (or clear the row)")
        if cells[1] == cells[2]:
            raise InputError(f"history row {i}: the preferred and not preferred answers are the same")
        pairs.append(Pair(*cells))
    if not pairs:
        raise InputError("the typed history is empty: fill in at least one row "
                         "(a prompt, the answer the user preferred and one they did not)")
    if len(pairs) > MAX_PAIRS:
        raise InputError(f"the typed history has {len(pairs)} pairs; at most {MAX_PAIRS} are used, remove some")
    notes = tuple(c.strip() for c in re.split(r"\n\s*\n", comments or "") if c.strip())[:MAX_PAIRS]
    return User(history=tuple(pairs), comments=notes)


def persona_labels(stem: str, personas: Sequence[str]) -> dict[str, str]:
    """A short label per persona from the file stem's words (``friendly_unfriendly`` -> "friendly",
    "unfriendly"): a stem word found (as a whole word) in exactly one persona names it, a last
    unnamed persona gets the last unused word; otherwise the persona's first words."""
    personas = list(dict.fromkeys(p for p in personas if p))
    words = [w for w in re.split(r"[_\-\s]+", stem.lower()) if w]
    has = {p: set(re.findall(r"[a-z0-9]+", p.lower())) for p in personas}
    labels: dict[str, str] = {}
    for w in words:
        hits = [p for p in personas if w in has[p]]
        if len(hits) == 1 and hits[0] not in labels:
            labels[hits[0]] = w
    rest, unused = [p for p in personas if p not in labels], [w for w in words if w not in labels.values()]
    if len(rest) == 1 and len(unused) == 1:
        labels[rest[0]] = unused[0]
    for p in personas:
        labels.setdefault(p, " ".join(p.split()[:4]) + ("…" if len(p.split()) > 4 else ""))
    return {p: labels[p] for p in personas}


def user_key(source: str, row: int) -> str:
    return f"{source}#{row}"


def eval_users(splits: dict, per_file: int = PER_FILE) -> dict[str, tuple[str, object]]:
    """``{key: (label, example)}`` of evaluation-half users of ``load_psoups`` splits: up to
    ``per_file`` per file, alternating over its personas (row order within each), e.g. key
    "friendly_unfriendly#12", label "friendly_unfriendly #12 · friendly"."""
    out = {}
    for stem, (_, held) in splits.items():
        personas = list(dict.fromkeys(ex.user.persona for ex in held))
        labels = persona_labels(stem, [p for p in personas if p])
        queues = [[ex for ex in held if ex.user.persona == p] for p in personas]
        picked = [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)][:per_file]
        for ex in sorted(picked, key=lambda e: e.row):
            tag = labels.get(ex.user.persona, "no persona")
            out[user_key(stem, ex.row)] = (f"{stem} #{ex.row} · {tag}", ex)
    return out


def history_table(user: User) -> list[list[str]]:
    """A user's history pairs as table rows (prompt, preferred, not preferred)."""
    return [[p.prompt, p.chosen, p.rejected] for p in user.history]


def preferences_caption(preferences: dict[str, float], names: dict[str, str] | None = None) -> str:
    """ "helpful 0.50 · harmless 1.00 · honest 0.05" (``names``: expert -> objective shown)."""
    names = names or {}
    return " · ".join(f"{names.get(e, e)} {float(v):.2f}" for e, v in preferences.items())
