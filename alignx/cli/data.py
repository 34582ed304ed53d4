"""``data``: the registered data sources, and what decontamination removes from each training file."""
from __future__ import annotations

import argparse
import json
import time


def register(sub) -> None:
    p = sub.add_parser("data", help="data sources (list) and the decontamination table (decontam)")
    p.add_argument("action", choices=["list", "decontam"],
                   help="list: every registered source with its file and rows; decontam: rows removed per "
                        "training file (exact / near duplicates of evaluation prompts)")
    p.add_argument("--data-dir", default=None, help="data directory (default: ../shared/data)")
    p.add_argument("--roles", default="eval", help="comma-separated ROLES.json roles to decontaminate against "
                                                  "(default eval; the judges use eval,judge-eval)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        return _list(args)
    from alignx.data.decontam import EvalIndex, THRESHOLD, training_table

    t0 = time.time()
    roles = tuple(r.strip() for r in args.roles.split(",") if r.strip())
    index = EvalIndex.build(args.data_dir, roles)
    t_index = time.time() - t0
    reports = training_table(args.data_dir, roles)
    wall = time.time() - t0
    if args.json:
        print(json.dumps({"roles": list(roles), "threshold": THRESHOLD, "eval_prompts": len(index),
                          "eval_sources": index.sources, "sources": [r.to_dict() for r in reports],
                          "wall_s": round(wall, 2)}, indent=1))
        return 0
    print(f"evaluation prompts (roles {', '.join(roles)}; normalised, distinct): {len(index)} from "
          f"{len(index.sources)} files; index built in {t_index:.1f} s")
    print(f"| training source | rows | exact | near (word-Jaccard >= {THRESHOLD}) | removed | kept | filter s "
          f"| removed by |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in reports:
        by = ", ".join(f"{k} {v}" for k, v in sorted(r.by_eval.items(), key=lambda kv: -kv[1]))
        print(f"| {r.source} | {r.total} | {r.exact} | {r.near} | {r.removed} | {r.kept} | {r.seconds:.2f} | {by} |")
    total = sum(r.total for r in reports)
    print(f"| all | {total} | {sum(r.exact for r in reports)} | {sum(r.near for r in reports)} | "
          f"{sum(r.removed for r in reports)} | {sum(r.kept for r in reports)} | "
          f"{sum(r.seconds for r in reports):.2f} | |")
    print(f"wall time {wall:.1f} s")
    return 0


def _list(args: argparse.Namespace) -> int:
    from alignx.data.registry import REGISTRY, load
    from alignx.data.roles import read_roles

    roles = read_roles(args.data_dir)
    rows = []
    for name, src in sorted(REGISTRY.items()):
        rows.append({"name": name, "file": src.file, "role": roles.get(src.file, "(not in ROLES.json)"),
                     "rows": len(load(name, args.data_dir, skip_bad=True))})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        print(f"{r['name']:32s} {r['rows']:6d}  {r['role']:42s} {r['file']}")
    return 0
