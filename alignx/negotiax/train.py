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
"""
from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

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
                   provenance: dict | None = None) -> dict[str, list[tuple[str, str]]]:
    """Each built-in objective's own training rows (no benign mix): helpful = Alpaca answers,
    harmless = safety-tuned-llamas refusals, honest = TruthfulQA training-half correct answers; the
    evaluation prompts are removed by ``alignx.experts.sft.axis_data``. ``provenance`` (if given)
    receives ``{objective: {"sources": rows per source, "eval_prompts_removed": per source}}``."""
    from alignx.data import AXES
    from alignx.experts.config import preset
    from alignx.experts.sft import axis_data

    out = {}
    for o in objectives:
        if o not in AXES:
            raise InvalidInput(f"objective {o!r} has no built-in training data (built-in: {', '.join(AXES)}); pass rows")
        cfg = preset("cpu", seed=seed, benign_mix=0.0, benign_truthfulqa=0.0, benign_contrast=0.0, template_refusals=0,
                     rows_per_axis=None)
        data = axis_data(o, cfg, data_dir)
        out[o] = list(data.train)
        if provenance is not None:
            provenance[o] = {"sources": dict(data.sources), "eval_prompts_removed": dict(data.removed)}
    return out


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


def _ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the response tokens (labels != -100), next-token shifted."""
    return torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                             labels[:, 1:].reshape(-1), ignore_index=-100)


def objective_losses(nx, batch: dict, objective: str, variant: str, cfg: NegotiaXConfig,
                     leave_out: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """The per-objective terms of L for one batch of ``objective``'s rows (see the module docstring)."""
    from alignx import hooks

    names = {"adapter_names": ["__base__"] * len(batch["input_ids"])} if hasattr(nx.model, "peft_config") else {}
    fwd = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **names)
    supervised = variant not in ("module2", "module1")
    with nx.active(variant, leave_out), hooks.capture(nx.model, "mac.weights", detach=False) as cache:
        full = nx.model(**fwd).logits
    out = {"ce": _ce(full, batch["labels"])}
    if supervised and cfg.identify > 0:
        o = nx.circuit.objectives.index(objective)
        alpha = cache["mac.weights"].mean(2)[:, :-1, o]                     # (B, T-1): mean over heads
        resp = (batch["labels"][:, 1:] != -100).float()
        out["identify"] = -(torch.log(alpha.clamp_min(1e-8)) * resp).sum() / resp.sum().clamp_min(1)
    if supervised and cfg.own_path > 0:
        with nx.active(variant, leave_out, force=objective):
            out["own"] = _ce(nx.model(**fwd).logits, batch["labels"])
    return out


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
    circuit = nx.circuit
    frozen = {"W_q", "W_k", "e"} if variant == "frozen" else set()
    params = [p for n, p in circuit.named_parameters() if n not in frozen]
    for n, p in circuit.named_parameters():
        p.requires_grad_(n not in frozen)
    opt = torch.optim.AdamW(params, lr=tcfg.learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, tcfg.warmup_steps)) *
                                              max(0.0, 1 - s / tcfg.steps) if tcfg.warmup_steps else max(0.0, 1 - s / tcfg.steps))
    work = Path(out_dir) / ".work" / name
    step, history = 0, []
    ckpt = work / "checkpoint.pt"
    if resume and ckpt.is_file():
        try:                                    # written atomically: torn only if copied or edited by hand
            state = torch.load(ckpt, weights_only=True)
            circuit.load_state_dict(state["circuit"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            step, history = int(state["step"]), [tuple(h) for h in state["history"].tolist()]
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint: one clear error
            raise InvalidInput(f"{ckpt}: not a readable Train_MAC checkpoint of this circuit "
                               f"({exc.__class__.__name__}: {str(exc)[:200]}); "
                               "delete it or run without --resume") from None
    trainable = [p for p in nx.model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)                 # the base (and any experts) stay frozen
    device = next(nx.model.parameters()).device
    t0 = time.time()
    try:
        while step < tcfg.steps:
            if should_stop and should_stop():
                _checkpoint(ckpt, circuit, opt, sched, step, history)
                raise TrainingCancelled(f"{name}: cancelled at step {step}; checkpoint in {work}")
            step_rng = random.Random(tcfg.seed * 100_003 + step)      # the batch of a step, resumable
            total = cfg.separation * circuit.separation()
            for o in objectives:
                batch = _batch(nx.tokenizer, step_rng.sample(rows[o], min(tcfg.batch_size, len(rows[o]))),
                               tcfg.max_length, device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=tcfg.bf16):
                    terms = objective_losses(nx, batch, o, variant, cfg, leave_out)
                total = total + terms["ce"] + cfg.identify * terms.get("identify", 0.0) + cfg.own_path * terms.get("own", 0.0)
            opt.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            step += 1
            history.append((step, float(total.detach())))
            if on_step:
                on_step(step, history[-1][1])
            if step % tcfg.save_steps == 0 and step < tcfg.steps:
                _checkpoint(ckpt, circuit, opt, sched, step, history)
    finally:
        for p in trainable:
            p.requires_grad_(True)
    extra = {"base_model": base_model, "variant": variant, "leave_out": list(leave_out), "training": asdict(tcfg),
             "rows_per_objective": {o: len(r) for o, r in rows.items()}, "rows_too_long": cut, "losses": history,
             "data": dict(provenance or {}),
             "wall_time_s": round(time.time() - t0, 1), "command": command, "steps": step}
    path = nx.save(Path(out_dir) / name, extra)
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return path


def _checkpoint(path: Path, circuit, opt, sched, step: int, history) -> None:
    from alignx.atomic import replace_file

    path.parent.mkdir(parents=True, exist_ok=True)
    with replace_file(path) as tmp:
        torch.save({"circuit": circuit.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "step": step, "history": torch.tensor(history, dtype=torch.float64).reshape(-1, 2)}, tmp)
