"""``python -m alignx COMMAND``: each command is a module here with ``register(subparsers)``
that adds its parser and sets ``func``; heavy imports happen inside ``func`` so --help is fast."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from alignx.errors import AlignXError

COMMANDS = ["generate", "train_experts", "route", "train_router", "eval", "compare", "sweep", "train_judges", "personal",
            "interp", "train_mac", "ablate", "data", "judge_accuracy", "check_data", "routing_eval"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m alignx",
                                     description="AlignX Studio: multi-objective alignment with calibrated experts.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"alignx.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"alignx.cli.{name}":
                continue  # command not built yet in this checkout
            raise
        module.register(sub)
    return parser


def add_mode_arg(p: argparse.ArgumentParser, default: str = "base") -> None:
    """``--mode``: the modes of every registered method family (``alignx.methods``)."""
    from alignx import methods

    p.add_argument("--mode", default=default, help=f"{methods.usage()} (default {default}); an unknown mode's "
                                                   "error lists the modes the loaded experts offer")


def add_model_args(p: argparse.ArgumentParser) -> None:
    from alignx.models import DEFAULT_MODEL

    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model spec: {DEFAULT_MODEL} (offline default), "
                                                          "tiny-random, a local folder or a hub id")
    p.add_argument("--experts-dir", default=None, help="folder of expert adapters (default: assets/experts)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from alignx import distributed as dist

    quiet = not dist.is_main()          # under a launcher: logs, warnings and progress bars from rank 0 only
    if quiet:
        import os

        os.environ["TQDM_DISABLE"] = "1"
    logging.basicConfig(level=logging.ERROR if quiet else logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except AlignXError as exc:
        # The library's own errors (bad input, a missing file, an unknown name): one clear line.
        # Anything else (a shape bug, CUDA out of memory) propagates with its full traceback.
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
