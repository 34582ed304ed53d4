"""bench/load.py on a few users: the same code path as the 20-user bench (the app on the tiny studio
in a subprocess, gradio_client users in threads, two waves), asserting its correctness checks
(answered, queue order, session isolation, repeatable answers), not its timings or memory bound."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_bench():
    """``bench/load.py`` as a module (registered first: its dataclasses look their module up)."""
    if "alignx_bench_load" not in sys.modules:
        spec = importlib.util.spec_from_file_location("alignx_bench_load", REPO / "bench" / "load.py")
        sys.modules[spec.name] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules["alignx_bench_load"]


@pytest.mark.slow
def test_a_few_users_are_all_answered_in_queue_order(capsys):
    bench = load_bench()
    cfg = bench.LoadConfig(users=3, rounds=1, concurrency=1, max_new_tokens=6, timeout=120, deadline=600,
                           probe_sessions=4)
    summary = bench.run(cfg, say=lambda *_: None)
    bench.report(summary)
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith('{"bench":"load"')
    assert summary["requests"] == 4 + 2 * 3 * 4 and summary["answered"] == summary["requests"], summary["errors"]
    for check in ("answered", "queue_order", "sessions", "repeatable"):
        assert summary["checks"][check], (check, summary)
    order = summary["queue_order"]
    # every /generate, /compare and /route went through the model queue: 1 + 3 per user and wave, + 3 warm-up
    assert order["requests"] == 1 + 3 + 2 * 3 * 3 and order["left_in_arrival_order"] and order["start_inversions"] == 0
    assert set(summary["modes"]) >= {"base", "expert:helpful", "mocae-logit", "negotiax"}
    memory = summary["memory_mib"]
    assert memory["samples"] > 0 and memory["peak_wave2"] >= memory["after_warmup"] > 0
    assert summary["session_cost"]["new_sessions"] == 4 and summary["session_cost"]["failed"] == 0
    assert summary["session_cost"]["state_session_capacity"] == 512


def test_queue_order_check_catches_a_request_that_jumped_the_queue():
    bench = load_bench()
    arrivals = [{"event_id": e, "function": f} for e, f in
                (("a", "generate"), ("b", "recalibrate"), ("c", "compare"), ("d", "route"), ("e", "generate"))]
    journal = {"model_endpoints": ["generate", "compare", "route"], "arrivals": arrivals,
               "dequeued": ["a", "b", "c", "d", "e"],
               "starts": [{"event_id": e, "t": t} for e, t in (("a", 1.0), ("c", 2.0), ("d", 3.0), ("e", 4.0))]}
    fifo = bench.queue_order(journal, concurrency=1)
    assert fifo["ok"] and fifo["requests"] == 4 and fifo["start_inversions"] == 0 and fifo["left_in_arrival_order"]
    journal["starts"][2]["t"] = 5.0                                    # d's function started after e's
    late = bench.queue_order(journal, concurrency=1)
    assert not late["ok"] and late["start_inversions"] == 1 and late["start_max_displacement"] == 1
    assert bench.queue_order(journal, concurrency=2)["ok"]             # two run at once: starts may swap
    journal["dequeued"] = ["a", "b", "d", "c", "e"]                    # d left the queue before c
    jumped = bench.queue_order(journal, concurrency=2)
    assert not jumped["ok"] and not jumped["left_in_arrival_order"]
    journal["dequeued"] = ["a", "b", "c", "d", "e"]
    journal["starts"].pop()                                            # e never started
    assert not bench.queue_order(journal, concurrency=2)["ok"]


@pytest.mark.parametrize("bad", [dict(users=0), dict(users=65), dict(rounds=0), dict(concurrency=0), dict(timeout=0),
                                 dict(probe_sessions=501), dict(waves=1), dict(waves=7)])
def test_the_bench_is_bounded(bad):
    with pytest.raises(ValueError):
        load_bench().LoadConfig(**bad)


def test_the_app_keeps_a_bounded_number_of_sessions():
    """Each session costs memory (gradio copies the page's component config per session; the bench
    measures it): ``app.ui.launch`` keeps ``MAX_SESSIONS`` of them, not gradio's default 10000."""
    from app.tabs.routing_panel import MAX_SESSIONS as ROUTES
    from app.ui import MAX_SESSIONS, launch

    class Demo:
        def launch(self, **kwargs):
            self.kwargs = kwargs

    demo = Demo()
    launch(demo, server_name="127.0.0.1")
    assert demo.kwargs["state_session_capacity"] == MAX_SESSIONS == ROUTES < 10000
    launch(demo, state_session_capacity=7)
    assert demo.kwargs["state_session_capacity"] == 7


def test_limit_malloc_caps_glibc_arenas_unless_the_environment_chose(monkeypatch):
    import platform

    from app.memory import limit_malloc

    for var in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_"):
        monkeypatch.delenv(var, raising=False)
    assert limit_malloc() is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc() is False
