"""The library's own errors. Everything raised on purpose derives from ``AlignXError``.

The CLI prints one line for an ``AlignXError`` (bad input, a missing file, an unknown name) and
the full traceback for anything else (a shape bug, CUDA out of memory), so a real failure is
never hidden behind a one-line message. The subclasses also derive from the matching builtin
(``ValueError``, ``FileNotFoundError``, ``RuntimeError``), so ``except ValueError`` keeps working.
"""
from __future__ import annotations


class AlignXError(Exception):
    """Base of every error the library raises on purpose."""


class InvalidInput(AlignXError, ValueError):
    """A bad argument, setting, mode, name or value (the message says which and what is allowed)."""


class MissingFile(AlignXError, FileNotFoundError):
    """A file or folder the call needs is not there (the message names it and how to make it)."""


class AlignXRuntimeError(AlignXError, RuntimeError):
    """An expected failure while running (a model that cannot be loaded, a judge that cannot answer)."""


def unknown(kind: str, name: object, available) -> InvalidInput:
    """``unknown KIND 'name'; available: a, b, c`` (lm-evaluation-harness style)."""
    names = ", ".join(sorted(map(str, available))) or "none"
    return InvalidInput(f"unknown {kind} {name!r}; available: {names}")
