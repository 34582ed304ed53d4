"""One process against two: the same jobs (train-experts, train-mac, DPO, eval on the tiny random
model; ``tests/dist_worker.py``) run by ``python`` and by ``accelerate launch --multi_gpu
--num_processes 2`` (torchrun; gloo on a CPU), then compared.

    python bench/distributed.py [--out DIR] [--processes 2] [--data-dir ../shared/data]

Prints one JSON object: the max abs difference of each trained adapter / circuit, whether the
evaluation files and report are identical, the wall time of each run (process start to exit) and of
each job in it (the first job of a run also pays the library imports).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def main() -> None:
    from dist_worker import compare

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per process in both runs (the launcher's default is 1 per process)")
    a = p.parse_args()
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="alignx-dist-"))
    if not (out / "studio").is_dir():                     # built before the timed runs
        from tiny_studio import build

        build(out / "studio")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", PYTHONPATH=str(REPO),
               OMP_NUM_THREADS=str(a.threads))
    worker = str(REPO / "tests" / "dist_worker.py")
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    runs = {"one": [sys.executable, worker],
            "many": [accelerate, "launch", "--multi_gpu", "--num_processes", str(a.processes),
                     "--main_process_port", port, worker]}
    wall = {}
    for name, cmd in runs.items():
        t0 = time.time()
        done = subprocess.run([*cmd, str(out / name), str(out / "studio"), a.data_dir], env=env, cwd=REPO,
                              capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{name} run failed:\n{done.stderr[-3000:]}")
        wall[name] = round(time.time() - t0, 1)
    result = compare(out / "one", out / "many")
    result.update(processes=a.processes, threads_per_process=a.threads, wall_s=wall,
                  jobs_s={n: json.loads((out / n / "times.json").read_text()) for n in runs})
    print(json.dumps(result))
    if not a.out:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
