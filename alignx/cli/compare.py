"""``compare``: one markdown table of several eval reports (the tables in docs/RESULTS.md)."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("compare", help="markdown table of eval reports (report.json files or their folders)")
    p.add_argument("reports", nargs="+", help="report.json files or eval --out folders, one row each, in order")
    p.add_argument("--no-ci", action="store_true", help="values only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alignx.eval.report import compare_table, load_report

    print(compare_table([load_report(p) for p in args.reports], ci=not args.no_ci))
    return 0
