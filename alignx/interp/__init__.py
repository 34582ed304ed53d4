"""Interpretability: where each objective lives in the model, and why a mode answered as it did.

- ``heads``: per-objective attention-head importance, E |dL_o / d xi_h| (Michel et al. 2019), and
  its check by exact ablation (``gradient_importance``, ``ablation_deltas``, ``ablated_heads``);
- ``attribution``: prompt-token attribution of a target text with captum (``LLMAttribution`` +
  ``FeatureAblation`` over words / segments, ``LayerIntegratedGradients`` over the embeddings),
  single-mode or contrastive between two modes;
- ``forgetting``: the modes x metrics change against the base from eval runs, with paired CIs,
  and the held-out loss shift per objective;
- ``blindspots``: confident-and-wrong routes, fusions worse than the best expert, items every mode fails;
- ``analyses``: the cached, JSON-ready versions the CLI (``python -m alignx interp``) and the app use.

Every analysis works on any registered mode, touches the model only through ``alignx.hooks``
(every hook removed on exit, exceptions included) and holds the model's lock while hooked.
No gradio here: the figures live in ``app/interp_plots.py``. Names load on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "rows": ("Row", "objective_rows", "harmful_prompts", "as_rows"),
    "heads": ("head_shape", "gradient_importance", "ablation_deltas", "ablated_heads", "masked_heads",
              "losses", "row_losses", "top_heads", "spearman"),
    "attribution": ("Attribution", "feature_ablation", "integrated_gradients", "split_prompt", "PolicyLM"),
    "forgetting": ("forgetting", "loss_shift", "paired_bootstrap", "load_runs"),
    "blindspots": ("blind_spots",),
    "analyses": ("heads_report", "attribute", "difference", "refusal_under_ablation"),
}
_ALIASES = {"heads_report": "heads"}
_EXPORTS = {name: mod for mod, names in _MODULES.items() for name in names}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"alignx.interp.{_EXPORTS[name]}")
        value = getattr(module, _ALIASES.get(name, name) if _EXPORTS[name] == "analyses" else name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'alignx.interp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
