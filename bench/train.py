"""Training throughput: the AlignX expert path vs stock transformers Trainer, in one run.

Same model (LoRA config of the chosen preset), same data (the helpful axis), same batch and
gradient accumulation. The AlignX path adds bf16 autocast where the CPU/GPU supports it and
length-grouped batches; the stock path is Trainer with default arguments. Each path runs one
warm-up optimizer step, then STEPS timed steps; tokens are non-padding input tokens.

    python bench/train.py [--model smollm2-135m-instruct] [--steps 4] [--preset cpu]

Last line: one JSON object with tokens/s of both and ``ratio`` = alignx / stock (>= 1.0 is the target).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(spec: str, cfg, data_dir, steps: int, alignx_path: bool) -> float:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from alignx.experts.sft import PadCollator, axis_data, tokenize
    from alignx.experts.train import lora_model, training_arguments, use_bf16
    from alignx.models import load_model

    lm = load_model(spec)
    n_rows = cfg.batch_size * (steps + 1)
    cfg = replace(cfg, max_steps=steps + 1, rows_per_axis=n_rows, save_steps=10**6, logging_steps=10**6)
    ds = tokenize(lm.tokenizer, axis_data("helpful", cfg, data_dir).train, cfg.max_length)
    model = lora_model(lm, cfg)
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    if alignx_path:
        args = training_arguments(lm, cfg, work, use_bf16(lm, cfg))
    else:
        args = TrainingArguments(output_dir=str(work), per_device_train_batch_size=cfg.per_device_batch,
                                 gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.learning_rate,
                                 weight_decay=cfg.weight_decay, max_steps=cfg.max_steps, save_strategy="no",
                                 report_to=[], use_cpu=lm.device.type == "cpu", remove_unused_columns=False,
                                 include_num_input_tokens_seen="non_padding", disable_tqdm=True, seed=cfg.seed)
    marks: list[tuple[float, int]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            marks.append((time.perf_counter(), state.num_input_tokens_seen))

    Trainer(model=model, args=args, train_dataset=ds, data_collator=PadCollator(lm.tokenizer.pad_token_id),
            callbacks=[Clock()]).train()
    (t0, n0), (t1, n1) = marks[0], marks[-1]
    return (n1 - n0) / (t1 - t0)


def main() -> None:
    from alignx.experts.config import preset

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--data-dir", default=None)
    a = p.parse_args()
    cfg = preset(a.preset)
    stock = measure(a.model, cfg, a.data_dir, a.steps, alignx_path=False)
    ours = measure(a.model, cfg, a.data_dir, a.steps, alignx_path=True)
    print(f"stock Trainer: {stock:.1f} tok/s   alignx path: {ours:.1f} tok/s", file=sys.stderr)
    print(json.dumps({"model": a.model, "preset": a.preset, "steps": a.steps, "stock_tokens_per_s": round(stock, 1),
                      "alignx_tokens_per_s": round(ours, 1), "ratio": round(ours / stock, 3)}))


if __name__ == "__main__":
    main()
