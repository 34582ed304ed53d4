"""Every data source by name, loaded lazily (the lm-evaluation-harness task-registry pattern).

``load(name, data_dir=None, limit=None, skip_bad=False) -> list[AlignRecord]`` imports the
loader only when it is called; ``available()`` lists the names; an unknown name raises
``unknown data source 'x'; available: ...``. Each entry names its file relative to the data
directory, which is how ``alignx.data.decontam`` maps the files of ``ROLES.json`` to readers.

Why the loaders read files with ``alignx.data.readers`` and not ``datasets.load_dataset``:
measured here (``load_dataset("json", data_files=coconot_pref.jsonl)``) the first load takes
0.08 s but writes an Arrow copy of the file under the datasets cache (2.5 MB for two small
files), ``import datasets`` alone costs 1.3 s, the nested CatQA/HarmfulQA/SelfAware layouts and
the HH transcripts need custom parsing anyway, and a malformed row surfaces as a pyarrow error
without the row. The readers give ``DataError(file, message, row, field)`` and write nothing;
the records convert to a ``datasets.Dataset`` with ``alignx.data.to_dataset``.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignx.data.paths import FILES, resolve_data_dir
from alignx.data.records import AlignRecord
from alignx.errors import unknown

PathLike = str | os.PathLike | None


@dataclass(frozen=True)
class Source:
    """``target`` = "module:function" called as ``function(path, limit=, skip_bad=, **kwargs)``."""

    target: str
    file: str                                   # relative to the data directory (a key of ROLES.json)
    kwargs: dict[str, Any] = field(default_factory=dict)


_SAFE = "alignx.data.sources_safety"
_GEN = "alignx.data.sources_general"
_OLD = "alignx.data.loaders"
SAFETY_EVAL_SETS = ("I-Alpaca", "I-CoNa", "I-Controversial", "I-PhysicalSafetySafe", "I-PhysicalSafetyUnsafe")
ALPACA_EVAL_GENERATORS = ("text_davinci_003", "gpt4_1106_preview", "alpaca-7b", "example_outputs")

REGISTRY: dict[str, Source] = {
    # first wave (alignx.data.loaders)
    "alpaca": Source(f"{_OLD}:load_alpaca", FILES["alpaca"]),
    "safety_instructions": Source(f"{_OLD}:load_safety_instructions", FILES["safety_train"]),
    "beavertails": Source(f"{_OLD}:load_beavertails", FILES["beavertails"]),
    "truthfulqa": Source(f"{_OLD}:load_truthfulqa", FILES["truthfulqa_csv"]),
    "h3fusion_reference": Source(f"{_OLD}:load_model_outputs", FILES["h3fusion_reference"]),
    **{f"safety_eval:{n}": Source("alignx.data.registry:_safety_eval", f"{FILES['safety_eval']}/{n}.json")
       for n in SAFETY_EVAL_SETS},
    **{f"alpaca_eval:{g}": Source(f"{_OLD}:load_model_outputs",
                                  f"alpaca_eval/{g}{'' if g == 'example_outputs' else '_model_outputs'}.json")
       for g in ALPACA_EVAL_GENERATORS},
    **{f"psoups:{n}": Source(f"{_OLD}:load_alignx", f"{FILES['psoups']}/{n}.json")
       for n in ("friendly_unfriendly", "student_phd")},
    # second wave: safety (alignx.data.sources_safety)
    "xstest": Source(f"{_SAFE}:load_xstest", FILES["xstest"]),
    "coconot_pref": Source(f"{_SAFE}:load_coconot_pref", FILES["coconot_pref"]),
    "coconot_contrast": Source(f"{_SAFE}:load_coconot_contrast", FILES["coconot_contrast"]),
    "coconot_eval": Source(f"{_SAFE}:load_coconot_eval", FILES["coconot_eval"]),
    "oktest": Source(f"{_SAFE}:load_oktest", FILES["oktest"]),
    "pku_pairs": Source(f"{_SAFE}:load_pku_pairs", FILES["pku_pairs"]),
    "pku_labelled": Source(f"{_SAFE}:load_pku_labelled", FILES["pku_labelled"]),
    "beavertails_30k_test": Source(f"{_SAFE}:load_beavertails_30k_test", FILES["beavertails_30k_test"]),
    "do_not_answer": Source(f"{_SAFE}:load_do_not_answer", FILES["do_not_answer"]),
    "advbench": Source(f"{_SAFE}:load_advbench", FILES["advbench"]),
    "strongreject": Source(f"{_SAFE}:load_strongreject", FILES["strongreject"]),
    "tdc2023": Source(f"{_SAFE}:load_tdc2023", FILES["tdc2023"]),
    "harmbench_val": Source(f"{_SAFE}:load_harmbench_val", FILES["harmbench_val"]),
    "harmbench_test": Source(f"{_SAFE}:load_harmbench_test", FILES["harmbench_test"]),
    "catqa": Source(f"{_SAFE}:load_catqa", FILES["catqa"]),
    "dangerousqa": Source(f"{_SAFE}:load_dangerousqa", FILES["dangerousqa"]),
    "harmfulqa": Source(f"{_SAFE}:load_harmfulqa", FILES["harmfulqa"]),
    "simplesafetytests": Source(f"{_SAFE}:load_simplesafetytests", FILES["simplesafetytests"]),
    "alpaca_31k": Source(f"{_SAFE}:load_rd_alpaca", FILES["rd_alpaca"]),
    # second wave: helpful / honest / HH (alignx.data.sources_general)
    "hh_harmless": Source(f"{_GEN}:load_hh_harmless", FILES["hh_harmless"]),
    "hh_helpful": Source(f"{_GEN}:load_hh_helpful", FILES["hh_helpful"]),
    "lima": Source(f"{_GEN}:load_lima", FILES["lima"]),
    "gsm8k": Source(f"{_GEN}:load_gsm8k", FILES["gsm8k"]),
    "arena_hard": Source(f"{_GEN}:load_arena_hard", FILES["arena_hard"]),
    "selfaware": Source(f"{_GEN}:load_selfaware", FILES["selfaware"]),
    "simpleqa": Source(f"{_GEN}:load_simpleqa", FILES["simpleqa"]),
    "halueval": Source(f"{_GEN}:load_halueval", FILES["halueval"]),
    "truthfulqa_2025": Source(f"{_GEN}:load_truthfulqa_2025", FILES["truthfulqa_2025_csv"]),
}


def available() -> list[str]:
    """Every registered source name, sorted."""
    return sorted(REGISTRY)


def entry(name: str) -> Source:
    if name not in REGISTRY:
        raise unknown("data source", name, REGISTRY)
    return REGISTRY[name]


def names_for_file(rel_path: str) -> list[str]:
    """The registered sources that read the data-directory file ``rel_path``."""
    return [n for n, s in REGISTRY.items() if s.file == rel_path]


def load(name: str, data_dir: PathLike = None, limit: int | None = None, skip_bad: bool = False) -> list[AlignRecord]:
    """The records of source ``name`` from ``data_dir`` (default: ``resolve_data_dir``)."""
    src = entry(name)
    module, func = src.target.split(":")
    fn = getattr(importlib.import_module(module), func)
    return fn(resolve_data_dir(data_dir) / src.file, limit=limit, skip_bad=skip_bad, **src.kwargs)


def _safety_eval(path: str | Path, limit: int | None = None, skip_bad: bool = False) -> list[AlignRecord]:
    """``load_safety_eval`` by file (its rows are plain strings: a bad one always raises)."""
    from alignx.data.loaders import load_safety_eval

    return load_safety_eval(Path(path).stem, source=path, limit=limit)
