"""``train-experts``: stage 1, one LoRA expert per axis on one frozen base, then the latent space."""
from __future__ import annotations

from alignx.errors import InvalidInput

import argparse
import shlex
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("train-experts", help="train one LoRA expert per axis and the shared latent space")
    p.add_argument("--base", default="smollm2-135m-instruct", help="base model spec (see --help of generate)")
    p.add_argument("--data-dir", default=None, help="data directory (default: $ALIGNX_DATA_DIR or ../shared/data)")
    p.add_argument("--axes", default="helpful,harmless,honest", help="comma-separated axes")
    p.add_argument("--out", required=True, help="output folder, e.g. runs/NAME (one sub-folder per expert)")
    p.add_argument("--preset", default="cpu", help="tiny | cpu | paper")
    p.add_argument("--max-steps", type=int, default=None, help="override the preset's optimizer steps")
    p.add_argument("--batch-size", type=int, default=None,
                   help="override the preset's global batch (= per-device batch x processes x accumulation)")
    p.add_argument("--per-device-batch", type=int, default=None, help="override the preset's rows per forward")
    p.add_argument("--gradient-checkpointing", action="store_true", default=None,
                   help="recompute activations in backward (on in the paper preset)")
    p.add_argument("--load-in-4bit", action="store_true",
                   help="QLoRA: load the base in 4-bit NF4 (needs CUDA and bitsandbytes)")
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--rows-per-axis", type=int, default=None)
    p.add_argument("--benign-mix", type=float, default=None, help="harmless: benign rows per refusal row")
    p.add_argument("--benign-nearest", type=float, default=None,
                   help="harmless: share of the benign rows that are the refusals' nearest Alpaca prompts")
    p.add_argument("--benign-truthfulqa", type=float, default=None,
                   help="harmless: share of the TruthfulQA training-half questions added as benign rows")
    p.add_argument("--benign-contrast", type=float, default=None,
                   help="harmless: share of TruthfulQA training-half statements put in the refusal set's "
                        "'Explain why ...' templates as benign rows, answered by the base model")
    p.add_argument("--template-refusals", type=int, default=None,
                   help="harmless: copies of every training refusal in the 'Explain why ...' templates to add")
    p.add_argument("--method", default="sft", choices=["sft", "dpo", "dpo+sft", "sft+dpo"],
                   help="sft: supervised on each axis's answers; dpo: DPO on the axis's preference pairs "
                        "(alignx.data.pairs, decontaminated); dpo+sft: DPO plus the NLL of the chosen answer; "
                        "sft+dpo: the SFT expert, then DPO from it")
    p.add_argument("--sft-experts", default=None,
                   help="sft+dpo: start DPO from the SFT expert already in DIR/<axis> (e.g. assets/experts) "
                        "instead of training one first")
    p.add_argument("--beta", type=float, default=None, help="DPO beta (default: the DPO preset's, 0.1)")
    p.add_argument("--max-pairs", type=int, default=1200,
                   help="DPO: training pairs per axis, shared equally over the pair sources (0 = all)")
    p.add_argument("--pairs-file", default=None,
                   help="DPO: a JSON / JSONL file of prompt, chosen, rejected (one axis) instead of the built-in pairs")
    p.add_argument("--pair-sources", default=None,
                   help="DPO: comma-separated pair sources to keep (e.g. coconot_pref,oktest: the harmless axis's "
                        "contrast pairs); default: every source of the axis")
    p.add_argument("--source-limit", type=int, default=None,
                   help="DPO: read at most this many rows of each pair source file (quick runs, tests)")
    p.add_argument("--resume", action="store_true",
                   help="continue a killed run: experts already finished in OUT are kept, an unfinished one "
                        "continues from its newest complete checkpoint in OUT/.work")
    p.add_argument("--no-latent", action="store_true", help="skip fitting the latent alignment space")
    p.add_argument("--latent-only", action="store_true", help="only (re)fit the latent space on OUT's experts")
    p.add_argument("--latent-sources", default="v1", choices=["v1", "v2"],
                   help="the latent heads' prompt sources (alignx.experts.latent.train_items): v1 = Alpaca, HH "
                        "helpful, safety-tuned-llamas, BeaverTails, TruthfulQA; v2 = the second-wave sources")
    p.add_argument("--feature-cache", action="store_true",
                   help="latent space: cache the adapters' features per prompt under ~/.cache/alignx/features")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run)
    e = sub.add_parser("export-experts", help="copy trained experts to a folder the app ships, adapters in fp16")
    e.add_argument("src", help="folder with trained experts (e.g. runs/NAME)")
    e.add_argument("dst", help="destination (e.g. assets/experts)")
    e.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    e.set_defaults(func=export)
    register_report(sub)


def export(args: argparse.Namespace) -> int:
    from alignx.experts.io import export_experts

    for path in export_experts(args.src, args.dst, args.dtype):
        print(f"exported {path}", file=sys.stderr)
    return 0


def finished(out: Path, axis: str) -> bool:
    """The ``axis`` expert of run ``out`` was written (adapter + card, swapped in whole) and no
    checkpoints of a later, unfinished training of it are left."""
    from alignx.experts.io import list_experts

    return axis in list_experts(out) and not (out / ".work" / axis).exists()


def run(args: argparse.Namespace) -> int:
    from alignx.data import AXES
    from alignx.experts.config import preset
    from alignx.models import load_model

    axes = [a.strip() for a in args.axes.split(",") if a.strip()]
    unknown = [a for a in axes if a not in AXES]
    if unknown:
        raise InvalidInput(f"unknown axis {unknown}; choose from {list(AXES)}")
    from alignx import distributed as dist

    cfg = preset(args.preset, max_steps=args.max_steps, learning_rate=args.learning_rate,
                 batch_size=args.batch_size, per_device_batch=args.per_device_batch,
                 gradient_checkpointing=args.gradient_checkpointing,
                 rows_per_axis=args.rows_per_axis, benign_mix=args.benign_mix,
                 benign_nearest=args.benign_nearest, benign_truthfulqa=args.benign_truthfulqa,
                 benign_contrast=args.benign_contrast, template_refusals=args.template_refusals)
    cfg.plan()                                           # a global batch the processes cannot share: fail now
    if args.pair_sources and (args.method == "sft" or args.pairs_file):
        raise InvalidInput("--pair-sources picks among the built-in DPO pairs: not with --method sft or --pairs-file")
    sft_inits = sft_expert_folders(args.sft_experts, axes, args.method) if args.sft_experts else {}
    command = "python -m alignx " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    say = (lambda msg: print(msg, file=sys.stderr)) if dist.is_main() else (lambda msg: None)
    if not args.latent_only:
        from alignx.experts.train import train_expert

        for axis in axes:
            if args.resume and finished(Path(args.out), axis):
                say(f"== the {axis} expert is finished in {args.out}/{axis}: kept (--resume)")
                continue
            say(f"== training the {axis} expert ({args.method}, {args.preset} preset, {dist.world_size()} "
                f"process(es)) -> {args.out}/{axis}")
            lm = load_model(args.base, device=args.device, load_in_4bit=args.load_in_4bit)
            if args.method == "sft":
                path = train_expert(lm, axis, args.out, cfg, data_dir=args.data_dir, resume=args.resume,
                                    command=command)
            else:
                path = _train_dpo(args, lm, axis, cfg, command, sft_inits.get(axis))
            say(f"saved {path}")
    if not args.no_latent and dist.is_main():           # one process fits and writes the latent space
        from alignx.experts.latent_fit import fit_latent_space

        lm = load_model(args.base, device=args.device)
        report = fit_latent_space(lm, args.out, data_dir=args.data_dir, seed=cfg.seed, command=command,
                                  sources=args.latent_sources, feature_cache=args.feature_cache)
        print(f"latent space: nearest-centroid accuracy on held-out prompts "
              f"{report['heldout_nearest_centroid_accuracy']:.3f}", file=sys.stderr)
    return 0


def sft_expert_folders(root: str | Path, axes: list[str], method: str) -> dict[str, Path]:
    """``--sft-experts``: each axis's existing SFT expert folder, checked before any model loads:
    only with ``sft+dpo``, and every axis needs ``ROOT/<axis>`` with an adapter and a card of that axis."""
    from alignx.experts.io import read_card

    if method != "sft+dpo":
        raise InvalidInput(f"--sft-experts goes with --method sft+dpo (got --method {method})")
    folders = {}
    for axis in axes:
        folder = Path(root) / axis
        if not (folder / "adapter_config.json").exists() or not (folder / "card.json").exists():
            raise InvalidInput(f"--sft-experts {root}: {folder} has no adapter_config.json and card.json "
                               f"(not an expert folder for the {axis} axis)")
        card_axis = read_card(folder).get("axis")             # a clear error for an unreadable card
        if card_axis != axis:
            raise InvalidInput(f"--sft-experts: {folder / 'card.json'} is the {card_axis!r} expert, not {axis!r}")
        folders[axis] = folder
    return folders


def _train_dpo(args: argparse.Namespace, lm, axis: str, cfg, command: str, sft_init: Path | None = None) -> Path:
    """One axis by DPO (``alignx.experts.dpo``); ``sft+dpo`` goes on from ``sft_init`` (``--sft-experts``)
    or trains the SFT expert first, into ``OUT/.sft/<axis>`` (a dot folder: never listed as an expert)."""
    from alignx.experts.dpo import preference_data, preset as dpo_preset, train_dpo_expert
    from alignx.experts.train import train_expert
    from alignx.models import load_model

    dcfg = dpo_preset(args.preset, global_batch=args.batch_size, per_device_batch=args.per_device_batch,
                      beta=args.beta, max_steps=args.max_steps, learning_rate=args.learning_rate,
                      gradient_checkpointing=args.gradient_checkpointing or None)
    if args.pairs_file:
        from alignx.data.pairs import load_pair_file

        from alignx.data.decontam import decontaminate

        removed: dict[str, int] = {}
        records = decontaminate(load_pair_file(args.pairs_file, axis=axis), "file", args.data_dir, removed)
        pairs, sources = [(r.prompt, r.chosen, r.rejected) for r in records], {"file": len(records)}
    else:
        pairs, sources, removed = preference_data(lm, axis, args.data_dir, args.max_pairs or None, dcfg.seed,
                                                  limit=args.source_limit,
                                                  cache=Path(args.out) / ".work" / f"{axis}-base-answers.json",
                                                  pair_sources=[s for s in (args.pair_sources or "").split(",") if s])
    init = sft_init
    if args.method == "sft+dpo" and init is None:
        sft_dir = Path(args.out) / ".sft"
        init = sft_dir / axis
        if not (args.resume and (init / "card.json").exists()):
            train_expert(lm, axis, sft_dir, cfg, data_dir=args.data_dir, resume=args.resume, command=command)
        lm = load_model(args.base, device=args.device, load_in_4bit=args.load_in_4bit)
    return train_dpo_expert(lm, axis, pairs, args.out, dcfg, recipe=args.method, init_adapter=init,
                            sources=sources, removed=removed, resume=args.resume, command=command)


def register_report(sub) -> None:
    p = sub.add_parser("report-experts", help="stage-1 report: base and each expert on every axis (held-out data)")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--experts-dir", default=None, help="default: assets/experts")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--modes", default=None,
                   help="comma-separated modes (default: base and every expert); also mocae-logit, "
                        "mocae-adapter and uniform-logit / uniform-adapter (the experts at equal fixed weights)")
    p.add_argument("--judge", default="offline", help="judge for refusal / unsafe verdicts (offline | api | hf)")
    p.add_argument("--per-set", type=int, default=40, help="prompts per safety set (0 = all)")
    p.add_argument("--mc-n", type=int, default=0, help="TruthfulQA test-half MC questions (0 = all)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--split", default="test", choices=["test", "validation"],
                   help="safety rows: the per-set test sample, or up to --per-set rows outside it (to choose a recipe)")
    p.add_argument("--safety-only", action="store_true", help="only the refusal / unsafe / over-refusal columns")
    p.add_argument("--out", required=True, help="report JSON path")
    p.set_defaults(func=report)


def report(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from alignx.eval.judges.base import get_judge
    from alignx.experts.io import DEFAULT_EXPERTS_DIR, write_json_atomic
    from alignx.experts.report import stage1_report
    from alignx.studio import Studio

    studio = Studio.load(args.model, args.experts_dir or DEFAULT_EXPERTS_DIR)
    modes = args.modes.split(",") if args.modes else ["base"] + [f"expert:{n}" for n in studio.experts]
    out = Path(args.out)
    command = "python -m alignx " + " ".join(sys.argv[1:])
    previous = None
    if out.exists():
        try:
            previous = json.loads(out.read_text())
        except json.JSONDecodeError as e:
            raise SystemExit(f"{out}: not a report JSON ({e}); move it away or pick another --out")

    def save(rep: dict) -> None:
        write_json_atomic(out, {**rep, "command": command})

    rep = stage1_report(studio, modes, get_judge(args.judge), args.data_dir, args.per_set or None,
                        args.mc_n or None, max_new_tokens=args.max_new_tokens,
                        progress=lambda m: print(m, file=sys.stderr, flush=True),
                        previous=previous, checkpoint=save, split=args.split, safety_only=args.safety_only)
    rep["command"] = command
    save(rep)
    print(json.dumps({m: {k: round(v["value"], 3) for k, v in r.items() if isinstance(v, dict) and "value" in v}
                      for m, r in rep["modes"].items()}, indent=1))
    return 0
