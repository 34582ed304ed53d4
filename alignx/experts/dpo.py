"""Stage-1 experts trained on preference pairs: DPO, DPO with an SFT term, or SFT then DPO.

Three recipes over one axis's pairs (x, y_c, y_r) (``alignx.data.pairs``), all through the one DPO
runner ``alignx.dpo.run_dpo`` (TRL's ``DPOTrainer`` on a peft LoRA; pi_ref = the frozen base, except
for ``sft+dpo``):

* ``dpo``: a fresh LoRA, L = L_DPO;
* ``dpo+sft``: a fresh LoRA, L = L_DPO + w_sft NLL(y_c | x) (``sft_weight`` > 0, the RPO objective);
* ``sft+dpo``: the axis's SFT expert (``init_adapter``, trained by ``train_expert``) goes on
  learning under L_DPO; TRL copies the loaded adapter as a frozen ``ref`` adapter, so pi_ref is
  the SFT expert and the KL anchor pulls towards it (the logged loss starts at ln 2; docs/METHOD.md).
  ``reward_accuracy`` on the card still measures against the base (adapters off).

The card records the held-out implicit-reward accuracy before (= 0.5 with ties: a fresh LoRA is
the base) and after training: the share of held-out pairs with
beta [(log pi(y_c) - log pi_ref(y_c)) - (log pi(y_r) - log pi_ref(y_r))] > 0.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Sequence

from alignx import distributed as dist
from alignx.atomic import write_json
from alignx.dpo import DPOPreset
from alignx.errors import InvalidInput, unknown

RECIPES = ("dpo", "dpo+sft", "sft+dpo")
PRESETS = {
    "tiny": DPOPreset("tiny", rank=4, alpha=8, target_modules=("q_proj", "v_proj"), learning_rate=5e-3,
                      batch_size=2, grad_accum=1, max_length=128, max_steps=4, save_steps=2, warmup_ratio=0.0,
                      bf16=False),
    # the shipped experts' LoRA shape (cpu ExpertConfig: r 16 on every linear layer of the top half)
    "cpu": DPOPreset("cpu", learning_rate=2e-4, batch_size=4, grad_accum=4, max_length=256, max_steps=60,
                     save_steps=10, layers_fraction=0.5),
    # 7B on GPUs: the AlignX experts' LoRA with DPO's usual beta and a small learning rate
    "paper": DPOPreset("paper", rank=16, alpha=32, learning_rate=5e-6, batch_size=8, grad_accum=8, epochs=1.0,
                       max_length=1024, save_steps=200, gradient_checkpointing=True),
}
HELDOUT_PAIRS = 64


def preset(name: str, global_batch: int | None = None, per_device_batch: int | None = None,
           **overrides) -> DPOPreset:
    """The named preset with ``overrides`` (None = keep). ``global_batch`` (pairs per update) and
    ``per_device_batch`` (at most this many pairs per forward) set batch_size x grad_accum by
    ``alignx.distributed.batch_plan`` on one process; ``run_dpo`` re-plans the same global batch
    over W processes."""
    if name not in PRESETS:
        raise unknown("expert DPO preset", name, PRESETS)
    cfg = replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
    if global_batch is not None or per_device_batch is not None:
        per, accum = dist.batch_plan(global_batch or cfg.batch_size * cfg.grad_accum,
                                     per_device_batch or cfg.batch_size, processes=1)
        cfg = replace(cfg, batch_size=per, grad_accum=accum)
    return cfg


def balanced_sample(groups: dict[str, list], n: int | None, seed: int = 0) -> dict[str, list]:
    """At most ``n`` items in all, shared as equally as the groups allow: each group gives up to
    n / (groups left) items (a seeded sample), what a small group leaves goes to the others."""
    rng = random.Random(seed)
    groups = {k: list(v) for k, v in groups.items() if v}
    if n is None:
        return groups
    out, left, budget = {}, sorted(groups, key=lambda k: len(groups[k])), n
    for i, k in enumerate(left):
        take = min(len(groups[k]), budget // (len(left) - i))
        out[k] = rng.sample(groups[k], take)
        budget -= take
    return {k: out[k] for k in groups}


def preference_data(lm, axis: str, data_dir=None, max_pairs: int | None = 1200, seed: int = 0,
                    limit: int | None = None, distill_tokens: int = 96, cache: str | Path | None = None,
                    pair_sources: Sequence[str] | None = None):
    """The axis's training pairs from ``alignx.data.pairs.axis_pairs`` (decontaminated), balanced
    over sources (``balanced_sample``). Harmless: OKTest's benign prompts are answered by the base
    model itself (greedy, ``self_distill``: its refusals are dropped), each answer preferred over a
    refusal; ``cache`` (a JSON file) keeps those answers, keyed by model name, weights fingerprint
    and answer length, so a later run into the same folder (a resumed one) does not generate them
    again. ``pair_sources``: keep only these sources (for example the contrast pairs, ``coconot_pref``
    and ``oktest``); an unknown name is an error listing the axis's sources. Returns (pairs, rows per
    source, evaluation prompts removed per source), both for the sources kept."""
    from alignx.data.pairs import axis_pairs
    from alignx.eval.scores import weights_fingerprint
    from alignx.experts.train import self_distill

    def base_answers(prompts: list[str]) -> list[str]:
        key = {"model": lm.name, "weights": weights_fingerprint(lm.model), "max_new_tokens": distill_tokens}
        known: dict[str, str] = {}
        if cache is not None and Path(cache).exists():
            saved = json.loads(Path(cache).read_text(encoding="utf-8"))
            known = saved["answers"] if {k: saved.get(k) for k in key} == key else {}
        todo = [p for p in prompts if p not in known]
        # self_distill waits on every process: all take the same branch, and under a launcher a
        # process whose cache lacks answers makes every process answer every prompt
        if dist.reduce_sum([float(len(todo))])[0] > 0:
            todo = prompts if dist.launched() else todo
            given = dict(self_distill(lm, todo, distill_tokens))
            known.update({p: given.get(p, "") for p in todo})     # "" = the base refused: no pair
            if cache is not None and dist.is_main():
                write_json(cache, {**key, "answers": known})
        return [known[p] for p in prompts]

    ps = axis_pairs(axis, data_dir, limit=limit, oktest_answers=base_answers if axis == "harmless" else None)
    groups: dict[str, list] = {}
    for r in ps.pairs:
        groups.setdefault(r.source, []).append((r.prompt, r.chosen, r.rejected))
    removed = dict(ps.removed)
    if pair_sources:
        missing = sorted(set(pair_sources) - set(groups))
        if missing:
            raise InvalidInput(f"unknown pair source(s) {missing} for the {axis} axis; available: {sorted(groups)}")
        keep = set(pair_sources)
        groups = {k: v for k, v in groups.items() if k in keep}
        removed = {k: v for k, v in removed.items() if k in keep}
    picked = balanced_sample(groups, max_pairs, seed)
    pairs = [x for rows in picked.values() for x in rows]
    return pairs, {k: len(v) for k, v in picked.items()}, removed


def reward_accuracy(model, tokenizer, pairs: Sequence[tuple[str, str, str]]) -> float | None:
    """Share of pairs whose implicit reward margin (pi = the active adapter, pi_ref = adapters off)
    is > 0; ties (a fresh LoRA) count 1/2."""
    from alignx.policy import SinglePolicy

    if not pairs:
        return None
    prompts = [p for p, _, _ in pairs for _ in (0, 1)]
    answers = [a for _, c, r in pairs for a in (c, r)]
    pi = SinglePolicy(model, tokenizer, adapter="default").logprob(prompts, answers)
    with model.disable_adapter():
        ref = SinglePolicy(model, tokenizer).logprob(prompts, answers)
    score = 0.0
    for k in range(len(pairs)):
        margin = (pi[2 * k] - ref[2 * k]) - (pi[2 * k + 1] - ref[2 * k + 1])
        score += 1.0 if margin > 1e-6 else 0.5 if abs(margin) <= 1e-6 else 0.0
    return score / len(pairs)


def _weights_sha256(folder: str | Path) -> str | None:
    """sha256 of an adapter folder's weights file: which SFT expert a ``sft+dpo`` run started from."""
    import hashlib

    for fname in ("adapter_model.safetensors", "adapter_model.bin"):
        if (Path(folder) / fname).exists():
            return hashlib.sha256((Path(folder) / fname).read_bytes()).hexdigest()
    return None


def train_dpo_expert(lm, axis: str, pairs: Sequence[tuple[str, str, str]], out_dir: str | Path, cfg: DPOPreset,
                     recipe: str = "dpo", init_adapter: str | Path | None = None, name: str | None = None,
                     sources: dict[str, int] | None = None, removed: dict[str, int] | None = None,
                     resume: bool = False, command: str | None = None,
                     on_loss: Callable[[str, int, float], None] | None = None,
                     should_stop: Callable[[], bool] | None = None, progress: bool = True) -> Path:
    """Train the ``axis`` expert on (prompt, chosen, rejected) ``pairs``; returns ``<out_dir>/<name>``,
    a standard expert folder (peft adapter + ``card.json`` with ``axis``), loadable by the studio.
    ``sources`` / ``removed``: rows per source and evaluation prompts removed per source (the card)."""
    import torch

    from alignx.dpo import conversational_rows, loss_history, mean_loss, run_dpo, save_adapter

    if recipe not in RECIPES:
        raise unknown("expert recipe", recipe, RECIPES)
    if (recipe == "sft+dpo") != (init_adapter is not None):
        raise InvalidInput("recipe 'sft+dpo' needs init_adapter (the SFT expert's folder), and only it takes one")
    if recipe == "dpo+sft" and cfg.sft_weight <= 0:
        cfg = replace(cfg, sft_weight=1.0)
    if recipe != "dpo+sft" and cfg.sft_weight > 0:
        raise InvalidInput(f"sft_weight {cfg.sft_weight} > 0 is the 'dpo+sft' recipe, not {recipe!r}")
    name = name or axis
    conversational_rows(pairs)            # validates every pair, naming the bad one by its index
    pairs = list(pairs)
    random.Random(cfg.seed).shuffle(pairs)
    n_held = min(HELDOUT_PAIRS, len(pairs) // 10)
    held, train = pairs[:n_held], pairs[n_held:]
    out_dir = Path(out_dir)
    work = out_dir / ".work" / name
    model = None
    if init_adapter is not None:
        from peft import PeftModel

        if not (Path(init_adapter) / "adapter_config.json").exists():
            raise InvalidInput(f"{init_adapter}: no adapter_config.json (not an expert folder)")
        model = PeftModel.from_pretrained(lm.model, str(init_adapter), is_trainable=True)
    t0 = time.time()
    trainer, result, resumed, bf16, processes, clock = run_dpo(
        lm, conversational_rows(train), work, cfg, name=name, model=model, resume=resume, progress=progress,
        on_log=(lambda step, loss, acc: on_loss(axis, step, loss)) if on_loss else None, should_stop=should_stop)
    trained_s = clock.total()                               # training only, summed over the processes of a resumed run
    history = loss_history(trainer)
    trainer.model.eval()
    with torch.no_grad():
        held_acc = reward_accuracy(trainer.model, lm.tokenizer, held)
    card = {
        "kind": "alignx-expert", "name": name, "axis": axis, "recipe": recipe, "trainer": "trl.DPOTrainer",
        "base_model": lm.name, "base_source": lm.source,
        "init_adapter": str(init_adapter) if init_adapter else None,
        "init_adapter_sha256": _weights_sha256(init_adapter) if init_adapter else None,
        "data": {"train_pairs": len(train), "heldout_pairs": len(held), "sources": dict(sources or {}),
                 "evaluation_prompts_removed": dict(removed or {})},
        "hyperparameters": dict(asdict(cfg), bf16_autocast=bf16), "steps": int(trainer.state.global_step),
        "losses": {"first_logged": history[0]["loss"] if history else None,
                   "final_logged": history[-1]["loss"] if history else None,
                   "train_loss_mean": mean_loss(trainer, result),
                   "final_reward_accuracy": history[-1].get("rewards/accuracies") if history else None,
                   "heldout_reward_accuracy": held_acc},
        "loss_log": [{"step": int(h["step"]), "loss": float(h["loss"])} for h in history if "step" in h],
        "resumed": resumed, "processes": processes, "command": command,
        "wall_time_s": trained_s,
        "wall_time_s_last_process": round(time.time() - t0, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return save_adapter(trainer, out_dir / name, card, work)
