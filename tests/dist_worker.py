"""One job list run by ``tests/test_distributed.py`` twice: in one process, and under
``accelerate launch --multi_gpu --num_processes 2`` (gloo on this CPU). Each job is the real CLI
entry (``alignx.cli.main``) or the eval runner, on the tiny random model:

    python tests/dist_worker.py OUT STUDIO_DIR DATA_DIR [JOB ...]     JOB: experts | mac | dpo | eval

Outputs go to OUT/<job>; the main process writes OUT/times.json (seconds per job). STUDIO_DIR (the
tiny experts and router the eval job loads) is built there when missing. ``compare(one, two)`` is
what the test and ``bench/distributed.py`` check.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

JOBS = ("experts", "mac", "dpo", "eval")


def cli(args: list[str]) -> None:
    from alignx.cli import main

    code = main(args)
    if code:
        raise SystemExit(f"alignx {' '.join(args)} exited with {code}")


def run_eval(out: Path, studio_dir: Path, data: str) -> None:
    from alignx import methods
    from alignx.eval.runner import run_suite
    from alignx.eval.scores import ScoreCache
    from alignx.eval.suites import Suite, build_tasks
    from alignx.generation import Sampling
    from alignx.studio import Studio
    from tests.test_eval_runner import ScriptedJudge

    suite = Suite("dist", "a few rows of each part", alpaca_n=3, reference="h3fusion",
                  harmful={"I-CoNa": 2, "I-Controversial": 1}, benign={"I-Alpaca": 2}, truthfulqa_n=3, mc_n=3,
                  pairs_n={"helpful": 2, "harmless": 3, "honest": 2}, max_new_tokens=8)
    studio = Studio.load("tiny-random", studio_dir, device="auto")
    judge = ScriptedJudge()
    run_suite(suite, methods.policy(studio, "expert:helpful"), {c: judge for c in judge.capabilities}, out,
              ref_policy=methods.policy(studio, "base"), sampling=Sampling(max_new_tokens=6), batch_size=2,
              n_boot=50, data_dir=data, tasks=build_tasks(suite, data), progress=False,
              run_info={"model": "tiny-random", "mode": "expert:helpful"},
              ref_cache=ScoreCache(out.parent / "eval-ref.json", "ref"))


def compare(one: Path, two: Path) -> dict:
    """Max abs differences of the trained weights, and whether the evaluation files are identical
    (report.json without its timings, creation time and process count)."""
    from safetensors.torch import load_file

    def diff(rel: str) -> float:
        x, y = load_file(one / rel), load_file(two / rel)
        if x.keys() != y.keys():
            raise AssertionError(f"{rel}: different tensors")
        return max(float((x[k] - y[k]).abs().max()) for k in x)

    def report(path: Path) -> dict:
        r = json.loads(path.read_text())
        for k in ("wall_time_s", "timings_s", "created", "processes"):
            r["run"].pop(k, None)
        return r

    files = ("generations.jsonl", "samples.jsonl", "model_outputs.json", "scores.json")
    return {"experts_adapter_max_abs_diff": diff("experts/helpful/adapter_model.safetensors"),
            "dpo_adapter_max_abs_diff": diff("dpo/pba/adapter_model.safetensors"),
            "mac_circuit_max_abs_diff": diff("mac/full/circuit.safetensors"),
            "eval_files_identical": {f: (one / "eval" / f).read_text() == (two / "eval" / f).read_text()
                                     for f in files},
            "eval_report_equal": report(one / "eval" / "report.json") == report(two / "eval" / "report.json")}


def main() -> None:
    from alignx import distributed as dist

    out, studio_dir, data = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    jobs = sys.argv[4:] or list(JOBS)
    if "eval" in jobs and not studio_dir.is_dir():
        if dist.is_main():                                 # tiny random experts + a synthetic router
            sys.path.insert(0, str(REPO / "tests"))
            from tiny_studio import build

            build(studio_dir)
        dist.barrier()
    tiny = ["--data-dir", data]
    times = {}
    for job in jobs:
        t0 = time.time()
        if job == "experts":
            cli(["train-experts", "--base", "tiny-random", "--preset", "tiny", "--axes", "helpful", "--no-latent",
                 "--max-steps", "4", "--rows-per-axis", "24", "--out", str(out / job), *tiny])
        elif job == "mac":
            cli(["train-mac", "--model", "tiny-random", "--preset", "tiny", "--out", str(out / job), *tiny])
        elif job == "dpo":
            cli(["personal", "train", "--method", "pba", "--preset", "tiny", "--limit", "4", "--batch-size", "1",
                 "--grad-accum", "2", "--max-steps", "3", "--model", "tiny-random", "--out", str(out / job), *tiny])
        elif job == "eval":
            run_eval(out / job, studio_dir, data)
        else:
            raise SystemExit(f"unknown job {job!r}; choose from {JOBS}")
        dist.barrier()
        times[job] = round(time.time() - t0, 1)
    if dist.is_main():
        (out / "times.json").write_text(json.dumps(dict(times, processes=dist.world_size())) + "\n")


if __name__ == "__main__":
    main()
