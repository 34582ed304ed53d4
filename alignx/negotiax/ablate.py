"""NegotiaX ablations: every variant through the same eval suite, one table.

The variants, in table order (``VARIANT_ROWS``):

| variant | mode | what differs from full |
|---|---|---|
| base | ``base`` | no circuit |
| Module I only | ``negotiax:module1`` | trained and served with uniform fusion alpha = 1/N: pathways, no negotiation |
| Module II only | ``negotiax:module2`` | the MAC trained on the pooled objective loss alone (w_own = w_id = 0): axis labels nominal |
| full | ``negotiax`` | pathways + negotiation + per-objective supervision |
| frozen negotiation | ``negotiax:frozen`` | W_q, W_k and e kept at their random init during training |
| leave-one-out (o) | ``negotiax:without-o`` | the full circuit with pathway o removed from the softmax at inference |
| leave-one-out trained (o) | ``negotiax:loo-o`` | trained without o's data and pathway (when such a circuit exists) |

Each mode runs ``alignx.eval.sweep.evaluate_candidate`` in ``<out>/points/<mode>`` (resumable
mode by mode: a killed ablation keeps the answers it had), with the base as pi_ref. Writes
``ablation.json`` (rows: variant, mode, every headline metric with its 95% CI) and
``ablation.md`` (the ``compare`` table, rows labelled by variant, then each variant minus the base on
the same items with paired bootstrap CIs: ``alignx.eval.paired``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Sequence

from alignx.errors import InvalidInput

FIXED = (("base", "base"), ("Module I only", "negotiax:module1"), ("Module II only", "negotiax:module2"),
         ("full", "negotiax"), ("frozen negotiation", "negotiax:frozen"))


def variant_rows(available: Sequence[str], objectives: Sequence[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """``([(variant label, mode), ...] in table order, [missing modes])`` for the modes a Studio offers."""
    wanted = list(FIXED) + [(f"leave-one-out ({o})", f"negotiax:without-{o}") for o in objectives] + \
        [(f"leave-one-out trained ({o})", f"negotiax:loo-{o}") for o in objectives]
    have = set(available)
    rows = [(label, mode) for label, mode in wanted if mode in have]
    missing = [mode for label, mode in wanted if mode not in have and not mode.startswith("negotiax:loo-")]
    return rows, missing


def data_mismatches(cards: dict[str, dict]) -> list[str]:
    """Objectives whose training rows per source differ between the circuits behind an ablation's rows.

    ``cards`` maps a mode to its circuit's card; each card's ``data[objective]["sources"]`` counts
    the training rows per source. An ablation compares modules, so every circuit should have seen
    the same rows per source for each objective it trains (a trained leave-one-out lacks its
    objective by design and is compared on the others). One line per objective where they differ,
    for example a full circuit trained with CoCoNot contrast rows beside a Module I only trained
    on refusals alone."""
    by_objective: dict[str, dict[tuple[str, ...], list[str]]] = {}
    for mode, card in cards.items():
        for objective, info in (card.get("data") or {}).items():
            sources = tuple(sorted(f"{k} {n}" for k, n in (info.get("sources") or {}).items() if n))
            by_objective.setdefault(objective, {}).setdefault(sources, []).append(mode)
    return [f"{o}: " + "; ".join(f"{', '.join(modes)} trained on {', '.join(src) or 'no rows'}"
                                 for src, modes in groups.items())
            for o, groups in by_objective.items() if len(groups) > 1]


def run_ablation(studio, suite, judges, out_dir: str | Path, modes: Sequence[str] | None = None,
                 on_row: Callable[[dict], None] | None = None, **run_kw) -> dict:
    """Evaluate each variant's mode on ``suite``; write ablation.json / ablation.md; return the result."""
    from alignx import methods
    from alignx.eval.options import policy_for, run_info
    from alignx.atomic import write_text as write_atomic
    from alignx.eval.report import compare_table, load_report
    from alignx.eval.sweep import Candidate, evaluate_candidate
    from alignx.negotiax.family import available

    found = available(studio)
    if "negotiax" not in found:
        raise InvalidInput("no trained NegotiaX circuit for this base model "
                           f"({studio.lm.name}); train one: python -m alignx train-mac")
    card_of = {folder: json.loads((folder / "card.json").read_text()) for folder in set(found.values())}
    objectives = card_of[found["negotiax"]]["objectives"]
    rows, missing = variant_rows(["base", *found], objectives)
    if modes:
        unknown_modes = [m for m in modes if m not in dict((m2, l) for l, m2 in rows)]
        if unknown_modes:
            raise InvalidInput(f"ablate --modes: {unknown_modes} not available; available: "
                               + ", ".join(m for _, m in rows))
        rows = [(label, mode) for label, mode in rows if mode in modes]
    for mode in missing:
        print(f"ablate: {mode} not trained, skipped (python -m alignx train-mac --variant "
              f"{mode.split(':', 1)[-1]})", file=sys.stderr)
    cards = {mode: card_of[found[mode]] for _, mode in rows
             if mode in found and not mode.startswith("negotiax:without-")}
    mismatches = data_mismatches(cards)
    for line in mismatches:
        print(f"ablate: warning: the circuits were trained on different data: {line}", file=sys.stderr)
    out = Path(out_dir)
    ref = methods.policy(studio, "base")
    result_rows, reports = [], []
    for label, mode in rows:
        cand = Candidate(mode, "base" if mode == "base" else "negotiax", lambda m=mode: policy_for(studio, m), None,
                         run_info(studio, mode, None))
        point = evaluate_candidate(cand, suite, judges, out, ref, **run_kw)
        row = {"variant": label, "mode": mode, "metrics": point["metrics"], "report": point["report"]}
        result_rows.append(row)
        reports.append(load_report(point["report"]))
        if on_row:
            on_row(row)
    table = compare_table(reports)
    for (label, mode) in rows:                      # rows named by variant, mode in brackets
        table = table.replace(f"| {mode} |", f"| {label} (`{mode}`) |", 1)
    if len(result_rows) > 1 and result_rows[0]["mode"] == "base":      # every variant minus the base, same items
        from alignx.eval.paired import paired_table

        table += "\n\n" + paired_table([r["report"] for r in result_rows], run_kw.get("n_boot", 1000),
                                        run_kw.get("seed", 0), labels=[r["variant"] for r in result_rows])
    if mismatches:
        table += "\n\nThe circuits were trained on different data, so these rows differ by more than the module:\n" + \
            "\n".join(f"- {line}" for line in mismatches)
    result = {"suite": getattr(suite, "name", suite), "rows": result_rows, "skipped": missing, "table": table,
              "data_mismatches": mismatches}
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "ablation.json", json.dumps(result, indent=2, default=str) + "\n")
    write_atomic(out / "ablation.md", table + "\n")
    return result
