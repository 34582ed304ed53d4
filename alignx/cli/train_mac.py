"""``train-mac``: Train_MAC, the NegotiaX circuit on each objective's own training data."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from alignx.errors import InvalidInput

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "assets" / "negotiax"


def register(sub) -> None:
    from alignx.cli import add_model_args
    from alignx.negotiax.config import HELP, VARIANTS

    p = sub.add_parser("train-mac", help="train the NegotiaX circuit (Module I pathways + Module II MAC)")
    p.add_argument("--preset", default="cpu", help="tiny | cpu (default) | paper (circuit and training)")
    p.add_argument("--variant", default="full", choices=[v for v in VARIANTS if v != "off"],
                   help="full, or an ablation: module1 (uniform fusion), module2 (no per-objective supervision), "
                        "frozen (W_q, W_k at random init)")
    p.add_argument("--leave-out", action="append", default=[], metavar="OBJECTIVE",
                   help="train without this objective (repeatable): the leave-one-out ablation")
    p.add_argument("--name", default=None, help="folder name under --out (default: full, the variant, or loo-OBJ)")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--objectives", default="harmless,helpful,honest")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--fork-layer", type=int, default=None, help=HELP["fork_layer"])
    p.add_argument("--rank", type=int, default=None, help=HELP["rank"])
    p.add_argument("--depth", type=int, default=None, help=HELP["depth"])
    p.add_argument("--pathway-rank", type=int, default=None, help=HELP["pathway_rank"])
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward passes (about 2x on a CPU "
                                                       "with AVX512-BF16 or AMX; refused where bf16 is not native)")
    p.add_argument("--load-in-4bit", action="store_true",
                   help="the frozen base in 4-bit NF4 (needs CUDA and bitsandbytes); the circuit trains in fp32")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in OUT/.work/NAME")
    p.add_argument("--harmless-contrast", type=float, default=0.0,
                   help="share of the harmless objective's rows replaced by CoCoNot pref compliant answers to "
                        "sensitive-looking benign prompts (0 = refusals only)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--summary", nargs="+", metavar="FOLDER", default=None,
                   help="train nothing: print the summary train-mac prints at its end (steps, wall time, mean loss "
                        "of the first and last 20 updates) for these trained circuit folders, one JSON line each")
    add_model_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from alignx import distributed as dist
    from alignx.models import load_model
    from alignx.negotiax.config import preset
    from alignx.negotiax.core import NegotiaX, register_points
    from alignx.negotiax.train import card_summary, objective_data, train_mac, train_preset

    if args.summary:
        from alignx.data.readers import read_json

        for folder in args.summary:
            card = read_json(Path(folder) / "card.json")     # errors name the file (missing, not JSON, ...)
            if not isinstance(card, dict):
                raise InvalidInput(f"{Path(folder) / 'card.json'}: expected a JSON object, got {type(card).__name__}")
            print(json.dumps({"circuit": str(folder), **card_summary(card)}))
        return 0
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    if not 0.0 <= args.harmless_contrast < 1.0:           # before the model loads
        raise InvalidInput(f"--harmless-contrast must be in [0, 1), got {args.harmless_contrast}")
    if args.harmless_contrast and ("harmless" not in objectives or "harmless" in args.leave_out):
        raise InvalidInput("--harmless-contrast mixes the harmless objective's rows, but harmless is not trained here")
    cfg = preset(args.preset, fork_layer=args.fork_layer, rank=args.rank, depth=args.depth,
                 pathway_rank=args.pathway_rank, seed=args.seed)
    tcfg = train_preset(args.preset, steps=args.steps, learning_rate=args.learning_rate, seed=args.seed,
                        bf16=args.bf16 or None)
    name = args.name or ("full" if args.variant == "full" and not args.leave_out
                         else f"loo-{'-'.join(args.leave_out)}" if args.leave_out else args.variant)
    if tcfg.bf16:                                          # before the model loads
        from alignx.models import check_bf16, pick_device

        check_bf16(pick_device(args.device))
    lm = load_model(args.model, device=args.device, load_in_4bit=args.load_in_4bit)
    register_points()
    nx = NegotiaX.fresh(lm.model, lm.tokenizer, objectives, cfg)
    provenance: dict = {}
    data = objective_data([o for o in objectives if o not in args.leave_out], args.data_dir, args.seed, provenance,
                          harmless_contrast=args.harmless_contrast)
    bar = tqdm(total=tcfg.steps, desc=f"Train_MAC {name}", unit="step", file=sys.stderr)
    command = "python -m alignx " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    path = train_mac(nx, data, cfg, tcfg, args.out, name, args.variant, args.leave_out, args.resume, command,
                     on_step=lambda s, loss: (bar.update(s - bar.n), bar.set_postfix(loss=f"{loss:.3f}")),
                     base_model=lm.name, provenance=provenance)
    bar.close()
    if dist.is_main():                                   # under a launcher: one report, from rank 0
        card = json.loads((path / "card.json").read_text())
        print(json.dumps(card_summary(card)))
        print(f"wrote {path}", file=sys.stderr)
    return 0
