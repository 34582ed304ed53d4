"""``judge-accuracy``: each offline judge's accuracy on labelled data it was not trained on."""
from __future__ import annotations

import argparse
import json
import sys
import time


def register(sub) -> None:
    p = sub.add_parser("judge-accuracy", help="measure the offline judges on labelled data they never saw: safety "
                                              "on BeaverTails 30k_test and PKU-SafeRLHF labelled responses, "
                                              "helpfulness on held-out HH helpful-base pairs")
    p.add_argument("--judges-dir", default=None, help="offline judges folder (default: assets/judges)")
    p.add_argument("--data-dir", default=None, help="data directory (default: ../shared/data)")
    p.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, from {', '.join(SETS)}")
    p.add_argument("--limit", type=int, default=None,
                   help="a seeded sample of at most this many rows per set (default: every row)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", default=None, help="write the reports as JSON here (atomically)")
    p.set_defaults(func=run)


SETS = ("beavertails_30k_test", "pku_saferlhf_labelled", "hh_helpful_heldout")


def run(args: argparse.Namespace) -> int:
    from alignx.atomic import write_json
    from alignx.errors import unknown
    from alignx.eval.judges import accuracy
    from alignx.eval.judges.offline import OfflineJudge
    from alignx.eval.judges.training_data import accuracy_sets

    names = [s.strip() for s in args.sets.split(",") if s.strip()]
    for n in names:
        if n not in SETS:
            raise unknown("set", n, SETS)
    judge = OfflineJudge(args.judges_dir, batch_size=args.batch_size, data_dir=args.data_dir)
    sets = {n: s for n, s in accuracy_sets(args.data_dir, args.limit, args.seed).items() if n in names}
    t0 = time.time()
    reports = accuracy.judge_accuracy(judge, sets, args.seed,
                                      progress=lambda n: print(f"  judging {n} ...", file=sys.stderr, flush=True))
    out = {"judges": judge.info(), "limit": args.limit, "seed": args.seed, "wall_s": round(time.time() - t0, 1),
           "sets": reports}
    for name, r in reports.items():
        extra = (f" balanced {r['balanced_accuracy']} TPR {r['tpr']} TNR {r['tnr']} AUROC {r['auroc']}"
                 if r["kind"] == "safety" else "")
        print(f"{name:24s} n={r['n']:5d} accuracy {r['accuracy']} {r['ci95']}{extra}")
    if args.out:
        write_json(args.out, out)
    else:
        print(json.dumps(out, indent=1))
    return 0
