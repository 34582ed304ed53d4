"""``generate``: stream one answer, or answer a prompts file in batches to JSONL."""
from __future__ import annotations

from alignx.atomic import write_jsonl as write_jsonl_atomic   # re-export: one JSON object per line
from alignx.errors import InvalidInput

import argparse
import sys
from pathlib import Path


def register(sub) -> None:
    from alignx.cli import add_mode_arg, add_model_args

    p = sub.add_parser("generate", help="answer a prompt (streamed) or a file of prompts (batched, JSONL out)")
    p.add_argument("prompt", nargs="?", help="the prompt; omit with --prompts-file")
    p.add_argument("--prompts-file", help="one prompt per line (blank lines skipped)")
    p.add_argument("--out", help="JSONL output for --prompts-file: one {prompt, output, mode} per line")
    add_mode_arg(p)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    from alignx.memory import parse_batch_size

    p.add_argument("--batch-size", type=parse_batch_size, default="auto",
                   help="prompts per batch: auto (default) = 8 on a CPU, sized to the GPU's free memory on a GPU")
    add_model_args(p)
    p.set_defaults(func=run)


def read_prompts(path: str) -> list[str]:
    from alignx.data import DataError
    from alignx.data.readers import reading

    file = Path(path)
    if not file.exists():
        raise DataError(file, "file not found")
    if not file.is_file():
        raise DataError(file, "not a regular file (a folder or a device?)")
    with reading(file):
        prompts = [line.strip() for line in file.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    if not prompts:
        raise DataError(file, "no prompts (the file is empty)")
    return prompts


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from alignx import methods
    from alignx.experts.io import DEFAULT_EXPERTS_DIR
    from alignx.generation import Sampling, check_text, has_visible_text
    from alignx.studio import Studio

    if (args.prompt is None) == (args.prompts_file is None):
        raise InvalidInput("give either a prompt or --prompts-file")
    if args.prompt is not None:
        check_text(args.prompt)
        if not has_visible_text(args.prompt):
            raise InvalidInput("the prompt is empty (only whitespace or control characters)")
    if args.prompts_file and not args.out:
        raise InvalidInput("--prompts-file needs --out FILE.jsonl")
    sampling = Sampling(args.max_new_tokens, args.temperature, args.top_p, args.seed)
    prompts = read_prompts(args.prompts_file) if args.prompts_file else None
    studio = Studio.load(args.model, args.experts_dir or DEFAULT_EXPERTS_DIR, device=args.device)
    policy = methods.policy(studio, args.mode)
    if prompts is None:
        for ev in policy.stream(args.prompt, sampling):
            sys.stdout.write(ev.text)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return 0
    batch_size = args.batch_size
    if batch_size == "auto":
        from alignx.generation import chat_prompt_ids
        from alignx.memory import auto_batch_size

        fused = args.mode != "base" and not args.mode.startswith("expert:")
        longest = max(len(chat_prompt_ids(studio.tokenizer, p)) for p in prompts) + sampling.max_new_tokens
        batch_size = auto_batch_size(studio.model, longest, 1 + len(studio.experts or {}) if fused else 1)
    bar = tqdm(total=len(prompts), desc=f"generate [{args.mode}]", unit="prompt")
    outputs = policy.generate(prompts, sampling, batch_size=batch_size, on_done=lambda i, t: bar.update(1))
    bar.close()
    rows = [{"prompt": p, "output": o, "mode": args.mode} for p, o in zip(prompts, outputs)]
    write_jsonl_atomic(Path(args.out), rows)
    print(f"wrote {len(rows)} answers to {args.out}", file=sys.stderr)
    return 0
