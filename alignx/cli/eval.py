"""``eval``: run an evaluation suite on one mode; writes report.json, model_outputs.json, samples.jsonl.
``accelerate launch [--multi_gpu] --num_processes N -m alignx eval ...`` shares the work between N processes."""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from alignx.errors import InvalidInput


def register(sub) -> None:
    from alignx.cli import add_mode_arg, add_model_args
    from alignx.eval.options import add_calibration_args, add_run_args

    p = sub.add_parser("eval", help="evaluate helpfulness / harmlessness / honesty (H3Fusion protocol)")
    p.add_argument("--suite", default="quick",
                   help="alignx.eval.suites: quick | h3fusion | h3fusion-judged | full | safety | safety-core")
    add_mode_arg(p)
    p.add_argument("--out", default=None, help="output folder (e.g. results/NAME); reruns resume from its cache")
    p.add_argument("--reference-only", action="store_true",
                   help="score pi_ref (the base) on the suite's preference pairs into the shared reference cache "
                        "(--ref-cache) and stop: run once before evaluating several modes in parallel, with "
                        "the --batch-size they will use (the same batches give the same numbers)")
    p.add_argument("--overwrite", action="store_true", help="discard generations already in --out")
    p.add_argument("--negotiax-dir", default=None,
                   help="negotiax modes: folder of trained circuits, e.g. train-mac's --out (default: assets/negotiax)")
    add_run_args(p)
    add_calibration_args(p)
    add_model_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """One suite on one mode; under ``accelerate launch`` generation and scoring are shared between
    the processes (``alignx.eval.runner``) and rank 0 judges and writes the report."""
    from alignx import distributed as dist
    from alignx.data import resolve_data_dir
    from alignx.eval.options import (calibration_from_args, judges_from_args, policy_for, reference_cache,
                                     resolve_batch_size, run_info)
    from alignx.eval.report import summary
    from alignx.eval.runner import GENERATIONS, SCORES, run_suite
    from alignx.eval.suites import get_suite
    from alignx.experts.io import DEFAULT_EXPERTS_DIR
    from alignx.generation import Sampling
    from alignx.studio import Studio

    suite = get_suite(args.suite)                         # cheap checks first: suite, data, judges
    data_dir = resolve_data_dir(args.data_dir)
    if args.reference_only:
        return reference_only(args, suite, data_dir)
    if not args.out:
        raise InvalidInput("eval: --out is required (the output folder), except with --reference-only")
    calibration = calibration_from_args(args)
    judges = judges_from_args(args, data_dir)
    sampling = Sampling(args.max_new_tokens or suite.max_new_tokens, 0.0, 1.0, args.seed)
    out = Path(args.out)
    for name in (GENERATIONS, SCORES) if args.overwrite and dist.is_main() else ():
        if (out / name).exists():
            shutil.move(str(out / name), str(out / (name + ".old")))
    dist.barrier()
    studio = Studio.load(args.model, args.experts_dir or DEFAULT_EXPERTS_DIR, device=args.device)
    if args.negotiax_dir:
        studio.extras["negotiax_dir"] = args.negotiax_dir
    policy = policy_for(studio, args.mode, calibration)
    ref_policy = policy_for(studio, "base") if args.mode != "base" else None
    batch_size, tasks = resolve_batch_size(args.batch_size, studio, suite, sampling.max_new_tokens, [args.mode],
                                           data_dir)
    report = run_suite(suite, policy, judges, out, ref_policy=ref_policy, sampling=sampling, tasks=tasks,
                       batch_size=batch_size, n_boot=args.bootstrap, seed=args.seed, data_dir=data_dir,
                       run_info=run_info(studio, args.mode, calibration, policy), progress=not args.no_progress,
                       ref_cache=reference_cache(studio, args.ref_cache) if ref_policy is not None else None)
    if report is None:                                    # a launcher's other processes: rank 0 reports
        return 0
    print(summary(report))
    print(f"wrote {out / 'report.json'}, {out / 'model_outputs.json'}, {out / 'samples.jsonl'} "
          f"({report['run']['wall_time_s']} s)", file=sys.stderr)
    return 0


def reference_only(args: argparse.Namespace, suite, data_dir) -> int:
    """``--reference-only``: the base's log-probs of the suite's preference pairs into the shared
    reference cache (``alignx.eval.runner.score_reference``), which every later run of any mode reads."""
    from alignx.eval.options import policy_for, reference_cache, resolve_batch_size
    from alignx.eval.runner import score_reference
    from alignx.eval.suites import build_tasks
    from alignx.experts.io import DEFAULT_EXPERTS_DIR
    from alignx.studio import Studio

    if args.ref_cache and args.ref_cache.lower() == "none":
        raise InvalidInput("eval --reference-only fills the reference cache; --ref-cache none leaves nothing to fill")
    studio = Studio.load(args.model, args.experts_dir or DEFAULT_EXPERTS_DIR, device=args.device)
    tasks = build_tasks(suite, data_dir)
    batch_size, _ = resolve_batch_size(args.batch_size, studio, suite, args.max_new_tokens or suite.max_new_tokens,
                                       ["base"], data_dir, tasks)
    cache = reference_cache(studio, args.ref_cache)
    n = score_reference(policy_for(studio, "base"), tasks, batch_size, not args.no_progress, cache)
    print(f"reference log-probs of {n} pairs ({suite.name}, batch {batch_size}) in {cache.path}", file=sys.stderr)
    return 0
