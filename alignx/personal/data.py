"""Personalization data: users (history, comments, preference direction) and their preference pairs.

Sources:

* P-Soups (AlignX-Family): ``alignx/P-Soups/*.json``, 600 rows per file, two opposite personas.
  Each row is one user: ``prompt, chosen, rejected``, ``ground_truth_persona``, ``profile`` (a
  comma-separated list of pole names of the 90 dimensions) and ``Pair-wise Comparative Feedback``
  (4 prompt/chosen/rejected pairs: the user's history).
* Full-schema AlignX rows (``Preference Direction``, ``User-Generated Content``,
  ``Demographic Information``, ``Pair-wise Comparative Feedback``) from a json/jsonl file, or
  from the hub (``load_alignx_hub``; the full dataset is hub-only).

Profile -> direction (``parse_profile``): the profile is matched left to right against the 180
known pole names (longest first; a name must end at a comma or the end), so names with commas
inside parentheses parse whole. A positive pole sets its dimension to 1.0, a negative pole to 0.0;
unlisted dimensions are neutral, 0.5. In ``preference_dimensions_90.json`` the negative pole of
dimensions 17-19 and 23-46 *is* an "Indifferent to/about ..." name (e.g. "Indifferent to
orderliness" = dim 23's negative pole), so such an item is that pole, 0.0, unless
``indifferent_neutral=True`` (then 0.5). An "Indifferent ..." item that names no pole is neutral
(0.5, counted in ``neutral``). Any other item naming no pole is ignored and counted in
``unknown`` (``load_examples`` logs the total). A dimension listed with both poles is set to 0.5
and counted in ``conflicts``.
"""
from __future__ import annotations

import json
import logging
import os
import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignx.data.loaders import N_PREFERENCE_DIMS, load_alignx
from alignx.data.paths import FILES, resolve_data_dir
from alignx.data.records import DataError
from alignx.errors import AlignXRuntimeError, InvalidInput, MissingFile

log = logging.getLogger(__name__)
PathLike = str | os.PathLike | None

HUB_ID = "JinaLeejnl/AlignX"            # the full AlignX dataset (1.3M rows); test split: JinaLeejnl/AlignX-test
HISTORY = "Pair-wise Comparative Feedback"
COMMENTS = "User-Generated Content"
DIRECTION = "Preference Direction"
DEMOGRAPHICS = "Demographic Information"


@dataclass(frozen=True)
class Pair:
    prompt: str
    chosen: str
    rejected: str


@dataclass(frozen=True)
class User:
    """Everything known about one user. ``direction``: 90 values in [0, 1] (1 = positive pole)."""

    history: tuple[Pair, ...]
    comments: tuple[str, ...] = ()
    direction: tuple[float, ...] | None = None
    profile: str | None = None
    persona: str | None = None
    demographics: str | None = None


@dataclass(frozen=True)
class Example:
    """One preference pair of one user; ``source`` = file stem (e.g. ``friendly_unfriendly``), ``row`` = file row."""

    prompt: str
    chosen: str
    rejected: str
    user: User
    source: str
    row: int


@dataclass(frozen=True)
class ProfileParse:
    direction: tuple[float, ...]
    matched: tuple[str, ...]      # items that named a pole
    neutral: tuple[str, ...]      # "Indifferent ..." items naming no pole (-> 0.5)
    unknown: tuple[str, ...]      # items naming no pole (ignored)
    conflicts: tuple[int, ...]    # dimensions listed with both poles (-> 0.5)


def _split_item(text: str) -> tuple[str, str]:
    """The next comma-separated item (commas inside parentheses do not split) and the rest."""
    depth = 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")" and depth > 0
        if ch == "," and depth == 0:
            return text[:i].strip(), text[i + 1:]
    return text.strip(), ""


def parse_profile(profile: str, dims: Sequence[dict], indifferent_neutral: bool = False) -> ProfileParse:
    """Profile text -> direction (see the module docstring for the rules)."""
    poles: dict[str, tuple[int, float]] = {}
    for d in dims:
        poles[d["positive"].strip()] = (int(d["index"]), 1.0)
        poles[d["negative"].strip()] = (int(d["index"]), 0.0)
    names = sorted(poles, key=len, reverse=True)
    values: dict[int, set[float]] = {}
    matched, neutral, unknown_items = [], [], []
    rest = profile or ""
    while rest.strip():
        rest = rest.lstrip(" ,\n\t")
        name = next((n for n in names if rest.startswith(n) and rest[len(n):].lstrip()[:1] in ("", ",")), None)
        if name is not None:
            rest = rest[len(name):].lstrip()[1:]
            index, value = poles[name]
            if indifferent_neutral and name.startswith("Indifferent"):
                value = 0.5
            values.setdefault(index, set()).add(value)
            matched.append(name)
            continue
        item, rest = _split_item(rest)
        if item:
            (neutral if item.startswith("Indifferent") else unknown_items).append(item)
    direction = [0.5] * N_PREFERENCE_DIMS
    conflicts = []
    for index, vals in values.items():
        if len(vals) > 1:
            conflicts.append(index)
        else:
            direction[index] = vals.pop()
    return ProfileParse(tuple(direction), tuple(matched), tuple(neutral), tuple(unknown_items), tuple(sorted(conflicts)))


def profile_to_direction(profile: str, dims: Sequence[dict], indifferent_neutral: bool = False) -> tuple[float, ...]:
    """Profile text -> 90 values (pole 1.0 / 0.0, unlisted 0.5); ``parse_profile`` has the counts."""
    return parse_profile(profile, dims, indifferent_neutral).direction


def _history(path: Path, row: int, value: Any) -> tuple[Pair, ...]:
    pairs = []
    for j, item in enumerate(value):
        texts = [item.get(k) for k in ("prompt", "chosen", "rejected")]
        if not all(isinstance(t, str) and t.strip() for t in texts):
            raise DataError(path, f"item {j}: prompt, chosen and rejected must be non-empty strings",
                            row=row, field=HISTORY)
        pairs.append(Pair(*texts))
    return tuple(pairs)


def _comments(path: Path, row: int, value: Any) -> tuple[str, ...]:
    """``User-Generated Content``: a list of ``{prompt, comment, ...}`` objects (the hub) or strings."""
    if isinstance(value, str):
        import ast

        try:
            value = ast.literal_eval(value) if value.strip().startswith("[") else [value]
        except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
            raise DataError(path, "not a list of comments", row=row, field=COMMENTS) from None
    if not isinstance(value, list):
        raise DataError(path, f"expected a list of comments, got {type(value).__name__}", row=row, field=COMMENTS)
    out = []
    for j, item in enumerate(value):
        text = item.get("comment") if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise DataError(path, f"item {j}: expected a string or an object with a 'comment'", row=row, field=COMMENTS)
        if text.strip():
            out.append(text)
    return tuple(out)


def load_examples(path: str | os.PathLike, *, limit: int | None = None, skip_bad: bool = False,
                  dims: Sequence[dict] | None = None, data_dir: PathLike = None,
                  indifferent_neutral: bool = False) -> list[Example]:
    """A P-Soups file or full-schema AlignX rows (json list or jsonl) -> examples, one user each.

    ``user.direction`` = the row's ``Preference Direction`` (validated: 90 values in [0, 1]), else
    the parsed ``profile`` (needs ``dims``, default: the data directory's 90 dimensions), else None.
    A missing history field, or a history item without prompt/chosen/rejected, raises ``DataError``
    naming the file, the row and ``Pair-wise Comparative Feedback``; ``skip_bad`` drops such rows."""
    path = Path(path)
    records = load_alignx(path, skip_bad=skip_bad)
    out: list[Example] = []
    n_unknown = n_conflicts = 0
    for rec in records:
        ex = rec.extra
        row = int(ex["row"])
        try:
            if HISTORY not in ex:
                raise DataError(path, "missing: the user's history of prompt/chosen/rejected pairs",
                                row=row, field=HISTORY)
            history = _history(path, row, ex[HISTORY])
            comments = _comments(path, row, ex[COMMENTS]) if ex.get(COMMENTS) not in (None, "") else ()
        except DataError as exc:
            if not skip_bad:
                raise
            log.warning("skipping bad row: %s", exc)
            continue
        profile = ex.get("profile") if isinstance(ex.get("profile"), str) else None
        direction = tuple(ex[DIRECTION]) if DIRECTION in ex else None
        if direction is None and profile:
            parsed = parse_profile(profile, dims if dims is not None else load_dims(data_dir), indifferent_neutral)
            direction = parsed.direction
            n_unknown += len(parsed.unknown)
            n_conflicts += len(parsed.conflicts)
        demo = ex.get(DEMOGRAPHICS)
        user = User(history, comments, direction, profile, ex.get("ground_truth_persona"),
                    demo if isinstance(demo, str) else None)
        out.append(Example(rec.prompt, rec.chosen, rec.rejected, user, path.stem, row))
        if limit is not None and len(out) >= limit:
            break
    if n_unknown or n_conflicts:
        log.warning("%s: %d profile item(s) named no pole (ignored), %d dimension(s) listed with both poles (0.5)",
                    path, n_unknown, n_conflicts)
    return out


def load_dims(data_dir: PathLike = None) -> list[dict]:
    """The 90 preference dimensions (``index, positive, negative``), cached per data directory."""
    from alignx.personal.prompts import load_dims as _load

    return _load(data_dir)


def psoups_files(data_dir: PathLike = None) -> dict[str, Path]:
    """``{file stem: path}`` of the P-Soups files, sorted by name."""
    folder = resolve_data_dir(data_dir) / FILES["psoups"]
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        raise MissingFile(f"no P-Soups files (*.json) in {folder}")
    return {p.stem: p for p in files}


def split_by_prompt(examples: Sequence[Example], seed: int = 0,
                    train_share: float = 0.5) -> tuple[list[Example], list[Example]]:
    """Split by prompt, per source file: its distinct prompts (first-appearance order) are shuffled
    with ``random.Random(seed)`` and the first round(train_share * n_prompts) go to training; every
    row follows its prompt, so no prompt is in both halves. Row order is kept within each half."""
    if not 0 < train_share < 1:
        raise InvalidInput(f"train_share must be in (0, 1), got {train_share}")
    train_prompts: set[tuple[str, str]] = set()
    for source in dict.fromkeys(ex.source for ex in examples):
        prompts = list(dict.fromkeys(ex.prompt for ex in examples if ex.source == source))
        random.Random(seed).shuffle(prompts)
        k = min(max(round(train_share * len(prompts)), 1), len(prompts) - 1) if len(prompts) > 1 else len(prompts)
        train_prompts.update((source, p) for p in prompts[:k])
    train = [ex for ex in examples if (ex.source, ex.prompt) in train_prompts]
    held = [ex for ex in examples if (ex.source, ex.prompt) not in train_prompts]
    return train, held


def load_psoups(data_dir: PathLike = None, seed: int = 0,
                train_share: float = 0.5) -> dict[str, tuple[list[Example], list[Example]]]:
    """``{file stem: (train, eval)}``, each file split by prompt with ``split_by_prompt``."""
    dims = load_dims(data_dir)
    return {name: split_by_prompt(load_examples(path, dims=dims), seed, train_share)
            for name, path in psoups_files(data_dir).items()}


def full_schema_records(data_dir: PathLike = None, n: int = 8, seed: int = 0) -> list[dict]:
    """``n`` AlignX full-schema rows built from the P-Soups files (for tests of the full loader).

    Drawn alternately from the files (seeded sample of rows). ``Preference Direction`` = the parsed
    profile; ``User-Generated Content`` = the user's preferred history answers as their comments
    (``{prompt, comment, Preference Direction}``, the hub's shape; real AlignX comments are the
    user's Reddit comments); ``Demographic Information`` = a sentence naming the profile."""
    if n < 1:
        raise InvalidInput(f"n must be >= 1, got {n}")
    dims = load_dims(data_dir)
    files = psoups_files(data_dir)
    rng = random.Random(seed)
    pools = []
    for path in files.values():
        rows = json.loads(path.read_text(encoding="utf-8-sig"))
        pools.append(rng.sample(rows, min(len(rows), n)))
    out = []
    for i in range(n):
        pool = pools[i % len(pools)]
        if i // len(pools) >= len(pool):
            break
        r = pool[i // len(pools)]
        direction = list(profile_to_direction(r["profile"], dims))
        history = [{"prompt": h["prompt"], "chosen": h["chosen"], "rejected": h["rejected"], DIRECTION: direction}
                   for h in r[HISTORY]]
        out.append({
            "prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"],
            DIRECTION: direction,
            DEMOGRAPHICS: f"A user with these traits and interests: {r['profile']}.",
            COMMENTS: [{"prompt": h["prompt"], "comment": h["chosen"], DIRECTION: direction} for h in r[HISTORY]],
            HISTORY: history,
        })
    return out


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def load_alignx_hub(split: str = "train", limit: int | None = None, repo_id: str = HUB_ID) -> list[Example]:
    """The full AlignX dataset from the hub (``datasets.load_dataset(repo_id, split=split)``, streamed
    when ``limit`` is set), validated like a local file. Offline it raises ``AlignXRuntimeError``."""
    hint = (f"the full AlignX dataset ({repo_id}) is hub-only; offline, use the P-Soups files "
            f"(load_psoups / load_examples on <data-dir>/{FILES['psoups']}/*.json) or a local "
            f"full-schema json/jsonl file with load_examples")
    if _offline():
        raise AlignXRuntimeError(f"HF_HUB_OFFLINE is set: {hint}")
    try:
        from itertools import islice

        from datasets import load_dataset

        ds = load_dataset(repo_id, split=split, streaming=limit is not None)
        rows = list(islice(ds, limit)) if limit is not None else list(ds)
    except Exception as exc:  # noqa: BLE001 - one clear message instead of a deep traceback
        raise AlignXRuntimeError(f"could not load {repo_id!r} ({type(exc).__name__}: {exc}); {hint}") from None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{repo_id.replace('/', '__')}-{split}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
        examples = load_examples(path)
    return [Example(e.prompt, e.chosen, e.rejected, e.user, f"hub:{repo_id}:{split}", e.row) for e in examples]
