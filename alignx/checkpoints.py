"""Resuming a killed training run from the newest checkpoint it left complete.

transformers' ``Trainer`` writes ``<work>/checkpoint-N`` in place, in this order: the weights
(``adapter_model.safetensors``), ``optimizer.pt``, ``scheduler.pt``, ``rng_state.pth``, then
``trainer_state.json``; afterwards it deletes the checkpoints beyond ``save_total_limit``. A SIGKILL
in between leaves a torn ``checkpoint-N``. ``Trainer.train(resume_from_checkpoint=True)`` takes the
highest N whatever it holds (``transformers.trainer_utils.get_last_checkpoint``) and then fails on a
missing ``trainer_state.json``, or silently trains on without a missing ``optimizer.pt`` (fresh Adam
moments) or ``rng_state.pth`` (another data order): the resumed expert would differ from an
uninterrupted run without a word.

``last_checkpoint(work)`` is the highest N whose folder holds every part and whose
``trainer_state.json`` (written last) parses and names step N; torn checkpoints are removed, with a
warning that says what each lacked, so the Trainer never sees them. Pass the result to
``trainer.train(resume_from_checkpoint=...)`` (None: start afresh).

``TrainingClock`` keeps a run's training seconds across processes: each checkpoint carries the
total so far (``checkpoint-N/alignx_clock.json``), so the card of a resumed run reports the whole
run's time, not only its last process's.
"""
from __future__ import annotations

import json
import logging
import math
import re
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)

PATTERN = re.compile(r"^checkpoint-(\d+)$")
REQUIRED = ("optimizer.pt", "scheduler.pt")
WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")
STATE = "trainer_state.json"
CLOCK = "alignx_clock.json"


def checkpoint_problem(folder: str | Path) -> str | None:
    """Why ``folder`` (``checkpoint-N``) cannot be resumed from, or None when it is complete."""
    folder = Path(folder)
    m = PATTERN.match(folder.name)
    if not m or not folder.is_dir():
        return "not a checkpoint-N folder"
    try:
        state = json.loads((folder / STATE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"no {STATE} (the save was cut short)"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"{STATE} unreadable ({exc.__class__.__name__}: truncated?)"
    if not isinstance(state, dict) or state.get("global_step") != int(m.group(1)):
        return f"{STATE} names step {state.get('global_step') if isinstance(state, dict) else None!r}, not {m.group(1)}"
    missing = [f for f in REQUIRED if not (folder / f).is_file()]
    if not any((folder / f).is_file() for f in WEIGHTS):
        missing.append(" or ".join(WEIGHTS))
    if not any(folder.glob("rng_state*.pth")):
        missing.append("rng_state.pth")
    return f"missing {', '.join(missing)}" if missing else None


def last_checkpoint(work: str | Path, remove_torn: bool = True) -> Path | None:
    """The newest complete ``checkpoint-N`` in ``work`` (None: there is none; start afresh).

    Checkpoints newer than it that are torn are deleted when ``remove_torn`` (a warning names each
    and what it lacked); older ones are left to the Trainer's own rotation."""
    work = Path(work)
    if not work.is_dir():
        return None
    found = sorted(((int(m.group(1)), p) for p in work.iterdir() if (m := PATTERN.match(p.name)) and p.is_dir()),
                   reverse=True)
    for _, folder in found:
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        log.warning("ignoring the torn checkpoint %s: %s%s", folder, problem, "; removed" if remove_torn else "")
        if remove_torn:
            shutil.rmtree(folder, ignore_errors=True)
    return None


def run_mean_loss(log_history: list[dict]) -> float | None:
    """The mean training loss per optimizer step over the whole run, from ``trainer.state.log_history``.

    Each logged ``loss`` is the mean over the steps since the previous log, so the run's mean is
    ``sum_i loss_i (step_i - step_{i-1}) / step_last``. The history travels in every checkpoint, so a
    resumed run reports the same value as an uninterrupted one; ``TrainOutput.training_loss`` does
    not (it averages only the steps this process ran). Steps after the last log are not counted
    (none when the run's last step is a logging step). None when nothing was logged."""
    total, previous = 0.0, 0
    for h in log_history:
        if "loss" in h and "step" in h:
            total += float(h["loss"]) * (int(h["step"]) - previous)
            previous = int(h["step"])
    return total / previous if previous else None


class TrainingClock:
    """Training seconds over every process of a (resumed) ``Trainer`` run.

    total = before + (now - start): ``start`` is when this process began training (the clock's
    creation, just before ``trainer.train``) and ``before`` the total saved in the checkpoint it
    resumes from (0 for a fresh run; NaN when unknown). ``callback()`` writes the running total into every checkpoint
    the Trainer saves (its time before the save's own seconds), so the seconds a killed process
    spent after its last checkpoint are lost with it, as its updates are. A checkpoint without the
    file (one saved before the clock existed) makes the total unknown: ``total()`` is None, and
    ``this_process()`` is still exact. Train_MAC keeps ``before`` in its own checkpoint file and
    passes it in."""

    def __init__(self, before: float = 0.0):
        self.start = time.time()
        self.before = float(before)

    @classmethod
    def resuming(cls, checkpoint: str | Path | None) -> "TrainingClock":
        """The clock of a run that resumes from ``checkpoint`` (None: a fresh run)."""
        return cls(0.0 if checkpoint is None else saved_seconds(checkpoint))

    def this_process(self) -> float:
        return time.time() - self.start

    def running(self) -> float:
        """before + this process's seconds, unrounded; NaN when ``before`` is unknown (what a checkpoint keeps)."""
        return self.before + self.this_process()

    def total(self) -> float | None:
        return None if math.isnan(self.before) else round(self.running(), 1)

    def callback(self):
        """A ``TrainerCallback`` that writes ``{"wall_time_s": total}`` into ``checkpoint-N`` when the
        Trainer is about to save step N (``on_step_end`` with ``control.should_save`` set by the
        callbacks before it), so a checkpoint that is complete also has its clock, even when the
        process is killed right after the save. Main process only; atomic."""
        from transformers import TrainerCallback

        from alignx.atomic import write_json

        clock = self

        class SaveClock(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if control.should_save and state.is_world_process_zero:
                    folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                    folder.mkdir(parents=True, exist_ok=True)
                    write_json(folder / CLOCK, {"wall_time_s": clock.total()})

        return SaveClock()


def saved_seconds(checkpoint: str | Path) -> float:
    """The training seconds saved in ``checkpoint``'s clock file; NaN when it has none (or an unknown one)."""
    try:
        value = json.loads((Path(checkpoint) / CLOCK).read_text(encoding="utf-8")).get("wall_time_s")
    except (OSError, ValueError, AttributeError):
        return float("nan")
    return float(value) if isinstance(value, (int, float)) else float("nan")
