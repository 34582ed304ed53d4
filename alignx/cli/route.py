"""``route``: the routing probabilities of a prompt, before and after calibration, as JSON; or of a
file of prompts, routed in batches, one JSON object per line."""
from __future__ import annotations

import argparse
import json
import sys


def register(sub) -> None:
    from alignx.cli import add_model_args
    from alignx.mocae.calibration import PREFERENCES_HELP

    p = sub.add_parser("route", help="print the MoCaE routing of a prompt as one JSON object, or route a prompts "
                                     "file in batches to JSONL")
    p.add_argument("prompt", nargs="?", help="the prompt; omit with --prompts-file")
    p.add_argument("--prompts-file", help="one prompt per line (blank lines skipped)")
    p.add_argument("--out", help="JSONL output for --prompts-file: one {prompt, router_probabilities, probabilities, "
                                 "cluster} per line (written atomically)")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per batched latent forward (default 16)")
    p.add_argument("--lambda1", type=float, default=None, help="router weight (default 0.6)")
    p.add_argument("--lambda2", type=float, default=None, help="calibration-term weight (default 0.4)")
    p.add_argument("--temperature", type=float, default=None, help="router softmax temperature T (default 1)")
    p.add_argument("--preferences", default=None, help=PREFERENCES_HELP)
    p.add_argument("--prefer", action="append", default=[], metavar="NAME=VALUE",
                   help="the same syntax as --preferences, repeatable (kept for older scripts)")
    add_model_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from alignx.atomic import write_jsonl
    from alignx.cli.generate import read_prompts
    from alignx.errors import InvalidInput
    from alignx.experts.io import DEFAULT_EXPERTS_DIR
    from alignx.mocae.calibration import parse_preferences
    from alignx.studio import Studio

    if (args.prompt is not None) == bool(args.prompts_file):     # an empty prompt: MoCaE.route says so
        raise InvalidInput("give either a prompt or --prompts-file")
    if args.prompts_file and not args.out:
        raise InvalidInput("--prompts-file needs --out FILE.jsonl")
    prefs = parse_preferences(",".join([args.preferences or "", *args.prefer]))
    prompts = read_prompts(args.prompts_file) if args.prompts_file else None
    studio = Studio.load(args.model, args.experts_dir or DEFAULT_EXPERTS_DIR, device=args.device)
    if studio.mocae is None:
        raise InvalidInput("no trained router for these experts: run `python -m alignx train-router` first")
    cal = studio.mocae.calibration.with_(lambda1=args.lambda1, lambda2=args.lambda2, temperature=args.temperature,
                                         preferences=prefs)
    if prompts is None:
        print(json.dumps(studio.mocae.route(args.prompt, cal).to_dict(), indent=1))
        return 0
    with tqdm(total=len(prompts), desc="route", unit="prompt") as bar:
        routes = studio.mocae.route_many(prompts, cal, batch_size=args.batch_size,
                                         on_batch=lambda n: bar.update(n - bar.n))
    write_jsonl(args.out, [{"prompt": r.prompt, "router_probabilities": r.router_probabilities,
                            "probabilities": r.probabilities, "cluster": r.cluster} for r in routes])
    print(f"routed {len(routes)} prompts -> {args.out}", file=sys.stderr)
    return 0
