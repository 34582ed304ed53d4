"""``compare``: one markdown table of several eval reports (the tables in docs/RESULTS.md); with
``--paired``, each run's difference to the first on the same items (``alignx.eval.paired``)."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("compare", help="markdown table of eval reports (report.json files or their folders)")
    p.add_argument("reports", nargs="+", help="report.json files or eval --out folders, one row each, in order")
    p.add_argument("--no-ci", action="store_true", help="values only")
    p.add_argument("--paired", action="store_true",
                   help="also print each run minus the first, with a paired bootstrap 95%% CI over the items both "
                        "scored (two runs of the same suite) and P(B > A)")
    p.add_argument("--bootstrap", type=int, default=1000, help="--paired: bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="--paired: bootstrap seed")
    p.add_argument("--export", metavar="DIR",
                   help="also copy each run's report.json and per-item scores (samples.jsonl without the answers' "
                        "text) to DIR/<run folder name>/, for later --paired comparisons (e.g. docs/points/SUITE)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alignx.eval.report import compare_table, load_report

    reports = [load_report(p) for p in args.reports]          # every file checked before any table is printed
    if args.paired:
        from alignx.eval.paired import paired_table

        table = paired_table(args.reports, args.bootstrap, args.seed)
    print(compare_table(reports, ci=not args.no_ci))
    if args.paired:
        print()
        print(table)
    if args.export:
        import sys

        from alignx.eval.paired import export_points

        for folder in export_points(args.reports, args.export):
            print(f"exported {folder}", file=sys.stderr)
    return 0
