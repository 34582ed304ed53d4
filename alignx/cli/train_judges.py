"""``train-judges``: train the offline proxy judges on ../shared/data and write them (with cards)."""
from __future__ import annotations

from alignx.errors import InvalidInput

import argparse
import shlex
import sys
import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("train-judges", help="train the offline judges (truthfulness, informativeness, safety, "
                                            "helpfulness) on frozen features of the default model")
    p.add_argument("--out", default="assets/judges", help="output folder, one subfolder per judge")
    p.add_argument("--data-dir", default=None, help="data directory (default: ../shared/data)")
    p.add_argument("--model", default="smollm2-135m-instruct", help="feature model (frozen)")
    p.add_argument("--layers", default="10,15,20,25,-1", help="hidden-state layers to mean-pool and concatenate")
    p.add_argument("--only", default="truthfulness,informativeness,safety,helpfulness")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-truthfulqa-train", type=int, default=1000)
    p.add_argument("--n-truthfulqa-heldout", type=int, default=400)
    p.add_argument("--n-refusal", type=int, default=240)
    p.add_argument("--n-comply", type=int, default=240)
    p.add_argument("--n-refusal-benign", type=int, default=100)
    p.add_argument("--n-pku-prompts", type=int, default=300, help="PKU-SafeRLHF prompts (2 safe/unsafe pairs each)")
    p.add_argument("--n-dna-questions", type=int, default=300, help="Do-Not-Answer questions (labelled answers)")
    p.add_argument("--n-helpful-pairs", type=int, default=400,
                   help="single-turn HH-RLHF helpful-base training pairs for the preference judge")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--cache-dir", default=None, help="feature cache (default: <alignx cache>/judge_features)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alignx.eval.features import FeatureSpec
    from alignx.eval.judges.train import TrainConfig, train_judges
    from alignx.models import cache_dir

    try:
        layers = tuple(int(x) for x in args.layers.split(","))
    except ValueError:
        raise InvalidInput(f"--layers must be comma-separated integers, got {args.layers!r}") from None
    argv = sys.argv[1:] if sys.argv and sys.argv[0].endswith(("__main__.py", "alignx")) else []
    cfg = TrainConfig(out=Path(args.out), data_dir=args.data_dir, seed=args.seed,
                      spec=FeatureSpec(args.model, layers), n_truthfulqa_train=args.n_truthfulqa_train,
                      n_truthfulqa_heldout=args.n_truthfulqa_heldout, n_refusal=args.n_refusal,
                      n_comply=args.n_comply, n_refusal_benign=args.n_refusal_benign,
                      n_pku_prompts=args.n_pku_prompts, n_dna_questions=args.n_dna_questions,
                      n_helpful_pairs=args.n_helpful_pairs, batch_size=args.batch_size,
                      cache_dir=Path(args.cache_dir) if args.cache_dir else cache_dir() / "judge_features",
                      command="python -m alignx " + shlex.join(argv) if argv else "python -m alignx train-judges")
    last = [0.0]

    def progress(what: str, done: int, total: int) -> None:
        if time.time() - last[0] > 10 or done == total:
            last[0] = time.time()
            print(f"  features [{what}] {done}/{total}", file=sys.stderr, flush=True)

    cards = train_judges(cfg, progress, only=tuple(x.strip() for x in args.only.split(",") if x.strip()))
    for name, card in cards.items():
        h = card["heldout"]
        acc = h.get("accuracy") if name != "safety" else h["balanced_accuracy"]
        print(f"{name:16s} {card['version']:28s} held-out {'balanced acc' if name == 'safety' else 'accuracy'} "
              f"{acc:.3f} (n={h['n']}) quality={card['quality']}")
    return 0
