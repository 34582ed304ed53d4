"""``check-data KIND FILE``: read a file with the loader the project uses for it and say whether
every row is valid: ``ok: FILE: N rows`` (exit 0), or the loader's one-line error naming the file,
the row and the field (exit 2); ``--skip-bad`` drops bad rows with a warning each instead. The same
validation runs before training on an uploaded file in the app, so a file can be checked before it is
uploaded or passed to a command.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable


def _safety_eval(path: Path, skip_bad: bool):
    from alignx.data import load_safety_eval

    return load_safety_eval(path.stem, source=path)


def _psoups(path: Path, skip_bad: bool):
    from alignx.personal.data import load_examples

    return load_examples(path, skip_bad=skip_bad)


def _prompts(path: Path, skip_bad: bool):
    from alignx.cli.generate import read_prompts

    return read_prompts(str(path))


def _report(path: Path, skip_bad: bool):
    from alignx.eval.report import load_report

    return [load_report(path)]


def _loader(name: str, rows_can_be_skipped: bool = True) -> Callable[[Path, bool], list]:
    def load(path: Path, skip_bad: bool):
        import alignx.data as data

        return getattr(data, name)(path, **({"skip_bad": skip_bad} if rows_can_be_skipped else {}))
    return load


# kind -> (loader, what the file holds); another loader is one more entry
KINDS: dict[str, tuple[Callable[[Path, bool], list], str]] = {
    "sft": (_loader("load_sft_file"), "training pairs: JSON / JSONL of {prompt, response} or Alpaca rows, or CSV prompt,response"),
    "pairs": (_loader("load_alignx"), "preference pairs {prompt, chosen, rejected} (AlignX / P-Soups columns kept)"),
    "alpaca": (_loader("load_alpaca"), "Alpaca instruction data {instruction, input?, output}"),
    "safety-train": (_loader("load_safety_instructions"), "safety-tuned-llamas training instructions"),
    "safety-eval": (_safety_eval, "a safety-tuned-llamas evaluation set {instructions, inputs?}"),
    "beavertails": (_loader("load_beavertails"), "BeaverTails rows {prompt, response, is_safe} (CSV / JSON / JSONL)"),
    "truthfulqa": (_loader("load_truthfulqa"), "the TruthfulQA generation CSV"),
    "truthfulqa-mc": (_loader("load_truthfulqa_mc", False), "the TruthfulQA multiple-choice mc_task.json"),
    "model-outputs": (_loader("load_model_outputs"), "AlpacaEval model outputs {instruction, output}"),
    "preference-dims": (_loader("load_preference_dimensions", False), "the 90 AlignX preference dimensions"),
    "psoups": (_psoups, "P-Soups / AlignX user rows with their history of pairs"),
    "prompts": (_prompts, "a prompts file for generate --prompts-file (one per line)"),
    "report": (_report, "an eval report.json (for compare)"),
}


def register(sub) -> None:
    p = sub.add_parser("check-data", help="validate a data file with the project's loader for it",
                       description="Kinds: " + "; ".join(f"{k}: {v[1]}" for k, v in KINDS.items()))
    p.add_argument("kind", choices=list(KINDS), metavar="KIND", help=", ".join(KINDS))
    p.add_argument("file", help="the file to check")
    p.add_argument("--skip-bad", action="store_true",
                   help="drop bad rows with a warning each (as the training commands do for the data directory's "
                        "files) instead of stopping at the first")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    loader, _ = KINDS[args.kind]
    rows = loader(Path(args.file), args.skip_bad)
    print(f"ok: {args.file}: {len(rows)} row{'s' if len(rows) != 1 else ''} ({args.kind})")
    return 0
