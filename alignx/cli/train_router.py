"""``train-router``: stage 2, fit the MoCaE router, clusters and expert temperatures."""
from __future__ import annotations

import argparse
import json
import shlex
import sys


def register(sub) -> None:
    from alignx.cli import add_model_args

    p = sub.add_parser("train-router", help="train the MoCaE router for an experts folder")
    add_model_args(p)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--per-axis", type=int, default=250,
                   help="training prompts per axis, none of them seen by the latent heads")
    p.add_argument("--heldout-per-axis", type=int, default=100)
    p.add_argument("--balanced", action="store_true",
                   help="class-balanced cross-entropy (each axis weighted by n / (3 n_axis))")
    p.add_argument("--sources", default="v1", choices=["v1", "v2"],
                   help="router prompt sources (alignx.experts.latent.axis_prompt_pools): v1 = Alpaca, HH helpful, "
                        "safety-tuned-llamas, BeaverTails, TruthfulQA; v2 = the second-wave sources (docs/METHOD.md)")
    p.add_argument("--feature-cache", action="store_true",
                   help="cache the adapters' features per prompt under ~/.cache/alignx/features")
    p.add_argument("--router-dir", default=None, help="save the router here instead of EXPERTS_DIR/router")
    p.add_argument("--routing-eval-per-source", type=int, default=0,
                   help="also score every held-out routing set (routing-eval) with this many prompts per new source")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alignx.experts.io import DEFAULT_EXPERTS_DIR
    from alignx.mocae.train import train_mocae
    from alignx.studio import Studio

    studio = Studio.load(args.model, args.experts_dir or DEFAULT_EXPERTS_DIR, device=args.device, with_router=False)
    command = "python -m alignx " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    mocae = train_mocae(studio, args.data_dir, args.per_axis, args.heldout_per_axis, balanced=args.balanced,
                        command=command, sources=args.sources, feature_cache=args.feature_cache,
                        router_dir=args.router_dir, routing_eval_per_source=args.routing_eval_per_source,
                        progress=lambda m: print(m, file=sys.stderr, flush=True))
    h = mocae.card["heldout"]
    print(json.dumps({"routing_accuracy": h["routing_accuracy"], "confusion_matrix": h["confusion_matrix"],
                      "clusters_train": h["clusters_train"], "heldout_novel_share": h["heldout_novel_share"],
                      "expert_calibration": mocae.card["expert_calibration"]}, indent=1))
    return 0
