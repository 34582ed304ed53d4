"""The user-turn templates shared by training and evaluation (ICA, PBA, oracle, plain).

ICA (in-context alignment) puts up to ``MAX_ITEMS`` = 4 of the user's own comments and up to 4 of
their pairwise preferences before the request; PBA (preference-bridged alignment) puts their
preference profile, the non-neutral dimensions of the discretised direction named by their pole.
Every history text (comment, earlier request, preferred / not preferred answer) is cut to
``MAX_CHARS`` = 400 characters (then "...") so an ICA prompt stays <= about 4 * 3 * 400 + 4 * 400
= 6,400 characters even with full histories; the new request itself is never cut.

Discretisation (AlignX): d_i = +1 if v_i >= 0.6, -1 if v_i <= 0.4, else 0 (0.5 = neutral).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache

from alignx.errors import InvalidInput

MAX_ITEMS = 4
MAX_CHARS = 400
HIGH, LOW = 0.6, 0.4
INSTRUCTION = "Answer this user's new request the way they would prefer."
NO_PREFERENCES = "This user has no stated preferences (every dimension is neutral)."


def _cut(text: str, limit: int = MAX_CHARS) -> str:
    """``text`` stripped, whitespace runs kept, cut to ``limit`` characters + "..." when longer."""
    text = text.strip()
    return text if len(text) <= limit else text[:limit].rstrip() + "..."


def _count(n: int | None, available: int, what: str) -> int:
    if n is None:
        return min(available, MAX_ITEMS)
    if not 0 <= n <= MAX_ITEMS:
        raise InvalidInput(f"{what} must be in 0..{MAX_ITEMS}, got {n}")
    return min(n, available)


def _request(prompt: str) -> str:
    return f"{INSTRUCTION}\nRequest: {prompt.strip()}"


def ica_prompt(prompt: str, user, n_comments: int | None = None, n_pairs: int | None = None) -> str:
    """The ICA user turn: the first ``n_comments`` comments and first ``n_pairs`` history pairs
    (None = all, at most 4; fewer available = those), then the request. Sections with no item are
    left out; the request is always last::

        This user's own comments:
        1. {comment}

        This user's earlier preferences:
        1. Request: {prompt}
           Preferred: {chosen}
           Not preferred: {rejected}

        Answer this user's new request the way they would prefer.
        Request: {prompt}
    """
    comments = list(user.comments)[:_count(n_comments, len(user.comments), "n_comments")]
    pairs = list(user.history)[:_count(n_pairs, len(user.history), "n_pairs")]
    parts = []
    if comments:
        parts.append("This user's own comments:\n" + "\n".join(f"{i}. {_cut(c)}" for i, c in enumerate(comments, 1)))
    if pairs:
        parts.append("This user's earlier preferences:\n" + "\n".join(
            f"{i}. Request: {_cut(p.prompt)}\n   Preferred: {_cut(p.chosen)}\n   Not preferred: {_cut(p.rejected)}"
            for i, p in enumerate(pairs, 1)))
    parts.append(_request(prompt))
    return "\n\n".join(parts)


def discretize(direction: Sequence[float]) -> list[int]:
    """+1 where v >= 0.6, -1 where v <= 0.4, 0 otherwise (both boundaries included)."""
    return [1 if v >= HIGH else -1 if v <= LOW else 0 for v in map(float, direction)]


def mean_direction(directions: Sequence[Sequence[float]]) -> list[float]:
    """The element-wise mean (1/n) sum_u v_u of equally long direction vectors."""
    directions = [list(map(float, d)) for d in directions]
    if not directions:
        raise InvalidInput("mean_direction needs at least one direction")
    width = len(directions[0])
    if any(len(d) != width for d in directions):
        raise InvalidInput(f"directions differ in length: {sorted({len(d) for d in directions})}")
    return [sum(col) / len(directions) for col in zip(*directions)]


def profile_text(direction: Sequence[float], dims: Sequence[dict]) -> str:
    """The non-neutral dimensions named by their pole (+1 -> ``positive``, -1 -> ``negative``), in
    dimension order: "This user's preference profile: Older; High Extraversion; Dislikes humor."
    An all-neutral vector gives ``NO_PREFERENCES``."""
    if len(direction) != len(dims):
        raise InvalidInput(f"direction has {len(direction)} values, the dimensions are {len(dims)}")
    names = [dims[i]["positive" if s > 0 else "negative"].strip()
             for i, s in enumerate(discretize(direction)) if s]
    return f"This user's preference profile: {'; '.join(names)}." if names else NO_PREFERENCES


def pba_prompt(prompt: str, user, dims: Sequence[dict]) -> str:
    """The PBA user turn: the profile, then the request::

        This user's preference profile: {pole}; {pole}; ...

        Answer this user's new request the way they would prefer.
        Request: {prompt}

    The profile comes from ``user.direction`` (``profile_text``) when set; else from the
    ``user.profile`` text ("This user's preference profile: {profile}."); else ``NO_PREFERENCES``.
    To use an inferred direction: ``dataclasses.replace(user, direction=inferred)``."""
    if user.direction is not None:
        text = profile_text(user.direction, dims)
    elif user.profile and user.profile.strip():
        text = f"This user's preference profile: {user.profile.strip().rstrip('.')}."
    else:
        text = NO_PREFERENCES
    return f"{text}\n\n{_request(prompt)}"


def oracle_system(user) -> str:
    """The ground-truth persona (P-Soups ``ground_truth_persona``) verbatim, as the system prompt."""
    if not user.persona or not user.persona.strip():
        raise InvalidInput("oracle_system needs a user with a ground-truth persona (P-Soups rows have one)")
    return user.persona.strip()


def plain_prompt(prompt: str) -> str:
    """The request alone (no user information): the non-personalized baseline."""
    return prompt


@lru_cache(maxsize=8)
def _dims(folder: str) -> tuple[dict, ...]:
    from alignx.data.loaders import load_preference_dimensions

    return tuple(load_preference_dimensions(data_dir=folder))


def load_dims(data_dir: str | os.PathLike | None = None) -> list[dict]:
    """The 90 preference dimensions (``index, positive, negative``), cached per data directory."""
    from alignx.data.paths import resolve_data_dir

    return [dict(d) for d in _dims(str(resolve_data_dir(data_dir)))]
