"""``ablate``: the NegotiaX ablation table (base, Module I only, Module II only, full, frozen
negotiation, leave-one-objective-out) from one eval suite; see ``alignx.negotiax.ablate``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub) -> None:
    from alignx.cli import add_model_args
    from alignx.eval.options import add_run_args

    p = sub.add_parser("ablate", help="evaluate every NegotiaX ablation on one suite; print and save the table")
    p.add_argument("--suite", default="quick",
                   help="quick | h3fusion | h3fusion-judged | full | safety | safety-core (every variant runs it)")
    p.add_argument("--out", required=True, help="output folder; each variant gets points/<mode>/ (resumable)")
    p.add_argument("--modes", default=None, help="comma-separated subset of the variants' modes (default: all trained)")
    p.add_argument("--negotiax-dir", default=None, help="folder of trained circuits (default: assets/negotiax)")
    add_run_args(p)
    add_model_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alignx.data import resolve_data_dir
    from alignx.eval.options import judges_from_args, reference_cache, resolve_batch_size
    from alignx.eval.suites import get_suite
    from alignx.experts.io import DEFAULT_EXPERTS_DIR
    from alignx.generation import Sampling
    from alignx.negotiax.ablate import run_ablation
    from alignx.studio import Studio

    suite = get_suite(args.suite)
    data_dir = resolve_data_dir(args.data_dir)
    judges = judges_from_args(args, data_dir)
    studio = Studio.load(args.model, args.experts_dir or DEFAULT_EXPERTS_DIR, device=args.device)
    if args.negotiax_dir:
        studio.extras["negotiax_dir"] = args.negotiax_dir
    modes = [m.strip() for m in args.modes.split(",") if m.strip()] if args.modes else None
    sampling = Sampling(args.max_new_tokens or suite.max_new_tokens, 0.0, 1.0, args.seed)
    batch_size, _ = resolve_batch_size(args.batch_size, studio, suite, sampling.max_new_tokens, ["negotiax"], data_dir)
    result = run_ablation(studio, suite, judges, Path(args.out), modes,
                          on_row=lambda r: print(f"  {r['variant']}: average alignment score "
                                                 f"{r['metrics']['average_alignment_score']['value']}", file=sys.stderr),
                          sampling=sampling, batch_size=batch_size, n_boot=args.bootstrap, seed=args.seed,
                          data_dir=data_dir, progress=not args.no_progress, ref_cache=reference_cache(studio, args.ref_cache))
    print(result["table"])
    print(f"wrote {Path(args.out) / 'ablation.json'}, ablation.md", file=sys.stderr)
    return 0
