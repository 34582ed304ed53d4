"""Train_MAC: fit the circuit on each objective's own training data, the base model frozen.

One update takes a batch of every objective o (rows: prompt, response; loss on response tokens
only, labels -100 on the prompt and padding) and minimises

    L = sum_o [ CE_o(full negotiation)                                   the fused model on o's data
              + w_own * CE_o(alpha one-hot on o)                          pathway o alone carries o
              + w_id  * mean_t -log( mean_h alpha_{h,o}(t) ) ]            the MAC attends to o on o's data
        + w_sep * sum_{i<j} ||P~_i P~_j^T||_F^2                            the subspaces stay apart

(``docs/METHOD.md``). Variants change what is trained: ``module1`` uses uniform fusion
(alpha = 1/N) everywhere; ``module2`` drops the two supervision terms (w_own = w_id = 0), so the
axis labels are nominal; ``frozen`` keeps W_q, W_k and e at their random init; ``leave_out``
trains without those objectives' data and pathways. AdamW on the circuit's parameters only,
linear warm-up then linear decay. Checkpoints (circuit + optimizer + step) every ``save_steps``
to ``<out>/.work``; ``resume`` continues from the newest; the result is written atomically.

Processes (``accelerate launch --multi_gpu``, W of them): an ``accelerate.Accelerator`` wraps the
circuit's loss in DDP. Each step's rows of objective o (the same seeded draw on every process) are
split contiguously between the processes; each term is a sum over the process's response tokens
divided by the step's *global* token count N_o (an all-reduce), times W, so DDP's gradient average
is exactly the gradient of L on the whole batch: the same update as one process, up to float
summation order. Only the main process writes checkpoints and the circuit.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from alignx import distributed as dist
from alignx.checkpoints import TrainingClock
from alignx.errors import InvalidInput, unknown
from alignx.negotiax.config import NegotiaXConfig


@dataclass(frozen=True)
class MACTraining:
    name: str = "cpu"
    steps: int = 200
    batch_size: int = 4          # rows per objective per update
    learning_rate: float = 1e-3
    warmup_steps: int = 20
    max_length: int = 192
    rows_per_objective: int | None = 800
    save_steps: int = 50
    seed: int = 0
    bf16: bool = False           # bfloat16 autocast for the forward passes (the circuit's weights stay fp32)

    def __post_init__(self) -> None:
        for f in ("steps", "batch_size", "max_length", "save_steps"):
            if int(getattr(self, f)) < 1:
                raise InvalidInput(f"Train_MAC preset {self.name!r}: {f} must be >= 1, got {getattr(self, f)}")
        if not self.learning_rate > 0:
            raise InvalidInput(f"Train_MAC preset {self.name!r}: learning_rate must be > 0")


TRAIN_PRESETS = {
    "tiny": MACTraining("tiny", steps=3, batch_size=2, learning_rate=1e-2, warmup_steps=0, max_length=48,
                        rows_per_objective=8, save_steps=1),
    "cpu": MACTraining("cpu"),
    "paper": MACTraining("paper", steps=3000, batch_size=2, learning_rate=1e-4, warmup_steps=100, max_length=1024,
                         rows_per_objective=None, save_steps=500),
}


def train_preset(name: str, **overrides) -> MACTraining:
    if name not in TRAIN_PRESETS:
        raise unknown("Train_MAC preset", name, TRAIN_PRESETS)
    return replace(TRAIN_PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


def objective_data(objectives: Sequence[str], data_dir=None, seed: int = 0,
                   provenance: dict | None = None, harmless_contrast: float = 0.0) -> dict[str, list[tuple[str, str]]]:
    """Each built-in objective's own training rows: helpful = Alpaca answers, harmless =
    safety-tuned-llamas refusals, honest = TruthfulQA training-half correct answers (the expert
    preset's 640 rows each, no benign mix); the evaluation prompts are removed by
    ``alignx.experts.sft.axis_data``. ``harmless_contrast`` in [0, 1) replaces that share of the
    harmless rows by CoCoNot pref's compliant answers to sensitive-looking benign prompts (its
    ``chosen`` side, decontaminated), so the harmless objective is "refuse harm, answer its benign
    look-alikes" rather than "write refusals". ``provenance`` (if given) receives
    ``{objective: {"sources": rows per source, "eval_prompts_removed": per source}}``."""
    from alignx.data import AXES
    from alignx.experts.config import preset
    from alignx.experts.sft import axis_data

    if not 0.0 <= harmless_contrast < 1.0:
        raise InvalidInput(f"harmless_contrast must be in [0, 1), got {harmless_contrast}")
    out = {}
    for o in objectives:
        if o not in AXES:
            raise InvalidInput(f"objective {o!r} has no built-in training data (built-in: {', '.join(AXES)}); pass rows")
        cfg = preset("cpu", seed=seed, benign_mix=0.0, benign_truthfulqa=0.0, benign_contrast=0.0, template_refusals=0,
                     rows_per_axis=None)
        data = axis_data(o, cfg, data_dir)
        out[o] = list(data.train)
        sources, removed = dict(data.sources), dict(data.removed)
        if o == "harmless" and harmless_contrast > 0:
            out[o], sources, removed = _with_contrast(out[o], sources, removed, harmless_contrast, data_dir, seed)
        if provenance is not None:
            provenance[o] = {"sources": sources, "eval_prompts_removed": removed}
    return out


def _with_contrast(rows: list, sources: dict, removed: dict, share: float, data_dir, seed: int):
    """``rows`` with round(share * len(rows)) of them (a seeded draw) replaced by CoCoNot pref
    compliant answers, filtered against every evaluation file (``alignx.data.decontam``)."""
    from alignx.data import load
    from alignx.data.decontam import EvalIndex

    kept, report = EvalIndex.build(data_dir).filter(load("coconot_pref", data_dir), "coconot_pref")
    rng = random.Random(seed)
    n = round(share * len(rows))
    if n > len(kept):
        raise InvalidInput(f"harmless contrast: {n} compliant rows asked for, CoCoNot pref has {len(kept)} after "
                           f"decontamination; lower the share")
    contrast = [(r.prompt, r.chosen) for r in rng.sample(kept, n)]
    mixed = rng.sample(rows, len(rows) - n) + contrast
    rng.shuffle(mixed)
    scale = (len(rows) - n) / max(1, len(rows))
    sources = {k: round(v * scale) for k, v in sources.items()}
    return mixed, {**sources, "coconot_pref (compliant)": n}, {**removed, "coconot_pref": report.removed}


def _batch(tokenizer, rows: Sequence[tuple[str, str]], max_length: int, device) -> dict:
    from alignx.experts.sft import tokenize_pair

    enc = [tokenize_pair(tokenizer, p, r, max_length) for p, r in rows]
    width = max(len(e["input_ids"]) for e in enc)
    pad = tokenizer.pad_token_id or 0
    ids = torch.tensor([e["input_ids"] + [pad] * (width - len(e["input_ids"])) for e in enc], device=device)
    labels = torch.tensor([e["labels"] + [-100] * (width - len(e["labels"])) for e in enc], device=device)
    mask = torch.tensor([[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in enc], device=device)
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _fits(tokenizer, row: tuple[str, str], max_length: int) -> bool:
    from alignx.generation import chat_prompt_ids

    return len(chat_prompt_ids(tokenizer, row[0])) < max_length - 1


def _ce_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy over the response tokens (labels != -100), next-token shifted."""
    return torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                             labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum")


def response_tokens(batch: dict) -> int:
    """Tokens the loss is taken on (shifted labels != -100): the denominator of every term."""
    return int((batch["labels"][:, 1:] != -100).sum())


def objective_losses(nx, batch: dict, objective: str, variant: str, cfg: NegotiaXConfig,
                     leave_out: Sequence[str] = (), tokens: float | None = None) -> dict[str, torch.Tensor]:
    """The per-objective terms of L for one batch of ``objective``'s rows (see the module docstring):
    sums over the response tokens divided by ``tokens`` (default: this batch's own count, i.e. means;
    a multi-process step passes the count over all processes)."""
    from alignx import hooks

    denom = float(tokens if tokens is not None else max(response_tokens(batch), 1))
    names = {"adapter_names": ["__base__"] * len(batch["input_ids"])} if hasattr(nx.model, "peft_config") else {}
    fwd = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **names)
    supervised = variant not in ("module2", "module1")
    with nx.active(variant, leave_out), hooks.capture(nx.model, "mac.weights", detach=False) as cache:
        full = nx.model(**fwd).logits
    out = {"ce": _ce_sum(full, batch["labels"]) / denom}
    if supervised and cfg.identify > 0:
        o = nx.circuit.objectives.index(objective)
        alpha = cache["mac.weights"].mean(2)[:, :-1, o]                     # (B, T-1): mean over heads
        resp = (batch["labels"][:, 1:] != -100).float()
        out["identify"] = -(torch.log(alpha.clamp_min(1e-8)) * resp).sum() / denom
    if supervised and cfg.own_path > 0:
        with nx.active(variant, leave_out, force=objective):
            out["own"] = _ce_sum(nx.model(**fwd).logits, batch["labels"]) / denom
    return out


class StepLoss(torch.nn.Module):
    """One update's loss as a module over the circuit (its only parameters: the frozen base stays
    outside the module tree), so accelerate's DDP wrapper averages the circuit's gradients.

    forward(batches, tokens, scale) = separation + scale * sum_o [ce_o + w_id id_o + w_own own_o],
    each term a sum over this process's tokens / tokens[o]; returns (loss, {o: that bracket})."""

    def __init__(self, nx, cfg: NegotiaXConfig, variant: str, leave_out: Sequence[str], bf16: bool):
        super().__init__()
        self.circuit = nx.circuit
        self._nx = (nx,)                          # a tuple: not registered as a submodule
        self.cfg, self.variant, self.leave_out, self.bf16 = cfg, variant, tuple(leave_out), bf16

    def forward(self, batches: dict, tokens: dict, scale: float):
        nx, cfg = self._nx[0], self.cfg
        total, parts = cfg.separation * self.circuit.separation(), {}
        device = next(self.circuit.parameters()).device
        for o, batch in batches.items():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
                terms = objective_losses(nx, batch, o, self.variant, cfg, self.leave_out, tokens[o])
            parts[o] = terms["ce"] + cfg.identify * terms.get("identify", 0.0) + cfg.own_path * terms.get("own", 0.0)
            total = total + scale * parts[o]
        return total, parts


def _accelerator(device):
    """accelerate's Accelerator for Train_MAC: DDP (unused circuit weights allowed: ``module1``,
    ``leave_out``), models left where they are; DeepSpeed / FSDP launches are refused (the circuit
    is small and the base frozen: DDP is the engine for it)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs, DistributedType

    AcceleratorState._reset_state()   # as transformers' TrainingArguments do: no precision left by an earlier run
    acc = Accelerator(cpu=device.type == "cpu", device_placement=False, mixed_precision="no",   # autocast: --bf16
                      kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    if acc.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        raise InvalidInput(f"train-mac runs DDP, not {acc.distributed_type.value}: launch it with "
                           f"`accelerate launch --multi_gpu --num_processes N -m alignx train-mac ...`")
    return acc


def train_mac(nx, data: Mapping[str, Sequence[tuple[str, str]]], cfg: NegotiaXConfig, tcfg: MACTraining,
              out_dir: str | Path, name: str = "negotiax", variant: str = "full", leave_out: Sequence[str] = (),
              resume: bool = False, command: str | None = None, on_step: Callable[[int, float], None] | None = None,
              should_stop: Callable[[], bool] | None = None, base_model: str | None = None,
              provenance: dict | None = None) -> Path:
    """Train ``nx.circuit`` in place and save it to ``<out_dir>/<name>`` (returned)."""
    from alignx.experts.train import TrainingCancelled

    objectives = [o for o in nx.circuit.objectives if o not in set(leave_out)]
    missing = [o for o in objectives if not data.get(o)]
    if missing:
        raise InvalidInput(f"Train_MAC: no training rows for objective(s) {missing}")
    rng = random.Random(tcfg.seed)
    rows, cut = {}, {}
    for o in objectives:
        kept = [r for r in data[o] if _fits(nx.tokenizer, r, tcfg.max_length)]   # a response token survives the cut
        cut[o] = len(data[o]) - len(kept)
        if not kept:
            raise InvalidInput(f"Train_MAC: every {o} row's prompt fills max_length = {tcfg.max_length} tokens")
        rows[o] = rng.sample(kept, min(len(kept), tcfg.rows_per_objective or len(kept)))
    world = dist.world_size()
    small = [o for o in objectives if min(tcfg.batch_size, len(rows[o])) < world]
    if small:
        raise InvalidInput(f"Train_MAC: {small} have fewer rows per step than the {world} processes "
                           f"(batch_size {tcfg.batch_size}): every process needs a share of each batch")
    circuit = nx.circuit
    frozen = {"W_q", "W_k", "e"} if variant == "frozen" else set()
    params = [p for n, p in circuit.named_parameters() if n not in frozen]
    for n, p in circuit.named_parameters():
        p.requires_grad_(n not in frozen)
    opt = torch.optim.AdamW(params, lr=tcfg.learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, tcfg.warmup_steps)) *
                                              max(0.0, 1 - s / tcfg.steps) if tcfg.warmup_steps else max(0.0, 1 - s / tcfg.steps))
    work = Path(out_dir) / ".work" / name
    step, history, before = 0, [], 0.0          # before: training seconds of earlier processes (resume)
    ckpt = work / "checkpoint.pt"
    if resume and ckpt.is_file():
        try:                                    # written atomically: torn only if copied or edited by hand
            state = torch.load(ckpt, weights_only=True)
            circuit.load_state_dict(state["circuit"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            step, history = int(state["step"]), [tuple(h) for h in state["history"].tolist()]
            before = float(state["wall_time_s"]) if "wall_time_s" in state else float("nan")   # older checkpoints
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint: one clear error
            raise InvalidInput(f"{ckpt}: not a readable Train_MAC checkpoint of this circuit "
                               f"({exc.__class__.__name__}: {str(exc)[:200]}); "
                               "delete it or run without --resume") from None
    device = next(nx.model.parameters()).device
    acc = _accelerator(device)                  # refuses a DeepSpeed / FSDP launch before anything changes
    trainable = [p for p in nx.model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)                 # the base (and any experts) stay frozen
    clock, first_step = TrainingClock(before), step
    try:
        step_loss, opt = acc.prepare(StepLoss(nx, cfg, variant, leave_out, tcfg.bf16), opt)
        while step < tcfg.steps:
            if should_stop and should_stop():
                _checkpoint(ckpt, circuit, opt, sched, step, history, clock.running())
                raise TrainingCancelled(f"{name}: cancelled at step {step}; checkpoint in {work}")
            step_rng = random.Random(tcfg.seed * 100_003 + step)      # the batch of a step, resumable
            batches = {}
            for o in objectives:
                drawn = step_rng.sample(rows[o], min(tcfg.batch_size, len(rows[o])))
                lo, hi = dist.shard_bounds(len(drawn))                 # this process's rows of the draw
                batches[o] = _batch(nx.tokenizer, drawn[lo:hi], tcfg.max_length, device)
            counts = dist.reduce_sum([response_tokens(b) for b in batches.values()])
            tokens = {o: max(c, 1.0) for o, c in zip(batches, counts)}
            total, parts = step_loss(batches, tokens, float(world))
            opt.zero_grad(set_to_none=True)
            acc.backward(total)
            acc.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            step += 1
            sums = dist.reduce_sum([float(v.detach()) for v in parts.values()])
            history.append((step, float(cfg.separation * circuit.separation().detach()) + sum(sums)))
            if on_step:
                on_step(step, history[-1][1])
            if step % tcfg.save_steps == 0 and step < tcfg.steps and dist.is_main():
                _checkpoint(ckpt, circuit, opt, sched, step, history, clock.running())
    finally:
        for p in trainable:
            p.requires_grad_(True)
    extra = {"base_model": base_model, "variant": variant, "leave_out": list(leave_out), "training": asdict(tcfg),
             "rows_per_objective": {o: len(r) for o, r in rows.items()}, "rows_too_long": cut, "losses": history,
             "data": dict(provenance or {}), "processes": dist.describe(),
             "wall_time_s": clock.total(), "command": command, "steps": step,
             "resumed_at_step": first_step or None, "wall_time_s_last_process": round(clock.this_process(), 1)}
    path = Path(out_dir) / name
    if dist.is_main():                          # one writer; the others wait for the folder
        import shutil

        nx.save(path, extra)
        shutil.rmtree(work, ignore_errors=True)
    dist.barrier()
    return path


def card_summary(card: Mapping, window: int = 20) -> dict:
    """What ``train-mac`` prints for a trained circuit: the card's variant, steps, parameters, wall time
    and processes, and the mean loss of its first and last ``window`` updates (``losses`` = [(step, loss)])."""
    losses = [float(loss) for _, loss in card.get("losses") or []]
    mean = (lambda xs: round(sum(xs) / len(xs), 3) if xs else None)
    return {**{k: card.get(k) for k in ("variant", "leave_out", "steps", "parameters", "wall_time_s", "processes")},
            f"loss_first_{window}_mean": mean(losses[:window]), f"loss_last_{window}_mean": mean(losses[-window:])}


def _checkpoint(path: Path, circuit, opt, sched, step: int, history, wall_time_s: float) -> None:
    from alignx.atomic import replace_file

    path.parent.mkdir(parents=True, exist_ok=True)
    with replace_file(path) as tmp:
        torch.save({"circuit": circuit.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "step": step, "history": torch.tensor(history, dtype=torch.float64).reshape(-1, 2),
                    "wall_time_s": wall_time_s}, tmp)
