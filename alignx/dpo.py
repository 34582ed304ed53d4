"""DPO on a frozen base with a peft LoRA and TRL's ``DPOTrainer``: the one runner that both the
stage-1 experts (``alignx.experts.dpo``) and the personalized adapters (``alignx.personal.train``)
use. DPO (Rafailov et al. 2023) minimises, over pairs (x, y_c, y_r),

    L = -log sigmoid( beta [ (log pi(y_c | x) - log pi_ref(y_c | x)) - (log pi(y_r | x) - log pi_ref(y_r | x)) ] )
        [+ w_sft * NLL(y_c | x)]

with pi_ref the frozen base for a fresh LoRA (the LoRA disabled: TRL needs no second model for a
peft model), or a frozen copy of the starting adapter when ``model`` already holds one, and
the optional NLL term of the chosen answer (``sft_weight``; TRL's ``loss_type=["sigmoid", "sft"]``,
the RPO objective of Pang et al. 2024). Checkpoints go to ``work`` every ``save_steps`` updates;
``resume=True`` continues from the newest complete one (``alignx.checkpoints.last_checkpoint``),
a fresh run clears them; ``save_adapter`` builds the finished adapter aside and swaps it in, so a
killed run never leaves a complete-looking adapter. Under ``accelerate launch`` the DPOTrainer
runs DDP (or the launch config's DeepSpeed / FSDP) with the preset's batch x accumulation as the
global batch (``alignx.distributed.batch_plan``); only the main process writes.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

from alignx import distributed as dist
from alignx.errors import InvalidInput

HELP = {
    "rank": "LoRA rank r", "alpha": "LoRA alpha (scaling alpha / r)", "dropout": "LoRA dropout",
    "target_modules": "linear layers that get a LoRA", "beta": "DPO beta: strength of the KL anchor to pi_ref",
    "learning_rate": "AdamW learning rate", "epochs": "passes over the training pairs",
    "batch_size": "pairs per forward on one device (the global batch batch_size x grad_accum is kept on any "
                  "number of processes: alignx.distributed.batch_plan)",
    "grad_accum": "steps accumulated per update (on one process)",
    "max_length": "prompt + response tokens kept (longer: the start of the prompt is cut)",
    "sft_weight": "weight of the NLL of the chosen answer added to the DPO loss (0 = pure DPO)",
    "min_pairs": "ICA: fewest history pairs sampled per training prompt (the paper: 0)",
    "max_steps": "stop after this many updates (-1 = the epochs)", "save_steps": "checkpoint every N updates",
    "warmup_ratio": "share of updates with a linear warm-up", "seed": "seed for LoRA init, order and history samples",
    "layers_fraction": "LoRA only in the top share of the layers (backward stops there: cheaper on a CPU)",
    "bf16": "bfloat16 autocast (None: where the CPU or GPU supports it)",
    "gradient_checkpointing": "recompute activations in the backward pass (less memory, one more forward)",
}
LossLog = Callable[[int, float, float], None]          # (step, loss, reward accuracy)


@dataclass(frozen=True)
class DPOPreset:
    name: str = "cpu"
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    beta: float = 0.1
    learning_rate: float = 2e-4
    epochs: float = 1.0
    batch_size: int = 4
    grad_accum: int = 2
    max_length: int = 640
    sft_weight: float = 0.0
    min_pairs: int = 1
    max_steps: int = -1
    save_steps: int = 20
    warmup_ratio: float = 0.1
    layers_fraction: float = 1.0
    bf16: bool | None = None
    gradient_checkpointing: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("rank", "alpha", "batch_size", "grad_accum", "max_length", "save_steps"):
            if int(getattr(self, name)) < 1:
                raise InvalidInput(f"preset {self.name!r}: {name} must be >= 1, got {getattr(self, name)}")
        if not self.beta > 0 or not self.learning_rate > 0 or not self.epochs > 0:
            raise InvalidInput(f"preset {self.name!r}: beta, learning_rate and epochs must be > 0")
        if not 0 < self.layers_fraction <= 1:
            raise InvalidInput(f"preset {self.name!r}: layers_fraction must be in (0, 1], got {self.layers_fraction}")
        if not 0 <= self.min_pairs <= 4:
            raise InvalidInput(f"preset {self.name!r}: min_pairs must be in 0..4, got {self.min_pairs}")
        if self.sft_weight < 0:
            raise InvalidInput(f"preset {self.name!r}: sft_weight must be >= 0, got {self.sft_weight}")


def conversational_rows(pairs: Sequence[tuple[str, str, str]]) -> list[dict]:
    """(user turn, chosen, rejected) -> TRL conversational preference rows."""
    rows = []
    for i, (prompt, chosen, rejected) in enumerate(pairs):
        for name, text in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
            if not isinstance(text, str) or not text.strip():
                raise InvalidInput(f"pair {i}: {name} must be a non-empty string")
        rows.append({"prompt": [{"role": "user", "content": prompt}],
                     "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": rejected}]})
    return rows


def _callbacks(on_log: LossLog | None, should_stop: Callable[[], bool] | None):
    from transformers import TrainerCallback

    class Report(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if on_log and logs and "loss" in logs:
                on_log(state.global_step, float(logs["loss"]), float(logs.get("rewards/accuracies", float("nan"))))

        def on_step_end(self, args, state, control, **kw):
            if should_stop and should_stop():
                control.should_training_stop = True
                control.should_save = True

    return [Report()]


class DPORun(NamedTuple):
    """What ``run_dpo`` returns."""
    trainer: Any
    result: Any                 # transformers' TrainOutput
    resumed: bool
    bf16: bool
    processes: dict
    clock: Any                  # alignx.checkpoints.TrainingClock


def run_dpo(lm, rows: list[dict], work: Path, cfg: DPOPreset, *, name: str, model=None, resume: bool = False,
            on_log: LossLog | None = None, should_stop: Callable[[], bool] | None = None,
            progress: bool = True) -> DPORun:
    """Train on TRL preference ``rows``; returns a ``DPORun`` (trainer, train result, resumed, bf16,
    processes, and the ``TrainingClock`` whose ``total()`` is the run's training seconds over processes).

    ``model``: a ``PeftModel`` whose active adapter is already trainable (SFT then DPO: the SFT
    expert goes on learning; TRL copies it as a frozen ``ref`` adapter, so pi_ref is the SFT
    expert); default: a fresh LoRA of ``cfg`` on ``lm.model``. Raises ``TrainingCancelled``
    (checkpoint kept) when ``should_stop``."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from alignx.checkpoints import TrainingClock, last_checkpoint
    from alignx.experts.train import TrainingCancelled, use_bf16

    if len(rows) < 2:
        raise InvalidInput(f"{name}: need at least 2 training pairs, got {len(rows)}")
    # The preset's batch (batch_size x grad_accum pairs per update) is the global batch on any number
    # of processes: per-device x processes x accumulation.
    per_device, accum = dist.batch_plan(cfg.batch_size * cfg.grad_accum, cfg.batch_size)
    if not resume and Path(work).exists() and dist.is_main():   # a fresh run: old checkpoints must not be resumed
        shutil.rmtree(work)
    dist.barrier()
    bf16 = use_bf16(lm, cfg)                    # the experts' rule: the preset's bf16, else what the device supports
    losses = (["sigmoid", "sft"], [1.0, cfg.sft_weight]) if cfg.sft_weight > 0 else (["sigmoid"], None)
    args = DPOConfig(
        output_dir=str(work), per_device_train_batch_size=per_device, gradient_accumulation_steps=accum,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps, learning_rate=cfg.learning_rate, beta=cfg.beta,
        max_length=cfg.max_length, truncation_mode="keep_end", loss_type=losses[0], loss_weights=losses[1],
        warmup_steps=cfg.warmup_ratio,   # a float < 1 is a share of the updates
        lr_scheduler_type="linear", logging_steps=1, save_strategy="steps",
        save_steps=cfg.save_steps, save_total_limit=2, report_to=[], seed=cfg.seed, data_seed=cfg.seed,
        use_cpu=lm.device.type == "cpu", bf16=bf16, disable_tqdm=not progress, dataloader_num_workers=0,
        remove_unused_columns=False, gradient_checkpointing=cfg.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None)
    lora = None
    if model is None:
        n_layers = int(lm.model.config.num_hidden_layers)
        first = n_layers - max(1, round(n_layers * cfg.layers_fraction))
        lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, task_type="CAUSAL_LM",
                          target_modules=list(cfg.target_modules),
                          layers_to_transform=list(range(first, n_layers)) if first > 0 else None)
    trainer = DPOTrainer(model if model is not None else lm.model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=lm.tokenizer, peft_config=lora, callbacks=_callbacks(on_log, should_stop))
    checkpoint = last_checkpoint(Path(work)) if resume else None     # torn checkpoints of a killed save skipped
    clock = TrainingClock.resuming(checkpoint)
    trainer.add_callback(clock.callback())
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if should_stop and should_stop():
        raise TrainingCancelled(f"{name}: cancelled at step {trainer.state.global_step}; checkpoint in {work}")
    processes = dict(dist.describe(), per_device_batch=per_device, grad_accum=accum,
                     global_batch=per_device * dist.world_size() * accum)
    return DPORun(trainer, result, bool(checkpoint), bf16, processes, clock)


def loss_history(trainer) -> list[dict]:
    return [h for h in trainer.state.log_history if "loss" in h]


def mean_loss(trainer, result) -> float:
    """The whole run's mean training loss (a resumed run's ``training_loss`` covers only its part)."""
    from alignx.checkpoints import run_mean_loss

    whole = run_mean_loss(trainer.state.log_history)
    return float(result.training_loss if whole is None else whole)


def save_adapter(trainer, final: Path, card: dict, work: Path) -> Path:
    """Write the trained adapter and its card to ``final`` atomically (the main process; the others
    wait), drop the checkpoints, and give the base back without LoRA layers."""
    from alignx.cards import save_adapter_folder

    model = trainer.accelerator.unwrap_model(trainer.model)
    state = dist.trained_state_dict(trainer)    # every process: gathers ZeRO-3 / FSDP shards
    if dist.is_main():                          # one writer; the others wait for the folder
        save_adapter_folder(model, state, final, card)
        shutil.rmtree(work, ignore_errors=True)
    dist.barrier()
    model.unload()
    return final
