"""DPO training of the personalized adapters (ICA, PBA) with TRL's ``DPOTrainer`` and a peft LoRA.

Each training example is a user's pair (x, y_chosen, y_rejected) with the user's information in the
prompt: ICA puts a sample of their history in it (``prompts.ica_prompt``), PBA their preference
profile (``prompts.pba_prompt``). DPO (Rafailov et al. 2023) minimises

    L = -log sigmoid( beta [ (log pi(y_c | x, u) - log pi_ref(y_c | x, u))
                            - (log pi(y_r | x, u) - log pi_ref(y_r | x, u)) ] )  [+ w_sft * NLL(y_c | x, u)]

with pi_ref the frozen base (the LoRA disabled) and beta = 0.1 (AlignX-Family). Presets: ``tiny``
(tests), ``cpu`` (the shipped adapters for SmolLM2-135M) and ``paper`` (the paper's beta = 0.1,
lr 5e-7, one epoch, for Llama-3.1-8B-Instruct on GPUs). Checkpoints go to ``<out>/.work/<name>``;
``resume=True`` continues from the newest complete one (``alignx.checkpoints.last_checkpoint``), a
fresh run clears them; the finished adapter is built aside and swapped in. Under ``accelerate
launch`` the DPOTrainer runs DDP (or the launch config's DeepSpeed / FSDP) with the preset's batch x
accumulation as the global batch; only the main process writes (``alignx.dpo``).
"""
from __future__ import annotations

import logging
import random
from collections import Counter
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Sequence

from alignx.dpo import DPOPreset
from alignx.errors import InvalidInput, unknown

log = logging.getLogger(__name__)
METHODS = ("ica", "pba")

PRESETS = {
    "tiny": DPOPreset("tiny", rank=4, alpha=8, target_modules=("q_proj", "v_proj"), learning_rate=1e-3,
                      batch_size=2, grad_accum=1, max_length=512, max_steps=2, save_steps=1),
    "cpu": DPOPreset("cpu", learning_rate=5e-4, layers_fraction=0.5),
    "paper": DPOPreset("paper", rank=64, alpha=128, learning_rate=5e-7, batch_size=8, grad_accum=8,
                       max_length=2048, min_pairs=0, save_steps=200, gradient_checkpointing=True),
}


def preset(name: str, **overrides) -> DPOPreset:
    if name not in PRESETS:
        raise unknown("DPO preset", name, PRESETS)
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


def user_prompt(method: str, prompt: str, user, dims, rng: random.Random | None = None, min_pairs: int = 0) -> str:
    """The user turn for ``prompt`` from ``user`` under ``method``: the one template training and
    evaluation share. With ``rng`` (training) ICA samples min_pairs..4 history pairs and 0..4
    comments; without (evaluation, the app), all of them (up to 4 each)."""
    from alignx.personal.prompts import ica_prompt, pba_prompt

    if method == "ica":
        if rng is None:
            return ica_prompt(prompt, user)
        return ica_prompt(prompt, user, n_comments=rng.randint(0, 4), n_pairs=rng.randint(min_pairs, 4))
    if method == "pba":
        return pba_prompt(prompt, user, dims)
    raise unknown("personalization method", method, METHODS)


def dpo_rows(method: str, examples: Sequence, dims, seed: int = 0, min_pairs: int = 0) -> list[dict]:
    """TRL conversational preference rows: prompt = [user turn], chosen / rejected = [assistant turn]."""
    from alignx.dpo import conversational_rows

    rng = random.Random(seed)
    return conversational_rows([(user_prompt(method, ex.prompt, ex.user, dims, rng, min_pairs), ex.chosen, ex.rejected)
                                for ex in examples])


def train_personal(lm, method: str, examples: Sequence, out_dir: str | Path, cfg: DPOPreset, dims,
                   name: str | None = None, resume: bool = False, command: str | None = None,
                   on_log: Callable[[int, float, float], None] | None = None,
                   should_stop: Callable[[], bool] | None = None, progress: bool = True,
                   held_out: dict[str, dict] | None = None) -> Path:
    """Train the ``method`` adapter on ``examples`` (the training half); returns ``<out_dir>/<name>``.
    ``held_out``: per source, what was kept out of training (the evaluation half), for the card."""
    import torch

    from alignx.dpo import loss_history, mean_loss, run_dpo, save_adapter

    if method not in METHODS:
        raise unknown("personalization method", method, METHODS)
    if len(examples) < 2:
        raise InvalidInput(f"{method}: need at least 2 training pairs, got {len(examples)}")
    name = name or method
    out_dir = Path(out_dir)
    work = out_dir / ".work" / name
    t0 = time.time()
    rows = dpo_rows(method, examples, dims, cfg.seed, cfg.min_pairs)
    trainer, result, checkpoint, bf16, processes, clock = run_dpo(
        lm, rows, work, cfg, name=name, resume=resume, on_log=on_log, should_stop=should_stop, progress=progress)
    history = loss_history(trainer)
    card = {
        "kind": "alignx-personal-adapter", "method": method, "name": name, "base_model": lm.name,
        "base_source": lm.source, "preset": asdict(cfg), "trainer": "trl.DPOTrainer",
        "data": {"train_pairs": len(rows), "sources": sorted({ex.source for ex in examples}),
                 "rows_per_source": dict(sorted(Counter(ex.source for ex in examples).items())),
                 "held_out": held_out or {},
                 "personas": sorted({ex.user.persona for ex in examples if ex.user.persona})},
        "steps": int(trainer.state.global_step), "train_loss": mean_loss(trainer, result),
        "final": {k: history[-1].get(k) for k in ("loss", "rewards/accuracies", "rewards/margins")} if history else {},
        "resumed": bool(checkpoint), "command": command,
        "wall_time_s": clock.total(),                          # training, summed over the processes of a resumed run
        "wall_time_s_last_process": round(time.time() - t0, 1),
        "torch_threads": torch.get_num_threads(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bf16": bool(bf16), "losses": [(int(h["step"]), float(h["loss"])) for h in history if "step" in h],
        "processes": processes,
    }
    return save_adapter(trainer, out_dir / name, card, work)
