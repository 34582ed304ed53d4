"""``route``: the routing probabilities of a prompt, before and after calibration, as JSON."""
from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    from alignx.cli import add_model_args
    from alignx.mocae.calibration import PREFERENCES_HELP

    p = sub.add_parser("route", help="print the MoCaE routing of a prompt as one JSON object")
    p.add_argument("prompt")
    p.add_argument("--lambda1", type=float, default=None, help="router weight (default 0.6)")
    p.add_argument("--lambda2", type=float, default=None, help="calibration-term weight (default 0.4)")
    p.add_argument("--temperature", type=float, default=None, help="router softmax temperature T (default 1)")
    p.add_argument("--preferences", default=None, help=PREFERENCES_HELP)
    p.add_argument("--prefer", action="append", default=[], metavar="NAME=VALUE",
                   help="the same syntax as --preferences, repeatable (kept for older scripts)")
    add_model_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alignx.errors import InvalidInput
    from alignx.experts.io import DEFAULT_EXPERTS_DIR
    from alignx.mocae.calibration import parse_preferences
    from alignx.studio import Studio

    prefs = parse_preferences(",".join([args.preferences or "", *args.prefer]))
    studio = Studio.load(args.model, args.experts_dir or DEFAULT_EXPERTS_DIR, device=args.device)
    if studio.mocae is None:
        raise InvalidInput("no trained router for these experts: run `python -m alignx train-router` first")
    cal = studio.mocae.calibration.with_(lambda1=args.lambda1, lambda2=args.lambda2, temperature=args.temperature,
                                         preferences=prefs)
    print(json.dumps(studio.mocae.route(args.prompt, cal).to_dict(), indent=1))
    return 0
