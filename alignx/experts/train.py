"""Train one LoRA expert per axis on a frozen base with transformers' Trainer.

Checkpoints go to ``<out>/.work/<axis>/checkpoint-N`` every ``save_steps`` (``resume=True``
continues from the newest complete one, ``alignx.checkpoints.last_checkpoint``); the finished
expert is written to a temporary folder and renamed to ``<out>/<axis>`` in one step, so a killed
run never leaves a complete-looking expert. The LoRA init is seeded with ``cfg.seed``: a run
resumed after a SIGKILL ends with the same adapter as an uninterrupted one (tests/test_crash_resume.py).

Under ``accelerate launch`` (W processes) the Trainer runs DDP (or the DeepSpeed / FSDP plugin of
the launch config): the global batch stays ``batch_size`` (per-device x W x accumulation, see
``ExpertConfig.plan``), the length-grouped order is drawn for the global batch (so it does not
depend on W), and only the main process writes the expert and removes the work folder.
"""
from __future__ import annotations

from alignx.errors import AlignXRuntimeError, InvalidInput

import logging
import math
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from alignx import distributed as dist
from alignx.cards import save_adapter_folder
from alignx.checkpoints import TrainingClock, last_checkpoint, run_mean_loss
from alignx.experts.config import ExpertConfig
from alignx.experts.sft import PadCollator, axis_data, contrast_prompts, tokenize

log = logging.getLogger(__name__)
LossCallback = Callable[[str, int, float], None]   # (axis, step, loss)


def lora_model(lm, cfg: ExpertConfig):
    """The peft LoRA model over ``lm.model`` (seeded init); a 4-bit base is prepared for k-bit
    training first (peft ``prepare_model_for_kbit_training``: norms in fp32, input grads on)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if getattr(lm.model, "is_quantized", False):
        prepare_model_for_kbit_training(lm.model, use_gradient_checkpointing=cfg.gradient_checkpointing,
                                        gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(cfg.seed)                     # the LoRA A init: the same on any number of processes
    n_layers = int(lm.model.config.num_hidden_layers)
    first = n_layers - max(1, round(n_layers * cfg.layers_fraction))
    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                      target_modules=list(cfg.target_modules), task_type="CAUSAL_LM",
                      layers_to_transform=list(range(first, n_layers)) if first > 0 else None)
    return get_peft_model(lm.model, lora)


def use_bf16(lm, cfg) -> bool:
    """bf16 autocast: ``cfg.bf16`` when set, else where the GPU or CPU supports it (experts and DPO)."""
    if cfg.bf16 is not None:
        return cfg.bf16
    from alignx.models import native_bf16

    return native_bf16(lm.device) and (lm.device.type == "cuda" or lm.dtype == torch.float32)


@torch.no_grad()
def response_loss(model, dataset, collator, batch_size: int = 8, bf16: bool = False) -> float:
    """Mean token NLL on the response tokens of ``dataset`` (the experts' held-out loss)."""
    model.eval()
    device_type = next(model.parameters()).device.type
    ctx = torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16)
    total, count = 0.0, 0
    for s in range(0, len(dataset), batch_size):
        batch = collator([dataset[i] for i in range(s, min(s + batch_size, len(dataset)))])
        batch = {k: v.to(next(model.parameters()).device) for k, v in batch.items()}
        with ctx:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1),
                                                ignore_index=-100, reduction="sum")
        total += float(nll)
        count += int((labels != -100).sum())
    return total / max(count, 1)


class TrainingCancelled(AlignXRuntimeError):
    """Raised when ``should_stop`` asked training to stop; the checkpoint is kept for ``resume``."""


def _callbacks(axis: str, on_loss: LossCallback | None, should_stop: Callable[[], bool] | None):
    from transformers import TrainerCallback

    class Hook(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if on_loss and logs and "loss" in logs:
                on_loss(axis, state.global_step, float(logs["loss"]))

        def on_step_end(self, args, state, control, **kw):
            if should_stop and should_stop():
                control.should_save = True
                control.should_training_stop = True

    return [Hook()]


def global_batch_trainer():
    """A ``transformers.Trainer`` whose training order is the same on 1 or W processes:

    * the length-grouped mega-batches are drawn for the *global* batch B (per-device x processes x
      accumulation), not the per-device one (the launcher's dataloader then hands out consecutive
      per-device slices of that order: every optimizer batch holds the rows a single process sees);
    * each epoch keeps whole global batches only (its last n mod B rows of the order are left out; a
      dataset smaller than B is one short batch), because a launcher would pad a short last batch
      with repeated rows that a single process does not see."""
    from transformers import Trainer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class WholeBatches(LengthGroupedSampler):
        def __init__(self, batch: int, dataset):
            super().__init__(batch, dataset=dataset, model_input_name="input_ids")
            n = len(self.lengths)
            self.keep = n - n % batch if n >= batch else n

        def __len__(self):
            return self.keep

        def __iter__(self):
            return iter(list(super().__iter__())[:self.keep])

    class GlobalBatchTrainer(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            ds = train_dataset if train_dataset is not None else self.train_dataset
            if self.args.train_sampling_strategy != "group_by_length" or ds is None:
                return super()._get_train_sampler(train_dataset)
            return WholeBatches(self.args.train_batch_size * self.args.gradient_accumulation_steps
                                * self.args.world_size, ds)

    return GlobalBatchTrainer


def training_arguments(lm, cfg: ExpertConfig, work: Path, bf16: bool):
    """The Trainer arguments of an expert run (also used by bench/train.py)."""
    from transformers import TrainingArguments

    per_device, accum = cfg.plan()
    return TrainingArguments(
        output_dir=str(work), per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accum, learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        warmup_steps=cfg.warmup_ratio, lr_scheduler_type=cfg.lr_scheduler, optim="adamw_torch",
        logging_steps=cfg.logging_steps, save_steps=cfg.save_steps, save_total_limit=2,
        train_sampling_strategy="group_by_length", include_num_input_tokens_seen="non_padding",
        report_to=[], seed=cfg.seed, data_seed=cfg.seed,
        dataloader_num_workers=0, use_cpu=lm.device.type == "cpu", remove_unused_columns=False,
        disable_tqdm=not sys.stderr.isatty(), bf16=bf16,
        gradient_checkpointing=cfg.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        ddp_find_unused_parameters=False,            # every LoRA weight gets a gradient every step
    )


def self_distill(lm, prompts: list[str], max_new_tokens: int = 96) -> list[tuple[str, str]]:
    """(prompt, the base model's greedy answer), for the prompts the base answers (a base refusal
    is no target for a benign row; cut answers end at the last full sentence)."""
    from alignx.eval.refusal import is_refusal
    from alignx.generation import Sampling
    from alignx.policy import SinglePolicy

    mine = dist.split_batches(prompts, 16)            # whole batches per process: the one-process answers
    answers = dist.gather(SinglePolicy(lm.model, lm.tokenizer).generate(mine, Sampling(max_new_tokens=max_new_tokens),
                                                                        batch_size=16))
    out = []
    for p, a in zip(prompts, answers):
        a = a.strip()
        cut = max(a.rfind(". "), a.rfind(".\n"))
        a = a if a.endswith((".", "!", "?")) or cut < 0 else a[:cut + 1]
        if a and not is_refusal(a):
            out.append((p, a))
    return out


def train_expert(lm, axis: str, out_dir: str | Path, cfg: ExpertConfig, data_dir=None, resume: bool = False,
                 on_loss: LossCallback | None = None, should_stop: Callable[[], bool] | None = None,
                 command: str | None = None, pairs: list[tuple[str, str]] | None = None,
                 name: str | None = None) -> Path:
    """Train the ``axis`` expert on ``lm`` (a fresh LoadedModel: LoRA layers are injected into it).

    ``pairs`` replaces the axis's built-in data (an uploaded file); ``name`` is the expert's folder
    name (default: the axis). ``on_loss(axis, step, loss)`` is called at every logged step and
    ``should_stop()`` after every step (cancel: the checkpoint is kept, ``TrainingCancelled``)."""
    name = name or axis
    if not name.replace("_", "").replace("-", "").isalnum():
        raise InvalidInput(f"expert name {name!r}: use letters, digits, '-' and '_' only")
    from transformers import set_seed

    out_dir = Path(out_dir)
    work = out_dir / ".work" / name
    per_device, accum = cfg.plan()                   # checks the global batch against the processes first
    if not resume and work.exists() and dist.is_main():
        shutil.rmtree(work)
    dist.barrier()
    data = axis_data(axis, cfg, data_dir, pairs)
    if axis == "harmless" and pairs is None and cfg.benign_contrast > 0:
        contrast = self_distill(lm, contrast_prompts(cfg, data_dir, data.removed))
        data.train = data.train + contrast
        random.Random(cfg.seed).shuffle(data.train)
        data.sources["contrast_benign_self_distilled"] = len(contrast)
    tok = lm.tokenizer
    train_ds = tokenize(tok, data.train, cfg.max_length)
    held_ds = tokenize(tok, data.heldout, cfg.max_length)
    collator = PadCollator(tok.pad_token_id)
    set_seed(cfg.seed)                               # the LoRA init draws from the global RNG: same seed, same expert
    model = lora_model(lm, cfg)
    bf16 = use_bf16(lm, cfg)
    with model.disable_adapter():
        base_heldout = response_loss(model, held_ds, collator, bf16=bf16)

    args = training_arguments(lm, cfg, work, bf16)
    trainer = global_batch_trainer()(model=model, args=args, train_dataset=train_ds, data_collator=collator,
                                     callbacks=_callbacks(axis, on_loss, should_stop))
    checkpoint = last_checkpoint(work) if resume else None      # torn checkpoints of a killed save skipped
    clock = TrainingClock.resuming(checkpoint)                  # training seconds over every process
    trainer.add_callback(clock.callback())
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    wall = clock.this_process()
    if should_stop and should_stop():
        log.warning("training of %s cancelled at step %d; checkpoint kept in %s (use --resume)",
                    axis, trainer.state.global_step, work)
        raise TrainingCancelled(f"training of {axis} cancelled at step {trainer.state.global_step}")
    total = clock.total()                                       # None: a checkpoint from before the clock
    heldout = response_loss(trainer.model_wrapped, held_ds, collator, bf16=bf16)   # through DDP / ZeRO / FSDP
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    mean_loss = run_mean_loss(trainer.state.log_history)     # the whole run's, resumed or not
    card = {
        "kind": "alignx-expert", "name": name, "axis": axis, "base_model": lm.name, "base_source": lm.source,
        "data": {"sources": data.sources, "eval_prompts_removed": data.removed,
                 "train_rows": len(data.train), "train_examples": len(train_ds),
                 "heldout_rows": len(held_ds), "data_dir": str(data_dir) if data_dir else None},
        "hyperparameters": dict(cfg.to_dict(), bf16_autocast=bf16),
        "processes": dict(dist.describe(), per_device_batch=per_device, grad_accum=accum,
                          global_batch=per_device * dist.world_size() * accum),
        "steps": trainer.state.global_step,
        "train_tokens": int(trainer.state.num_input_tokens_seen),
        "tokens_per_second": (round(trainer.state.num_input_tokens_seen / max(total, 1e-9), 1)   # the whole
                              if total is not None else None),                                # run's tokens
        "losses": {"first_logged": losses[0] if losses else None, "final_logged": losses[-1] if losses else None,
                   "train_loss_mean": result.training_loss if mean_loss is None else mean_loss,
                   "heldout_response_loss": heldout,
                   "heldout_response_loss_base": base_heldout,
                   "heldout_perplexity": math.exp(min(heldout, 50))},
        "loss_log": [{"step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history if "loss" in h],
        "wall_time_s": total, "wall_time_s_last_process": round(wall, 1),
        "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    final = out_dir / name                           # replacing it drops a stale latent head too
    state = dist.trained_state_dict(trainer)         # every process: gathers ZeRO-3 / FSDP shards
    if dist.is_main():                               # one writer; the others wait for the folder
        save_adapter_folder(model, state, final, card)   # adapter, card.json, README.md; swapped in when complete
        shutil.rmtree(work, ignore_errors=True)
    dist.barrier()
    model.unload()                                   # give the base back without LoRA layers
    return final
