"""Run a generation in one dedicated thread and stream its progress to a gradio callback.

Gradio advances a generator callback with one ``next()`` per update, each on whichever worker
thread is free. A model stream holds thread-affine state across tokens (a policy's lock, owned
by the thread that took it), so here one thread owns the whole generation and the callback only
reads its progress. The reader yields the newest item each time (updates coalesce when the
browser is slower than the model); when the reader is closed early (Stop, a cancelled request,
a closed tab) it sets the stop signal and waits for the thread to end.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator, TypeVar

import gradio as gr

from alignx.errors import AlignXError

T = TypeVar("T")
_DONE = object()


def iterate_in_thread(make: Callable[[], Iterator[T]], stop: threading.Event,
                      name: str = "alignx-generation", join_timeout: float = 60.0) -> Iterator[T]:
    """Iterate ``make()`` in a new thread; yield its newest item whenever one arrived.

    An exception in the thread is raised here (the library's own ``AlignXError`` as a ``gr.Error``,
    so the page and API clients see its message). ``stop`` must make the iterator end soon."""
    items: queue.Queue = queue.Queue()

    def work() -> None:
        try:
            for item in make():
                items.put((item, None))
        except BaseException as exc:   # noqa: BLE001 - handed to the reader, raised there
            items.put((_DONE, exc))
        else:
            items.put((_DONE, None))

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        while True:
            newest, done, error = _DONE, False, None
            item, exc = items.get()
            while True:
                if item is _DONE:
                    done, error = True, exc
                else:
                    newest = item
                try:
                    item, exc = items.get_nowait()
                except queue.Empty:
                    break
            if newest is not _DONE:
                yield newest
            if done:
                if isinstance(error, AlignXError):     # bad input found while generating: the user's message
                    raise gr.Error(str(error)) from None
                if error is not None:
                    raise error
                return
    finally:
        if thread.is_alive():
            stop.set()
            thread.join(join_timeout)
