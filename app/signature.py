"""Callbacks whose parameters depend on the loaded objectives (one preference slider per expert).

Gradio reads a callback's parameters from ``inspect.signature`` and its type hints (to inject
``gr.Request`` and to describe API endpoints for ``gradio_client``), then calls it with
positional values. ``with_params`` gives a ``*args`` function a real signature (names, defaults,
annotations), so ``/recalibrate`` lists ``lambda1, lambda2, temperature, helpful, harmless,
honest`` for three experts and the right names for two or four.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence


def with_params(fn: Callable[..., Any], params: Sequence[tuple[str, type, Any]], doc: str = "",
                returns: Any = inspect.Signature.empty) -> Callable[..., Any]:
    """``fn(*values)`` presented as ``f(name_1: type_1 = default_1, ...)``; ``default`` may be
    ``inspect.Parameter.empty``. Gradio passes the values positionally, in this order."""
    names = [p[0] for p in params]

    def values(args, kwargs) -> list:
        out = list(args) + [None] * (len(names) - len(args))
        for k, v in kwargs.items():
            out[names.index(k)] = v
        for i, (name, _, default) in enumerate(params):
            if i >= len(args) and name not in kwargs and default is not inspect.Parameter.empty:
                out[i] = default
        return out

    if inspect.isgeneratorfunction(fn):        # gradio streams only what looks like a generator function
        def call(*args, **kwargs):
            yield from fn(*values(args, kwargs))
    else:
        def call(*args, **kwargs):
            return fn(*values(args, kwargs))

    call.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d, annotation=t) for n, t, d in params],
        return_annotation=returns)
    call.__annotations__ = {n: t for n, t, _ in params}
    if returns is not inspect.Signature.empty:
        call.__annotations__["return"] = returns
    call.__name__ = getattr(fn, "__name__", "callback")
    call.__doc__ = doc or fn.__doc__
    return call
