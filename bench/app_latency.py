"""App latency: cold start of ``python app.py`` to a served page, and time to the first token.

    .venv/bin/python bench/app_latency.py [--model smollm2-135m-instruct] [--repeats 3]

Each repeat starts a fresh process (model already converted and cached on disk, so "cold"
means a new interpreter: imports + model load + UI build + server start), polls ``GET /``
until it answers 200, then asks ``/generate`` for a greedy answer through gradio_client and
times the first streamed update and the whole answer. Prints one line per repeat and the
median. The machine's load changes these numbers a lot: report the load with them.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_served(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200 and b"<html" in r.read(2048).lower():
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} not served after {timeout} s")


def one_run(model: str, prompt: str, max_new_tokens: int, timeout: float) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    with tempfile.TemporaryDirectory() as tmp:
        log: list[str] = []
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "app.py", "--model", model, "--port", str(port),
                                 "--votes-db", str(Path(tmp) / "votes.sqlite")],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        reader = threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True)
        reader.start()
        try:
            wait_served(url, proc, timeout)
            served = time.perf_counter() - t0
            from gradio_client import Client

            client = Client(url, verbose=False)
            t1 = time.perf_counter()
            job = client.submit(prompt, "base", max_new_tokens, 0.0, 1.0, api_name="/generate")
            first = None
            while not job.done():
                if first is None and job.outputs():
                    first = time.perf_counter() - t1
                time.sleep(0.01)
            answer = job.result()
            total = time.perf_counter() - t1
            first = first if first is not None else total
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            reader.join(timeout=5)
    load = next((float(m.group(1)) for line in log if (m := re.search(r"loaded .* in ([\d.]+) s", line))), None)
    return {"served_s": round(served, 2), "model_load_s": load, "first_token_s": round(first, 3),
            "answer_s": round(total, 2), "answer_chars": len(answer)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--prompt", default="What is the capital of France?")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--timeout", type=float, default=300.0)
    args = p.parse_args()
    print(f"model {args.model}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    runs = []
    for i in range(args.repeats):
        runs.append(one_run(args.model, args.prompt, args.max_new_tokens, args.timeout))
        print(f"run {i + 1}: " + json.dumps(runs[-1]), flush=True)
    for key in ("served_s", "first_token_s", "answer_s"):
        print(f"median {key}: {statistics.median(r[key] for r in runs):.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
