"""AlignX Studio: align one language model on several objectives at once.

The public face (imported lazily, so ``import alignx`` stays light):

- ``Studio``: a base model, its experts, the MoCaE router and the objectives they serve;
- ``load_model``: a model spec (offline default, ``tiny-random``, a folder or a hub id) -> model;
- ``Sampling``: validated decoding settings; ``Policy``: one way to answer prompts;
- ``methods``: the registry of method families (``methods.modes(studio)``, ``methods.policy(...)``);
- ``hooks``: named hook points (``hooks.capture``, ``hooks.intervene``);
- ``run_suite``: the evaluation harness (H3Fusion protocol);
- ``AlignXError``: the base of every error the library raises on purpose.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Studio": ("alignx.studio", "Studio"),
    "load_model": ("alignx.models", "load_model"),
    "Sampling": ("alignx.generation", "Sampling"),
    "Policy": ("alignx.policy", "Policy"),
    "run_suite": ("alignx.eval.runner", "run_suite"),
    "AlignXError": ("alignx.errors", "AlignXError"),
    "methods": ("alignx.methods", None),
    "hooks": ("alignx.hooks", None),
    "errors": ("alignx.errors", None),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'alignx' has no attribute {name!r}; available: {', '.join(__all__)}")
    module, attr = _EXPORTS[name]
    value = importlib.import_module(module)
    return value if attr is None else getattr(value, attr)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
