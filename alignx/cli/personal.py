"""``personal train|eval|infer``: AlignX-Family on P-Soups (ICA / PBA adapters by DPO, Alignment
Accuracy per persona, preference inference)."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "assets" / "personal"


def register(sub) -> None:
    from alignx.cli import add_model_args

    p = sub.add_parser("personal", help="personalized alignment (AlignX-Family): train | eval | infer")
    ps = p.add_subparsers(dest="personal_command", metavar="ACTION", required=True)

    t = ps.add_parser("train", help="DPO-train the ICA or PBA adapter on the P-Soups training halves")
    t.add_argument("--method", required=True, choices=["ica", "pba"])
    t.add_argument("--preset", default="cpu", help="tiny | cpu (default) | paper")
    t.add_argument("--out", default=str(DEFAULT_OUT), help="folder of the adapters (default assets/personal)")
    t.add_argument("--limit", type=int, default=None, help="at most this many training pairs per file (balanced over personas, seeded)")
    t.add_argument("--max-steps", type=int, default=None, help="override the preset's max_steps")
    t.add_argument("--learning-rate", type=float, default=None, help="override the preset's learning rate")
    t.add_argument("--epochs", type=float, default=None, help="override the preset's epochs")
    t.add_argument("--sft-weight", type=float, default=None, help="override the preset's SFT term weight")
    t.add_argument("--batch-size", type=int, default=None, help="override the preset's pairs per forward and device")
    t.add_argument("--grad-accum", type=int, default=None,
                   help="override the preset's accumulation; global batch = batch-size x grad-accum on any "
                        "number of processes")
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in OUT/.work")
    t.add_argument("--load-in-4bit", action="store_true",
                   help="QLoRA: the base in 4-bit NF4 (needs CUDA and bitsandbytes)")

    e = ps.add_parser("eval", help="Alignment Accuracy per persona on the P-Soups evaluation halves")
    e.add_argument("--out", required=True, help="folder for report.json and report.md")
    e.add_argument("--methods", default=None, help="comma-separated (default: every method available)")
    e.add_argument("--adapters", default=str(DEFAULT_OUT), help="folder of the trained adapters")
    e.add_argument("--limit", type=int, default=None, help="at most this many evaluation pairs per file (balanced over personas, seeded)")
    e.add_argument("--beta", type=float, default=0.1)
    e.add_argument("--bootstrap", type=int, default=1000)
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--bf16", action="store_true", help="score in bfloat16 autocast (about 2x faster on a CPU with "
                                                       "AVX512-BF16 or AMX, refused elsewhere; reference and methods alike)")

    i = ps.add_parser("infer", help="fit the preference-direction probe on the training users; report how well "
                                   "inferred profiles identify personas and predict held-out choices")
    i.add_argument("--out", default=str(DEFAULT_OUT), help="the probe is saved in OUT/probe (default assets/personal)")
    i.add_argument("--limit", type=int, default=None, help="at most this many users per half and file")
    for q in (t, e, i):
        q.add_argument("--data-dir", default=None, help="data directory (default ../shared/data)")
        q.add_argument("--seed", type=int, default=0, help="split / training seed")
        add_model_args(q)
    p.set_defaults(func=run)


def _lm(args):
    from alignx.models import load_model

    return load_model(args.model, device=args.device, load_in_4bit=getattr(args, "load_in_4bit", False))


def run(args: argparse.Namespace) -> int:
    from alignx.personal.data import load_psoups

    splits = load_psoups(args.data_dir, seed=args.seed)
    command = "python -m alignx " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    return {"train": _train, "eval": _eval, "infer": _infer}[args.personal_command](args, splits, command)


def _train(args, splits, command) -> int:
    from tqdm import tqdm

    from alignx.personal.prompts import load_dims
    from alignx.personal.train import preset, train_personal

    cfg = preset(args.preset, max_steps=args.max_steps, learning_rate=args.learning_rate, epochs=args.epochs,
                 sft_weight=args.sft_weight, seed=args.seed, batch_size=args.batch_size, grad_accum=args.grad_accum)
    from alignx.personal.evaluate import balanced

    from alignx.errors import InvalidInput

    train = [ex for tr, _ in splits.values() for ex in balanced(tr, args.limit, args.seed)]
    for name, (_, ev) in splits.items():             # within a file, no evaluation prompt is trained on
        leaked = sorted({ex.prompt for ex in train if ex.source == name} & {x.prompt for x in ev})
        if leaked:
            raise InvalidInput(f"{name}: {len(leaked)} evaluation-half prompt(s) in the training pairs, "
                               f"e.g. {leaked[0][:80]!r}")
    held_out = {name: {"evaluation_rows_removed": len(ev), "evaluation_prompts_removed": len({x.prompt for x in ev}),
                       "split": f"by prompt, seed {args.seed}, share 0.5"} for name, (_, ev) in splits.items()}
    bar = tqdm(desc=f"DPO {args.method}", unit="step")
    path = train_personal(_lm(args), args.method, train, args.out, cfg, load_dims(args.data_dir),
                          resume=args.resume, command=command, progress=False, held_out=held_out,
                          on_log=lambda step, loss, acc: (bar.update(step - bar.n),
                                                          bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.2f}")))
    bar.close()
    from alignx import distributed as dist

    if dist.is_main():                                   # under a launcher: one report, from rank 0
        card = json.loads((path / "card.json").read_text())
        print(json.dumps({k: card[k] for k in ("method", "steps", "train_loss", "final", "wall_time_s", "processes")},
                         indent=1))
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _eval(args, splits, command) -> int:
    from alignx.atomic import write_json, write_text
    from alignx.models import check_bf16, pick_device
    from alignx.personal.evaluate import DEFAULT_METHODS, balanced, evaluate, markdown
    from alignx.personal.family import available
    from alignx.studio import Studio

    if args.bf16:                                          # before the model loads
        check_bf16(pick_device(args.device))
    studio = Studio.load(args.model, None, device=args.device)
    studio.extras["personal_dir"] = args.adapters
    trained = {m for m in available(studio)}
    methods = args.methods.split(",") if args.methods else [m for m in DEFAULT_METHODS
                                                            if not m.startswith("personal-") or m in trained]
    inferred = None
    if any(m.endswith("-inferred") for m in methods):
        from alignx.personal.infer import DirectionProbe, pair_features

        probe = DirectionProbe.load(Path(args.adapters) / "probe")
        inferred = {}
        for name, (_, ev) in splits.items():
            rows = balanced(ev, args.limit, args.seed)
            inferred[name] = probe.predict(pair_features(studio.model, studio.tokenizer, [x.user for x in rows])).tolist()
    report = evaluate(studio, splits, methods, beta=args.beta, batch_size=args.batch_size, n_boot=args.bootstrap,
                      seed=args.seed, limit=args.limit, inferred=inferred,
                      log=lambda m: print(m, file=sys.stderr, flush=True), bf16=args.bf16)
    report.update(command=command, split={"seed": args.seed, "by": "prompt", "share": 0.5})
    out = Path(args.out)
    write_json(out / "report.json", report)
    write_text(out / "report.md", markdown(report) + "\n")
    print(markdown(report))
    print(f"wrote {out / 'report.json'} ({report['wall_time_s']} s)", file=sys.stderr)
    return 0


def _infer(args, splits, command) -> int:
    from alignx.personal.infer import run_inference

    lm = _lm(args)
    report = run_inference(lm.model, lm.tokenizer, splits, Path(args.out), limit=args.limit, seed=args.seed,
                           command=command, data_dir=args.data_dir)
    print(json.dumps(report, indent=1))
    return 0
