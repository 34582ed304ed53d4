"""Load: concurrent gradio_client users against the app, served on 127.0.0.1 in a subprocess.

    .venv/bin/python bench/load.py                                  # tiny studio, 20 users, --concurrency 1
    .venv/bin/python bench/load.py --model default --concurrency 2 --rounds 1 --max-new-tokens 8

The server (``bench/load_server.py``) is the app as ``app.py`` builds it (``app.ui.build_demo`` on
a Studio: ``--model tiny`` = the tiny random model with three random experts, a synthetic router
(``tests/tiny_studio.py``) and a NegotiaX circuit trained 2 steps; ``--model default`` =
SmolLM2-135M-Instruct with the shipped experts, router and circuits), started in its own process
with ``--concurrency`` model requests at once.
A warm-up user runs one round alone, then ``--waves`` identical waves (default 2): ``--users``
threads, each with its own ``gradio_client.Client`` (its own session, opened before wave 1 and
kept), run ``--rounds`` rounds of four requests: ``/route`` a prompt, ``/recalibrate`` its route,
``/generate`` it in one mode (greedy), ``/compare`` it in every mode (greedy); odd users take the
four in another order. Every later wave is the same users sending the same requests again. At the
end ``--probe-sessions`` new sessions make one cheap call each, to measure what a session costs.
Bounded: users, rounds, waves and probe sessions are capped, every request waits at most
``--timeout`` s, the whole run at most ``--deadline`` s.

Checks (each one is true or false in the last line, a JSON object; exit status 1 if any is false):

* ``answered``: every request returned a well-formed answer, none raised (``errors`` lists them).
* ``queue_order``: the model queue is first in, first out. The server records (``load_server.py``)
  the order in which gradio's queue received the requests (``Queue.event_analytics``, insertion
  order), the order in which they left it (a wrapper on ``Queue.get_events``) and when the app's
  function started running (a wrapper on ``/generate``, ``/compare``, ``/route``: the three
  endpoints that share the one model queue). Every request that arrived must have left the queue
  and started, in the order it arrived; with ``--concurrency 1`` the functions must also start in
  arrival order (with c > 1, up to c requests run at once and a function's start can lag behind
  quicker requests in the other slots: the start inversions are reported, not checked).
* ``sessions``: every ``/recalibrate`` answered for the prompt its own session routed last.
* ``repeatable``: the last wave repeats wave 1's requests; every ``/generate`` and ``/compare``
  answer is the same (greedy decoding: a difference means an answer depends on what else ran).
* ``memory``: the server's RSS (``/proc/PID/status`` VmRSS, sampled every 0.2 s) after the last
  wave is at most ``--max-growth-mib`` above its RSS after the wave before (the same sessions and
  requests again: growth would be a leak). New sessions cost memory of their own (gradio keeps a
  copy of the page's component config per session); the app keeps at most ``app.ui.MAX_SESSIONS``
  of them, so the session state is bounded by that times the measured cost per session.

Prints latencies per endpoint (client side: submit to final answer), the RSS figures, the checks.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERVER = Path(__file__).resolve().with_name("load_server.py")
TOPICS = ("How do I bake bread?", "Is the Earth flat?", "How do I pick a lock?", "Give three tips for sleep.",
          "What is photosynthesis?", "Can you see the Great Wall from space?", "Write a haiku about rain.")
MAX_USERS, MAX_ROUNDS, MAX_WAVES, MAX_PROBE = 64, 50, 6, 500


@dataclass(frozen=True)
class LoadConfig:
    model: str = "tiny"               # tiny | default | any model spec app.py takes
    users: int = 20
    rounds: int = 3                   # rounds per user per wave (4 requests each)
    waves: int = 2                    # identical waves (>= 2): memory must not grow over the last one
    concurrency: int = 1
    max_new_tokens: int = 16
    timeout: float = 180.0            # seconds per request
    deadline: float = 900.0           # seconds for the whole run
    max_growth_mib: float = 32.0      # allowed RSS growth over the last wave
    probe_sessions: int = 40          # new sessions opened at the end to measure the memory one costs
    experts_dir: str | None = None    # default: the tiny studio (model tiny) or the shipped experts

    def __post_init__(self) -> None:
        if not (1 <= self.users <= MAX_USERS and 1 <= self.rounds <= MAX_ROUNDS and 2 <= self.waves <= MAX_WAVES
                and self.concurrency >= 1 and 0 <= self.probe_sessions <= MAX_PROBE):
            raise ValueError(f"users in 1..{MAX_USERS}, rounds in 1..{MAX_ROUNDS}, waves in 2..{MAX_WAVES}, "
                             f"concurrency >= 1, probe_sessions in 0..{MAX_PROBE}")
        if not (self.timeout > 0 and self.deadline > 0 and self.max_new_tokens >= 1):
            raise ValueError("timeout, deadline and max_new_tokens must be positive")


@dataclass
class Request:
    user: int
    round: int
    op: str                           # route | recalibrate | generate | compare
    seconds: float = 0.0
    answer: object = None
    error: str | None = None


@dataclass
class Wave:
    name: str
    requests: list[Request] = field(default_factory=list)
    wall_s: float = 0.0


# --- the server --------------------------------------------------------------------------------
class Server:
    """``load_server.py`` in a subprocess: started, asked for its journal over stdin, stopped."""

    def __init__(self, cfg: LoadConfig, workdir: Path, start_timeout: float = 300.0):
        env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
                   TOKENIZERS_PARALLELISM="false")
        cmd = [sys.executable, str(SERVER), "--model", cfg.model, "--concurrency", str(cfg.concurrency),
               "--workdir", str(workdir)] + (["--experts-dir", cfg.experts_dir] if cfg.experts_dir else [])
        self.log = workdir / "server.log"
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log.open("w"), text=True, bufsize=1)
        self.url = self._expect("READY", start_timeout)

    def _expect(self, word: str, timeout: float) -> str:
        """The rest of the server's next stdout line that starts with ``word`` (bounded wait)."""
        result: list[str] = []

        def read() -> None:
            for line in self.proc.stdout:
                if line.startswith(word + " "):
                    result.append(line[len(word) + 1:].strip())
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if not result:
            self.stop()
            raise RuntimeError(f"the server gave no {word} line in {timeout:.0f} s; its log:\n"
                               + self.log.read_text()[-3000:])
        return result[0]

    def journal(self) -> dict:
        self.proc.stdin.write("journal\n")
        self.proc.stdin.flush()
        return json.loads(Path(self._expect("JOURNAL", 60)).read_text())

    def rss_kib(self) -> int | None:
        try:
            with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as f:
                return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration, ValueError):
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=30)


class MemorySampler:
    """The server's RSS every ``period`` seconds in a thread, tagged with the current phase."""

    def __init__(self, server: Server, period: float = 0.2):
        self.server, self.period, self.phase = server, period, "idle"
        self.samples: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self.server.rss_kib()
            if rss is not None:
                self.samples.append((self.phase, rss))
            self._stop.wait(self.period)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def peak_mib(self, phase: str) -> float | None:
        values = [r for p, r in self.samples if p == phase]
        return round(max(values) / 1024, 1) if values else None


# --- the users ---------------------------------------------------------------------------------
def user_ops(user: int) -> tuple[str, ...]:
    """Even users route first, odd users generate first; recalibrate always follows a route."""
    return ("route", "recalibrate", "generate", "compare") if user % 2 == 0 else \
           ("generate", "route", "compare", "recalibrate")


def prompt_for(user: int, rnd: int) -> str:
    return f"User {user}, question {rnd}: {TOPICS[(user + rnd) % len(TOPICS)]}"


def check_answer(op: str, answer, prompt: str, modes: list[str]) -> str | None:
    """Why ``answer`` is not a well-formed answer to ``op`` (None: it is)."""
    if op == "generate":
        ok = isinstance(answer, (tuple, list)) and len(answer) == 2 and all(isinstance(x, str) for x in answer)
        return None if ok else f"/generate returned {answer!r:.200}"
    if op == "compare":
        ok = isinstance(answer, dict) and sorted(answer) == sorted(modes) and all(isinstance(v, str)
                                                                                 for v in answer.values())
        return None if ok else f"/compare returned {answer!r:.200}"
    if not (isinstance(answer, dict) and isinstance(answer.get("probabilities"), dict)):
        return f"/{op} returned {answer!r:.200}"
    total = sum(answer["probabilities"].values())
    if abs(total - 1.0) > 1e-3:
        return f"/{op} probabilities sum to {total}"
    if op == "recalibrate" and answer.get("prompt") != prompt:
        return f"SESSION: /recalibrate answered for {answer.get('prompt')!r}, this session routed {prompt!r}"
    return None


def connect(url: str, cfg: LoadConfig):
    """A ``gradio_client.Client`` (a new session), or the error text when it cannot connect."""
    from gradio_client import Client

    try:
        return Client(url, verbose=False, httpx_kwargs={"timeout": cfg.timeout})
    except Exception as exc:  # noqa: BLE001 - counted against every request of that user
        return f"no connection: {type(exc).__name__}: {str(exc)[:200]}"


def run_user(client, user: int, cfg: LoadConfig, modes: list[str], deadline: float) -> list[Request]:
    """One user's rounds, each request waiting for its answer before the next one."""
    out = []
    for rnd in range(cfg.rounds):
        prompt = prompt_for(user, rnd)
        for op in user_ops(user):
            req = Request(user, rnd, op)
            out.append(req)
            left = deadline - time.monotonic()
            if isinstance(client, str) or left <= 0:
                req.error = client if isinstance(client, str) else "not sent: the run's deadline passed"
                continue
            args = {"route": (prompt,), "recalibrate": (0.7, 0.3, 1.0 + 0.1 * (user % 3)),
                    "generate": (prompt, modes[(user + rnd) % len(modes)], cfg.max_new_tokens, 0.0, 1.0, 0),
                    "compare": (prompt, cfg.max_new_tokens, 0.0, 1.0, 0)}[op]
            t0 = time.perf_counter()
            try:
                req.answer = client.submit(*args, api_name=f"/{op}").result(timeout=min(cfg.timeout, left))
                req.error = check_answer(op, req.answer, prompt, modes)
            except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                req.error = f"{type(exc).__name__}: {str(exc)[:300]}"
            req.seconds = time.perf_counter() - t0
    return out


def run_wave(name: str, clients: list, cfg: LoadConfig, modes: list[str], deadline: float) -> Wave:
    """Every client at once, one thread each (client ``u`` is user ``u``)."""
    wave, t0 = Wave(name), time.perf_counter()
    with ThreadPoolExecutor(len(clients), thread_name_prefix=f"user-{name}") as pool:
        for requests in pool.map(lambda u: run_user(clients[u], u, cfg, modes, deadline), range(len(clients))):
            wave.requests += requests
    wave.wall_s = round(time.perf_counter() - t0, 2)
    return wave


def session_cost(server: Server, cfg: LoadConfig, n: int) -> dict:
    """RSS growth per new session: ``n`` new clients, one ``/leaderboard`` call each (gradio keeps
    a copy of the page's component config per session, up to the launch's state_session_capacity)."""
    before = server.rss_kib()
    failed = 0
    for _ in range(n):
        client = connect(server.url, cfg)
        try:
            client.predict(api_name="/leaderboard")
        except Exception:  # noqa: BLE001 - a str (no connection) or a failed call: counted
            failed += 1
    time.sleep(1.0)
    after = server.rss_kib()
    per = None if None in (before, after) or n == 0 else round((after - before) / n, 1)
    return {"new_sessions": n, "failed": failed, "kib_per_session": per}


# --- the checks ----------------------------------------------------------------------------------
def queue_order(journal: dict, concurrency: int) -> dict:
    """The model queue's arrival order against the order requests left it and the order their
    functions started (see the module docstring)."""
    endpoints = set(journal["model_endpoints"])
    arrived = [e["event_id"] for e in journal["arrivals"] if e["function"] in endpoints]
    model = set(arrived)
    left = [e for e in journal["dequeued"] if e in model]
    started = [s["event_id"] for s in sorted(journal["starts"], key=lambda s: s["t"])]
    missing = sorted(model ^ set(started)) + sorted(model ^ set(left))
    place = {e: i for i, e in enumerate(started)}
    displacement = [abs(place[e] - i) for i, e in enumerate(arrived) if e in place]
    rank = {e: i for i, e in enumerate(arrived)}
    inversions = sum(1 for a, b in zip(started, started[1:]) if rank.get(b, 0) < rank.get(a, 0))
    fifo = left == arrived
    starts_in_order = inversions == 0 if concurrency == 1 else True
    return {"requests": len(arrived), "missing": len(missing), "left_in_arrival_order": fifo,
            "start_inversions": inversions, "start_max_displacement": max(displacement, default=0),
            "ok": bool(arrived) and not missing and fifo and starts_in_order}


def diff(first, second) -> dict:
    """Where two answers to one request differ: per mode for /compare, else the texts."""
    if isinstance(first, dict) and isinstance(second, dict):
        return {"modes": {m: [first.get(m), second.get(m)] for m in sorted(set(first) | set(second))
                          if first.get(m) != second.get(m)}}
    return {"first": first, "last": second}


def latencies(requests: list[Request]) -> dict[str, dict[str, float]]:
    out = {}
    for op in ("route", "recalibrate", "generate", "compare"):
        s = sorted(r.seconds for r in requests if r.op == op and r.error is None)
        if s:
            out[op] = {"n": len(s), "p50_s": round(statistics.median(s), 3),
                       "p95_s": round(s[min(len(s) - 1, int(0.95 * len(s)))], 3), "max_s": round(s[-1], 3)}
    return out


def drive(server: Server, cfg: LoadConfig, deadline: float) -> dict:
    """Warm-up, the waves (the same users, sessions and requests each time), the session probe."""
    from gradio_client import Client

    modes = sorted(Client(server.url, verbose=False, httpx_kwargs={"timeout": cfg.timeout}).predict(
        prompt_for(0, 0), 1, 0.0, 1.0, 0, api_name="/compare"))
    with MemorySampler(server) as memory:
        waves = [run_wave("warm-up", [connect(server.url, cfg)], replace(cfg, rounds=1), modes, deadline)]
        rss = {"after_warmup": server.rss_kib()}
        clients = [connect(server.url, cfg) for _ in range(cfg.users)]   # not timed: fetches the API description
        for name in (f"wave{i}" for i in range(1, cfg.waves + 1)):
            memory.phase = name
            waves.append(run_wave(name, clients, cfg, modes, deadline))
            memory.phase = "idle"
            time.sleep(1.0)                                  # let the last replies' buffers go
            rss[f"after_{name}"] = server.rss_kib()
        probe = session_cost(server, cfg, cfg.probe_sessions)
    return {"modes": modes, "waves": waves, "rss": rss, "memory": memory, "probe": probe,
            "journal": server.journal()}


def run(cfg: LoadConfig, say=print) -> dict:
    """The whole bench; returns the summary (the JSON object of the last line)."""
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="alignx-load-") as tmp:
        server = Server(cfg, Path(tmp))
        try:
            say(f"serving {cfg.model} at {server.url} (pid {server.proc.pid}, concurrency {cfg.concurrency}); "
                f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
            got = drive(server, cfg, t_start + cfg.deadline)
        finally:
            server.stop()
    waves = got["waves"]
    requests = [r for w in waves for r in w.requests]
    errors = [f"{w.name} user {r.user} round {r.round} {r.op}: {r.error}" for w in waves
              for r in w.requests if r.error]
    w1, w2 = ({(r.user, r.round, r.op): r.answer for r in w.requests if r.op in ("generate", "compare")}
              for w in (waves[1], waves[-1]))
    differ = sorted(k for k in w1 if k in w2 and json.dumps(w1[k]) != json.dumps(w2[k]))
    shown = [{"user": u, "round": r, "op": op, **diff(w1[(u, r, op)], w2[(u, r, op)])} for u, r, op in differ[:5]]
    mib = {k: None if v is None else round(v / 1024, 1) for k, v in got["rss"].items()}
    a, b = mib[f"after_wave{cfg.waves - 1}"], mib[f"after_wave{cfg.waves}"]
    growth = None if None in (a, b) else round(b - a, 1)
    order = queue_order(got["journal"], cfg.concurrency)
    memory = got["memory"]
    checks = {"answered": not errors, "queue_order": order["ok"],
              "sessions": not any("SESSION" in e for e in errors),
              "repeatable": not differ and len(w1) == len(w2) > 0,
              "memory": growth is not None and growth <= cfg.max_growth_mib}
    return {
        "bench": "load", "config": asdict(cfg), "modes": got["modes"], "requests": len(requests),
        "answered": sum(r.error is None for r in requests), "errors": errors[:20], "n_errors": len(errors),
        "queue_order": order, "repeat_differences": shown, "n_repeat_differences": len(differ),
        "memory_mib": {**mib, **{f"peak_{w.name}": memory.peak_mib(w.name) for w in waves[1:]},
                       "growth_last_two_waves": growth, "allowed_growth": cfg.max_growth_mib,
                       "samples": len(memory.samples)},
        "session_cost": dict(got["probe"], state_session_capacity=got["journal"].get("state_session_capacity")),
        "latency": {w.name: latencies(w.requests) for w in waves[1:]},
        "wall_s": {w.name: w.wall_s for w in waves}, "total_s": round(time.monotonic() - t_start, 1),
        "load_average": round(os.getloadavg()[0], 2), "checks": checks, "ok": all(checks.values()),
    }


def report(summary: dict, say=print) -> None:
    cfg = summary["config"]
    say(f"{cfg['users']} users x {cfg['rounds']} rounds x 4 requests, {cfg['waves']} waves (+ a warm-up round): "
        f"{summary['answered']}/{summary['requests']} answered, {summary['n_errors']} errors")
    for e in summary["errors"]:
        say(f"  error: {e}")
    for wave, ops in summary["latency"].items():
        say(f"{wave} ({summary['wall_s'][wave]} s): " + "; ".join(
            f"{op} p50 {v['p50_s']} s, p95 {v['p95_s']} s" for op, v in ops.items()))
    o, m = summary["queue_order"], summary["memory_mib"]
    say(f"queue order: {o['requests']} model-queue requests, left the queue in arrival order: "
        f"{o['left_in_arrival_order']}; function starts out of arrival order: {o['start_inversions']} "
        f"(max {o['start_max_displacement']} places)")
    say(f"server RSS (MiB): after warm-up {m['after_warmup']}; " + "; ".join(
        f"wave {i} peak {m[f'peak_wave{i}']} / end {m[f'after_wave{i}']}" for i in range(1, cfg["waves"] + 1))
        + f"; growth over the last wave {m['growth_last_two_waves']} (allowed {m['allowed_growth']})")
    c = summary["session_cost"]
    say(f"a new session costs {c['kib_per_session']} KiB ({c['new_sessions']} opened); gradio keeps at most "
        f"{c['state_session_capacity']} sessions")
    say("checks: " + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in summary["checks"].items()))
    say(json.dumps(summary, separators=(",", ":")))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny", help="tiny (the tiny studio, default) | default (SmolLM2-135M-Instruct "
                                                   "with the shipped experts) | a model spec app.py takes")
    p.add_argument("--experts-dir", default=None, help="experts folder (default: the tiny studio / assets/experts)")
    d = LoadConfig()
    for name in ("users", "rounds", "waves", "concurrency", "max_new_tokens", "probe_sessions"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    for name in ("timeout", "deadline", "max_growth_mib"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name))
    args = p.parse_args(argv)
    try:
        cfg = LoadConfig(**vars(args))
    except ValueError as exc:
        p.error(str(exc))
    summary = run(cfg)
    report(summary)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
