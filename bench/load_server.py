"""The app for ``bench/load.py``: served on 127.0.0.1 like ``app.py`` serves it, plus a journal.

    python bench/load_server.py --model tiny|default|SPEC --concurrency N --workdir DIR [--experts-dir D]

Builds the page exactly as ``app.py`` does (``app.memory.limit_malloc``, then ``app.py``'s
``load_studio``, ``app.context.AppContext``, ``app.ui.build_demo`` and ``launch``; badges judge off,
votes and runs in DIR), on a free port, then prints ``READY <url>``. The journal: a wrapper on the
functions of the model queue's API endpoints (``/generate``, ``/compare``, ``/route``) notes each
call's gradio event id and the time its body starts; a wrapper on the queue's ``get_events`` notes
the event ids in the order they leave the queue; gradio's own queue notes when each event arrived
(``Queue.event_analytics``, in arrival order). On a ``journal`` line on stdin all three go to
``DIR/journal.json`` and ``JOURNAL <path>`` is printed; ``quit`` (or the end of stdin) closes the
server.
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import inspect
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MODEL_ENDPOINTS = ("generate", "compare", "route")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def studio_for(model: str, experts_dir: str | None, workdir: Path):
    """(Studio, notice) as app.py loads it; ``tiny`` builds the tiny studio in ``workdir`` first."""
    spec = importlib.util.spec_from_file_location("alignx_app_entry", REPO / "app.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    if model == "tiny":
        sys.path.insert(0, str(REPO / "tests"))
        from test_app_support import make_tiny_circuit     # a NegotiaX circuit trained 2 steps (mode negotiax)
        from tiny_studio import build                      # 3 random experts + a synthetic router, no data

        studio, notice = entry.load_studio("tiny-random", experts_dir or str(build(workdir / "experts")), "cpu")
        studio.extras["negotiax_dir"] = make_tiny_circuit(studio, workdir / "negotiax")
        return studio, notice
    return entry.load_studio("smollm2-135m-instruct" if model == "default" else model, experts_dir, "cpu")


class Journal:
    """Start times of the model queue's functions, by gradio event id."""

    def __init__(self) -> None:
        self.starts: list[dict] = []
        self.dequeued: list[str] = []
        self._lock = threading.Lock()

    def note(self, api_name: str) -> None:
        from gradio.context import LocalContext

        with self._lock:
            self.starts.append({"event_id": LocalContext.event_id.get(None), "function": api_name, "t": time.time()})

    def wrap(self, fn, api_name: str):
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def gen(*args, **kwargs):
                self.note(api_name)
                yield from fn(*args, **kwargs)
            return gen

        @functools.wraps(fn)
        def call(*args, **kwargs):
            self.note(api_name)
            return fn(*args, **kwargs)
        return call

    def install(self, demo) -> None:
        """Wraps the model queue's functions, and the queue's ``get_events`` (what leaves the
        queue, in order: the queue's own decision, before anything else can reorder it)."""
        queue, get_events = demo._queue, demo._queue.get_events

        def dequeue(*args, **kwargs):
            batch = get_events(*args, **kwargs)
            if batch:
                with self._lock:
                    self.dequeued.extend(e._id for e in batch[0])
            return batch

        queue.get_events = dequeue
        found = set()
        for block_fn in demo.fns.values():
            if block_fn.api_name in MODEL_ENDPOINTS and block_fn.fn is not None:
                block_fn.fn = self.wrap(block_fn.fn, block_fn.api_name)
                found.add(block_fn.api_name)
        if found != set(MODEL_ENDPOINTS):
            raise RuntimeError(f"endpoints {sorted(set(MODEL_ENDPOINTS) - found)} not found: a router is needed")

    def dump(self, demo, path: Path) -> None:
        from alignx.atomic import write_json

        arrivals = [{"event_id": k, "function": v.get("function"), "session": v.get("session_hash"),
                     "t": v.get("time"), "status": v.get("status")}
                    for k, v in list(demo._queue.event_analytics.items())]
        with self._lock:
            starts, dequeued = list(self.starts), list(self.dequeued)
        write_json(path, {"model_endpoints": list(MODEL_ENDPOINTS), "arrivals": arrivals, "dequeued": dequeued,
                          "starts": starts, "state_session_capacity": demo.state_holder.capacity})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--experts-dir", default=None)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--workdir", required=True)
    args = p.parse_args()
    workdir = Path(args.workdir)
    from app.memory import limit_malloc

    limit_malloc()                                         # as app.py does first
    from alignx.arena import VoteStore
    from app.context import AppContext
    from app.ui import build_demo, launch

    studio, notice = studio_for(args.model, args.experts_dir, workdir)
    ctx = AppContext(studio, VoteStore(workdir / "votes.sqlite"), concurrency=args.concurrency, notice=notice,
                     judge=None, runs_dir=workdir / "runs")
    demo = build_demo(ctx)
    journal = Journal()
    journal.install(demo)
    _, url, _ = launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                       share=False)
    print("READY", url.rstrip("/"), flush=True)
    for line in sys.stdin:
        if line.strip() == "journal":
            journal.dump(demo, workdir / "journal.json")
            print("JOURNAL", workdir / "journal.json", flush=True)
        elif line.strip() == "quit":
            break
    demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
