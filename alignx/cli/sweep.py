"""``sweep``: MoCaE over a grid of calibration settings (+ base, experts, uniform merge, NegotiaX) -> Pareto front."""
from __future__ import annotations

from alignx.errors import InvalidInput

import argparse
import sys
from pathlib import Path


def register(sub) -> None:
    from alignx.cli import add_mode_arg, add_model_args
    from alignx.eval.options import add_run_args

    p = sub.add_parser("sweep", help="evaluate MoCaE calibration settings and write the helpful/harmless/honest "
                                     "Pareto front (JSON + plotly)")
    p.add_argument("--suite", default="quick", help="quick | h3fusion | full (every point runs it; the front needs all three parts)")
    add_mode_arg(p, default="mocae-logit")
    p.add_argument("--out", required=True, help="output folder; each point gets points/<label>/ (resumable)")
    p.add_argument("--lambda1", default="0.2,0.6,1", help="comma-separated values in [0, 1]")
    p.add_argument("--lambda2", default="0,0.4,0.8", help="comma-separated values in [0, 1]")
    p.add_argument("--temperature", default="0.5,1,2", help="comma-separated calibration temperatures")
    p.add_argument("--preferences", default="default",
                   help="';'-separated preference vectors over experts, values in [0, 1], e.g. "
                        "'default;helpful=1,harmless=0.5,honest=0.5' (default = the router's saved preferences)")
    p.add_argument("--per-token", action="store_true", help="logit fusion: re-route at every token")
    p.add_argument("--anchors-only", action="store_true", help="only base, experts, the uniform merge and NegotiaX (when trained)")
    p.add_argument("--no-anchors", action="store_true", help="only the MoCaE grid")
    add_run_args(p)
    add_model_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alignx import methods
    from alignx.data import resolve_data_dir
    from alignx.eval.options import judges_from_args, reference_cache, resolve_batch_size
    from alignx.eval.suites import get_suite
    from alignx.eval.sweep import candidates_from_studio, grid, parse_floats, parse_preference_list, run_sweep
    from alignx.experts.io import DEFAULT_EXPERTS_DIR
    from alignx.generation import Sampling
    from alignx.studio import Studio

    if args.anchors_only and args.no_anchors:
        raise InvalidInput("--anchors-only and --no-anchors exclude each other")
    suite = get_suite(args.suite)
    if suite.alpaca_n == 0 or suite.truthfulqa_n == 0:
        raise InvalidInput(f"suite {suite.name!r} has no AlpacaEval or no TruthfulQA part: a sweep's Pareto front "
                           f"needs helpful, harmless and honest scores (use quick, h3fusion or full)")
    data_dir = resolve_data_dir(args.data_dir)
    settings = [] if args.anchors_only else grid(parse_floats(args.lambda1, "--lambda1"),
                                                 parse_floats(args.lambda2, "--lambda2"),
                                                 parse_floats(args.temperature, "--temperature"),
                                                 parse_preference_list(args.preferences))
    judges = judges_from_args(args, data_dir)
    studio = Studio.load(args.model, args.experts_dir or DEFAULT_EXPERTS_DIR, device=args.device, with_router=True)
    if args.per_token:
        settings = [dict(s, per_token=True) for s in settings]
    candidates = candidates_from_studio(studio, settings, args.mode, anchors=not args.no_anchors)
    print(f"sweep: {len(candidates)} points x suite {suite.name}", file=sys.stderr)
    sampling = Sampling(args.max_new_tokens or suite.max_new_tokens, 0.0, 1.0, args.seed)
    batch_size, _ = resolve_batch_size(args.batch_size, studio, suite, sampling.max_new_tokens,
                                       [c.label for c in candidates], data_dir)
    result = run_sweep(candidates, suite, judges, Path(args.out), ref_policy=methods.policy(studio, "base"),
                       on_point=lambda p: print(f"  {p['label']}: helpful {p['helpful']}, harmless {p['harmless']}, "
                                                f"honest {p['honest']}", file=sys.stderr),
                       sampling=sampling, batch_size=batch_size, n_boot=args.bootstrap, seed=args.seed,
                       data_dir=data_dir, progress=not args.no_progress,
                       ref_cache=reference_cache(studio, args.ref_cache))
    print("Pareto front: " + ", ".join(result["pareto_front"]))
    print(f"wrote {Path(args.out) / 'sweep.json'}, pareto.json, pareto.html", file=sys.stderr)
    return 0
