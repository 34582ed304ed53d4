"""Personalized alignment (AlignX-Family at small scale): users, ICA / PBA prompts, Alignment
Accuracy, and preference inference from a user's history.

- ``data``: ``Pair``, ``User``, ``Example``, ``load_examples``, ``load_psoups``, ``split_by_prompt``,
  ``parse_profile``, ``profile_to_direction``, ``full_schema_records``, ``load_alignx_hub``;
- ``prompts``: ``ica_prompt``, ``pba_prompt``, ``oracle_system``, ``plain_prompt``, ``discretize``,
  ``mean_direction``, ``profile_text``, ``load_dims``;
- ``metrics``: ``alignment_accuracy``, ``rewards``;
- ``infer``: ``pair_features``, ``DirectionProbe``, ``identify_persona``, ``persona_accuracy``,
  ``infer_profile``, ``run_inference``.

Names are imported on first use, so ``import alignx.personal`` loads none of the submodules.
"""
from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "data": ("Pair", "User", "Example", "ProfileParse", "load_examples", "load_psoups", "psoups_files",
             "split_by_prompt", "parse_profile", "profile_to_direction", "full_schema_records",
             "load_alignx_hub", "HUB_ID"),
    "prompts": ("ica_prompt", "pba_prompt", "oracle_system", "plain_prompt", "discretize", "mean_direction",
                "profile_text", "load_dims", "MAX_ITEMS", "MAX_CHARS"),
    "metrics": ("alignment_accuracy", "rewards", "item_scores"),
    "infer": ("pair_features", "DirectionProbe", "identify_persona", "persona_accuracy", "infer_profile", "run_inference",
              "r2_score"),
}
_EXPORTS = {name: mod for mod, names in _MODULES.items() for name in names}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"alignx.personal.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'alignx.personal' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
