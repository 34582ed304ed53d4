"""``route``: the routing probabilities of a prompt, before and after calibration, as JSON."""
from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    from alignx.cli import add_model_args

    p = sub.add_parser("route", help="print the MoCaE routing of a prompt as one JSON object")
    p.add_argument("prompt")
    p.add_argument("--lambda1", type=float, default=None, help="router weight (default 0.6)")
    p.add_argument("--lambda2", type=float, default=None, help="calibration-term weight (default 0.4)")
    p.add_argument("--temperature", type=float, default=None, help="router softmax temperature T (default 1)")
    p.add_argument("--prefer", action="append", default=[], metavar="EXPERT=VALUE",
                   help="preference in [0, 1] for an expert (repeatable; default 1 each)")
    add_model_args(p)
    p.set_defaults(func=run)


def parse_preferences(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--prefer expects EXPERT=VALUE, got {item!r}")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--prefer {item!r}: {value!r} is not a number") from None
    return out


def run(args: argparse.Namespace) -> int:
    from alignx.experts.io import DEFAULT_EXPERTS_DIR
    from alignx.studio import Studio

    studio = Studio.load(args.model, args.experts_dir or DEFAULT_EXPERTS_DIR, device=args.device)
    if studio.mocae is None:
        raise ValueError("no trained router for these experts: run `python -m alignx train-router` first")
    cal = studio.mocae.calibration.with_(lambda1=args.lambda1, lambda2=args.lambda2, temperature=args.temperature,
                                         preferences=parse_preferences(args.prefer) or None)
    print(json.dumps(studio.mocae.route(args.prompt, cal).to_dict(), indent=1))
    return 0
