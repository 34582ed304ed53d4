"""``ROLES.json``: which data files are evaluation prompts, and which are training sources.

``eval_records(data_dir, roles)`` reads the prompts of every file whose role is in ``roles``
(default ``eval``) through the loaders of ``alignx.data.registry``, and the eval half of every
``split:`` file. A file whose role asks for it but that no reader knows raises ``InvalidInput``
(so a new evaluation file is never skipped silently: register a reader for it). An unknown role
raises too. The ``split:`` files:

* TruthfulQA CSVs (v1 and the 2025 revision): first half train, second half eval, file order;
* TruthfulQA ``mc_task.json`` files: an item is eval unless its question (stripped: one CSV
  question ends in a space) is in the first half of the CSV beside it, as ``split_truthfulqa_mc``
  assigns them; an item in neither half counts as eval;
* P-Soups (``split: see DATA.md``): exempt here; ``alignx.personal.data.split_by_prompt``
  splits it by prompt and ``tests/test_decontam.py`` checks its training half against the index.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from alignx.data.records import AlignRecord, DataError
from alignx.errors import InvalidInput, MissingFile

PathLike = str | os.PathLike | None
PLAIN_ROLES = ("train", "eval", "judge-train", "judge-eval", "schema")
EXEMPT_SPLITS = {"alignx/P-Soups/friendly_unfriendly.json": "alignx.personal.data.split_by_prompt",
                 "alignx/P-Soups/student_phd.json": "alignx.personal.data.split_by_prompt"}


def roles_file(root: Path) -> Path:
    path = Path(root) / "ROLES.json"
    if not path.exists():
        raise MissingFile(f"{path} is missing: the data directory must map every file to its role "
                          f"(train / eval / ...), see ../shared/data/DATA.md")
    return path


def read_roles(data_dir: PathLike = None) -> dict[str, str]:
    """``{file relative to the data directory: role}``, each role checked."""
    from alignx.data.paths import resolve_data_dir
    from alignx.data.readers import read_json

    path = roles_file(resolve_data_dir(data_dir))
    raw = read_json(path)
    if not isinstance(raw, dict) or not raw:
        raise DataError(path, "expected a JSON object file -> {role, sha256}")
    out = {}
    for rel, info in raw.items():
        role = info.get("role") if isinstance(info, dict) else None
        if not isinstance(role, str):
            raise DataError(path, "expected an object with a string 'role'", field=rel)
        if role not in PLAIN_ROLES and not role.startswith("split:"):
            raise DataError(path, f"unknown role {role!r}; known: {', '.join(PLAIN_ROLES)}, split: ...", field=rel)
        out[rel] = role
    return out


def _tqa_csv_half(name: str, half: int) -> Callable[[Path], list[AlignRecord]]:
    def read(root: Path) -> list[AlignRecord]:
        from alignx.data.registry import load
        from alignx.data.splits import split_half

        return split_half(load(name, root))[half]
    return read


def _tqa_mc_eval(mc_rel: str, csv_name: str) -> Callable[[Path], list[AlignRecord]]:
    def read(root: Path) -> list[AlignRecord]:
        from alignx.data.loaders import load_truthfulqa_mc
        from alignx.data.registry import load
        from alignx.data.splits import split_half

        train_q = {r.prompt.strip() for r in split_half(load(csv_name, root))[0]}
        return [AlignRecord("honest", m["question"], source=mc_rel, extra={"row": i})
                for i, m in enumerate(load_truthfulqa_mc(root / mc_rel)) if m["question"].strip() not in train_q]
    return read


SPLIT_EVAL = {
    "truthfulqa/v1/TruthfulQA.csv": _tqa_csv_half("truthfulqa", 1),
    "truthfulqa/TruthfulQA.csv": _tqa_csv_half("truthfulqa_2025", 1),
    "truthfulqa/v1/mc_task.json": _tqa_mc_eval("truthfulqa/v1/mc_task.json", "truthfulqa"),
    "truthfulqa/mc_task.json": _tqa_mc_eval("truthfulqa/mc_task.json", "truthfulqa_2025"),
}
SPLIT_TRAIN = {"truthfulqa/v1/TruthfulQA.csv": _tqa_csv_half("truthfulqa", 0),
               "truthfulqa/TruthfulQA.csv": _tqa_csv_half("truthfulqa_2025", 0)}


def eval_records(data_dir: PathLike = None, roles: tuple[str, ...] = ("eval",)) -> dict[str, list[AlignRecord]]:
    """``{"file" or "file (eval half)": records}`` for every evaluation file; read strictly (a bad
    row raises: an evaluation prompt must never be dropped from the index)."""
    from alignx.data.paths import resolve_data_dir
    from alignx.data.registry import load, names_for_file

    root = resolve_data_dir(data_dir)
    out: dict[str, list[AlignRecord]] = {}
    for rel, role in sorted(read_roles(root).items()):
        if role.startswith("split:"):
            if rel in EXEMPT_SPLITS:
                continue
            if rel not in SPLIT_EVAL:
                raise InvalidInput(f"ROLES.json: {rel} has role {role!r} but alignx.data.roles.SPLIT_EVAL has no "
                                   f"reader for its evaluation half: add one (it would be skipped silently)")
            out[f"{rel} (eval half)"] = SPLIT_EVAL[rel](root)
        elif role in roles:
            names = names_for_file(rel)
            if not names:
                raise InvalidInput(f"ROLES.json: {rel} has role {role!r} but no reader in alignx.data.registry "
                                   f"reads it: register one (it would be skipped silently)")
            if not (root / rel).exists():
                raise MissingFile(f"{root / rel} is listed in ROLES.json but missing")
            out[rel] = [r for n in names for r in load(n, root)]
    return out


def training_sources(data_dir: PathLike = None) -> dict[str, Callable[[], list[AlignRecord]]]:
    """``{source name: loader}`` of every training file with a reader (train role; the train half
    of the split CSVs), for the decontamination table; Alpaca-style files skip their bad rows."""
    from alignx.data.paths import resolve_data_dir
    from alignx.data.registry import load, names_for_file

    root = resolve_data_dir(data_dir)
    out: dict[str, Callable[[], list[AlignRecord]]] = {}
    for rel, role in sorted(read_roles(root).items()):
        if role == "train":
            for n in names_for_file(rel):
                out[n] = lambda n=n: load(n, root, skip_bad=True)
        elif rel in SPLIT_TRAIN:
            out[f"{rel} (train half)"] = lambda rel=rel: SPLIT_TRAIN[rel](root)
    return out

