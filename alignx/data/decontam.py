"""Decontamination: no prompt of an evaluation file reaches a training set.

What counts as evaluation: every file of ``ROLES.json`` whose role is ``eval``, and the eval
half of the ``split:`` files (``alignx.data.roles.eval_records``); ``judge-eval`` files too for
the judges' own training data (``roles=("eval", "judge-eval")``).

A training prompt is removed when, after ``normalize``, it
* equals an evaluation prompt (``exact``), or
* has word-Jaccard ``|A & B| / |A | B| >= 0.8`` with one (``near``), A and B the sets of
  ``\\w+`` words of the two normalised texts.

``normalize``: Unicode NFKC; curly quotes and dashes -> ASCII; lower-case; runs of whitespace
-> one space; punctuation and whitespace stripped at both ends ("Tell me a joke!" and
"  tell me a JOKE" are the same prompt).

Near-duplicates are exact, not estimated: a prefix-filter candidate index (Chaudhuri et al.
2006) finds every pair with Jaccard >= t. Words are ordered rarest-first by their frequency
among the evaluation prompts; if J(A, B) >= t then |A & B| >= ceil(t |A|), so the first
``|A| - ceil(t |A|) + 1`` words of A and of B share a word. Each evaluation prompt's prefix
is indexed; a training prompt probes with its own prefix, and each candidate (length filter
t |A| <= |B| <= |A| / t) gets the exact Jaccard check.

A training item's texts: a string; a tuple's first element (prompt, response); a record's
``prompt``, plus ``extra['match_texts']`` and the later ``extra['human_turns']`` (HH transcripts).
"""
from __future__ import annotations

import math
import os
import re
import time
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence, TypeVar

from alignx.errors import InvalidInput

T = TypeVar("T")
PathLike = str | os.PathLike | None
THRESHOLD = 0.8
_ASCII = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
                        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"',
                        "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u00a0": " "})
_WS = re.compile(r"\s+")
_WORD = re.compile(r"\w+")


def _edge(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch)[0] in "PS"


def normalize(text: str) -> str:
    """NFKC, ASCII quotes/dashes, lower-case, one space per whitespace run, punctuation stripped at the ends."""
    s = _WS.sub(" ", unicodedata.normalize("NFKC", text).translate(_ASCII).lower())
    i, j = 0, len(s)
    while i < j and _edge(s[i]):
        i += 1
    while j > i and _edge(s[j - 1]):
        j -= 1
    return s[i:j]


def words(norm: str) -> frozenset[str]:
    return frozenset(_WORD.findall(norm))


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def item_texts(item: Any) -> list[str]:
    """The texts of a training item that are checked (see the module docstring)."""
    if isinstance(item, str):
        return [item]
    if isinstance(item, tuple):
        return [item[0]]
    prompt = getattr(item, "prompt", None)
    if not isinstance(prompt, str):
        raise InvalidInput(f"cannot decontaminate a {type(item).__name__}: give strings, (prompt, ...) tuples "
                           f"or records with a prompt")
    extra = getattr(item, "extra", None) or {}
    return [prompt, *extra.get("match_texts", []), *extra.get("human_turns", [])[1:]]


@dataclass(frozen=True)
class Match:
    kind: str                 # "exact" or "near"
    eval_source: str          # the evaluation file (relative to the data directory) and its reader
    eval_prompt: str
    jaccard: float
    query: str = ""           # the training text that matched (a later HH turn, a bare behavior, ...)


@dataclass
class FilterReport:
    """What ``EvalIndex.filter`` did to one training source."""

    source: str
    total: int = 0
    exact: int = 0
    near: int = 0
    by_eval: dict[str, int] = field(default_factory=dict)  # evaluation source -> rows it removed
    seconds: float = 0.0                                    # wall time of the filtering
    examples: list[dict] = field(default_factory=list)     # the first few matches, for eyeballing

    @property
    def removed(self) -> int:
        return self.exact + self.near

    @property
    def kept(self) -> int:
        return self.total - self.removed

    def to_dict(self) -> dict:
        return {"source": self.source, "total": self.total, "kept": self.kept, "removed": self.removed,
                "exact": self.exact, "near": self.near, "by_eval": self.by_eval, "seconds": round(self.seconds, 3),
                "examples": self.examples}


class EvalIndex:
    """Normalised evaluation prompts with an exact-match table and a prefix-filter index for
    word-Jaccard >= ``threshold``. Build from a data directory with ``EvalIndex.build``."""

    def __init__(self, prompts: Iterable[tuple[str, str]], threshold: float = THRESHOLD):
        """``prompts``: (evaluation source, prompt) pairs."""
        if not 0 < threshold <= 1:
            raise InvalidInput(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.exact: dict[str, tuple[str, str]] = {}
        self.raw: set[str] = set()
        entries: list[tuple[frozenset, str, str]] = []
        for src, prompt in prompts:
            self.raw.add(prompt.strip())
            norm = normalize(prompt)
            if not norm:
                continue
            if norm not in self.exact:
                self.exact[norm] = (src, prompt)
                entries.append((words(norm), src, prompt))
        self.sources = sorted({src for src, _ in self.exact.values()})
        df: dict[str, int] = defaultdict(int)
        for ws, _, _ in entries:
            for w in ws:
                df[w] += 1
        self._df = dict(df)
        self._entries = entries
        self._postings: dict[str, list[int]] = defaultdict(list)
        for k, (ws, _, _) in enumerate(entries):
            for w in self._prefix(ws):
                self._postings[w].append(k)

    def __len__(self) -> int:
        return len(self.exact)

    def _prefix(self, ws: frozenset) -> list[str]:
        n = len(ws)
        keep = n - math.ceil(self.threshold * n - 1e-9) + 1
        return sorted(ws, key=lambda w: (self._df.get(w, 0), w))[:keep]

    def match(self, text: str) -> Match | None:
        """The evaluation prompt ``text`` duplicates (exactly first, else the most similar near one), or None."""
        norm = normalize(text)
        if not norm:
            return None
        if norm in self.exact:
            src, prompt = self.exact[norm]
            return Match("exact", src, prompt, 1.0, text)
        a = words(norm)
        if not a:
            return None
        lo, hi = self.threshold * len(a) - 1e-9, len(a) / self.threshold + 1e-9
        best, best_j = None, 0.0
        seen: set[int] = set()
        for w in self._prefix(a):
            for k in self._postings.get(w, ()):
                if k in seen:
                    continue
                seen.add(k)
                b = self._entries[k][0]
                if lo <= len(b) <= hi:
                    j = jaccard(a, b)
                    if j >= self.threshold - 1e-12 and j > best_j:
                        best, best_j = k, j
        if best is None:
            return None
        _, src, prompt = self._entries[best]
        return Match("near", src, prompt, round(best_j, 4), text)

    def match_item(self, item: Any) -> Match | None:
        for text in item_texts(item):
            m = self.match(text)
            if m is not None:
                return m
        return None

    def filter(self, items: Sequence[T], source: str = "", n_examples: int = 3) -> tuple[list[T], FilterReport]:
        """``(kept items, FilterReport)``: every item none of whose texts matches an evaluation prompt."""
        t0 = time.perf_counter()
        report = FilterReport(source, total=len(items))
        kept: list[T] = []
        for item in items:
            m = self.match_item(item)
            if m is None:
                kept.append(item)
                continue
            setattr(report, m.kind, getattr(report, m.kind) + 1)
            report.by_eval[m.eval_source] = report.by_eval.get(m.eval_source, 0) + 1
            if len(report.examples) < n_examples:
                report.examples.append({"train": m.query[:200], "eval_source": m.eval_source,
                                        "eval": m.eval_prompt[:200], "kind": m.kind, "jaccard": m.jaccard})
        report.seconds = time.perf_counter() - t0
        return kept, report

    def is_clean(self, text: str) -> bool:
        return self.match(text) is None

    # --- from a data directory ------------------------------------------------------------
    _CACHE: dict[tuple, "EvalIndex"] = {}

    @classmethod
    def build(cls, data_dir: PathLike = None, roles: tuple[str, ...] = ("eval",),
              threshold: float = THRESHOLD) -> "EvalIndex":
        """The index of every evaluation prompt of ``data_dir`` (``alignx.data.roles.eval_records``),
        cached per (data directory, ROLES.json size and mtime, roles, threshold)."""
        from alignx.data.paths import resolve_data_dir
        from alignx.data.roles import eval_records, roles_file

        root = resolve_data_dir(data_dir)
        stat = roles_file(root).stat()
        key = (str(root), stat.st_size, stat.st_mtime_ns, tuple(sorted(roles)), threshold)
        if key not in cls._CACHE:
            pairs = [(src, text) for src, recs in eval_records(root, roles).items()
                     for r in recs for text in item_texts(r)]
            cls._CACHE[key] = cls(pairs, threshold)
        return cls._CACHE[key]


def removed_counts(reports: Iterable[FilterReport]) -> dict[str, int]:
    """``{source: rows removed}`` (exact + near), the form the cards record."""
    out: dict[str, int] = {}
    for r in reports:
        out[r.source] = out.get(r.source, 0) + r.removed
    return out


def decontaminate(items: Sequence[T], source: str, data_dir: PathLike = None,
                  removed: dict[str, int] | None = None, roles: tuple[str, ...] = ("eval",)) -> list[T]:
    """``items`` without evaluation prompts; adds the count removed to ``removed[source]`` when given."""
    kept, report = EvalIndex.build(data_dir, roles).filter(items, source)
    if removed is not None:
        removed[source] = removed.get(source, 0) + report.removed
    return kept


def eval_prompt_set(data_dir: PathLike = None) -> set[str]:
    """Every evaluation prompt as written (stripped). Prefer ``EvalIndex.build(...).filter``: this
    set only catches exact, un-normalised copies."""
    return set(EvalIndex.build(data_dir).raw)



def training_table(data_dir: PathLike = None, roles: tuple[str, ...] = ("eval",)) -> list[FilterReport]:
    """One ``FilterReport`` per training file of ROLES.json (``alignx.data.roles.training_sources``):
    what decontamination removes from each (``python -m alignx data decontam`` prints it)."""
    from alignx.data.roles import training_sources

    index = EvalIndex.build(data_dir, roles)
    return [index.filter(load(), name)[1] for name, load in training_sources(data_dir).items()]
