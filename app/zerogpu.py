"""ZeroGPU on Hugging Face Spaces: the events that run the model execute inside ``spaces.GPU``
when the ``spaces`` package is importable (Spaces install it; elsewhere it is usually absent and
nothing changes: no hard dependency).

A ZeroGPU Space holds a GPU only while a ``@spaces.GPU`` function runs, so every event of the
shared model queue (``AppContext.model_events``: generate, compare, route, evaluate, interpret,
personalize, load / train an expert) is wrapped once the page is built (``wrap_model_events``);
events created later inside a ``gr.render`` wrap their function with ``gpu`` themselves. Outside
a ZeroGPU Space, ``spaces.GPU`` returns the function as it is. ``ALIGNX_GPU_SECONDS`` (default
120) is the longest GPU slice one call asks for.
"""
from __future__ import annotations

import os
from typing import Callable

try:
    import spaces
except ImportError:
    spaces = None

GPU_SECONDS = int(os.environ.get("ALIGNX_GPU_SECONDS") or 120)
_MARK = "__alignx_gpu__"


def gpu(fn: Callable) -> Callable:
    """``spaces.GPU(duration=GPU_SECONDS)(fn)`` when ``spaces`` is importable (once), else ``fn``."""
    if spaces is None or fn is None or getattr(fn, _MARK, False):
        return fn
    wrapped = spaces.GPU(duration=GPU_SECONDS)(fn)
    try:
        setattr(wrapped, _MARK, True)
    except (AttributeError, TypeError):     # a wrapper that takes no attributes: it is still wrapped once here
        pass
    return wrapped


def wrap_model_events(blocks, queue_id: str) -> int:
    """Wrap the function of every event of ``blocks`` in the queue ``queue_id`` with ``gpu``;
    returns how many were wrapped (0 without ``spaces``)."""
    if spaces is None:
        return 0
    n = 0
    for dep in blocks.fns.values():
        if dep.concurrency_id == queue_id and dep.fn is not None and not getattr(dep.fn, _MARK, False):
            dep.fn = gpu(dep.fn)
            n += 1
    return n
