"""``routing-eval``: held-out routing accuracy of a Studio's MoCaE, overall and per source
(``alignx.mocae.routing_eval``), features cached under ~/.cache/alignx/features."""
from __future__ import annotations

import argparse
import json
import shlex
import sys


def register(sub) -> None:
    from alignx.cli import add_model_args
    from alignx.mocae.routing_eval import HELDOUT_SOURCES, NEW_SOURCES

    p = sub.add_parser("routing-eval", help="route labelled held-out prompt sets with the MoCaE and report "
                                            "accuracy (argmax of the final weights == the objective) per source")
    add_model_args(p)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--router-dir", default=None,
                   help="a router folder (router.safetensors + card.json) to evaluate instead of EXPERTS_DIR/router")
    p.add_argument("--per-source", type=int, default=100, help="prompts sampled from each new source (seeded)")
    p.add_argument("--heldout-per-axis", type=int, default=100, help="today's held-out prompts per axis")
    p.add_argument("--sources", default=None,
                   help="comma-separated subset of: " + ", ".join([*HELDOUT_SOURCES.values(), *NEW_SOURCES]))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-cache", action="store_true", help="encode every prompt (no feature cache)")
    p.add_argument("--out", default=None, help="write the JSON report here (atomically)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alignx.atomic import write_json
    from alignx.errors import InvalidInput
    from alignx.experts.io import DEFAULT_EXPERTS_DIR
    from alignx.mocae import routing_eval as R
    from alignx.mocae.core import MoCaE
    from alignx.mocae.feature_cache import CachedFeatures
    from alignx.studio import Studio

    studio = Studio.load(args.model, args.experts_dir or DEFAULT_EXPERTS_DIR, device=args.device, with_router=False)
    if not studio.experts:
        raise InvalidInput("no experts loaded: routing needs a trained MoCaE")
    mocae = MoCaE.load(studio.model, studio.tokenizer, studio.experts_dir, router_dir=args.router_dir)
    sets = R.routing_sets(args.data_dir, args.per_source, args.heldout_per_axis, args.seed,
                          args.sources.split(",") if args.sources else None)
    cached = None if args.no_cache else CachedFeatures.for_space(
        studio, mocae.space, progress=lambda d, t: print(f"encoded {d}/{t}", file=sys.stderr, flush=True))
    report = R.evaluate(R.mocae_weights_fn(mocae, cached), mocae.experts, sets,
                        lambda e: studio.experts[e].get("axis", e))
    report["command"] = "python -m alignx " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report["router"] = str(args.router_dir or studio.experts_dir / "router")
    report["router_card_heldout_accuracy"] = mocae.card.get("heldout", {}).get("routing_accuracy")
    if args.out:
        write_json(args.out, report)
    print(R.table(report))
    print(json.dumps({"overall": report["overall"]["accuracy"], "ci95": report["overall"]["ci95"]}))
    return 0
