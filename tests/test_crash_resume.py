"""Crash and resume: SIGKILL during train-experts, train-mac, DPO (``personal train``) and ``eval``;
the resumed run ends where an uninterrupted run with the same seed ends, and no half-written
artefact is ever loaded.

Each crash test starts the real CLI in subprocesses with ``OMP_NUM_THREADS=1`` (one intra-op
thread: the same CPU kernels and summation order in every process, so results can be compared
bit for bit; it is also much faster than two threads on a loaded machine): an uninterrupted
reference run, and a run that is SIGKILLed as soon as its first complete checkpoint (or cached
answer) is on disk, then rerun with ``--resume``. The comparison is exact (``torch.equal`` on
every saved tensor, ``==`` on the reports): the runs do the same arithmetic in the same order
(seeded init, the data order and RNG state restored from the checkpoint, batches aligned), so
any difference, even in the last bit, means the resume changed something.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
           TOKENIZERS_PARALLELISM="false", GRADIO_ANALYTICS_ENABLED="False")
ENV.pop("PYTHONPATH", None)            # cwd = the repository: its alignx is the one imported


def start(args: list[str], log: Path, module: bool = True) -> subprocess.Popen:
    """The CLI (``python -m alignx ARGS``) or ``python ARGS`` in its own process, output in ``log``."""
    cmd = [sys.executable, *(["-m", "alignx"] if module else []), *args]
    return subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=log.open("w"), stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    assert proc.wait(timeout=timeout) == 0, log.read_text()[-3000:]


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], log: Path, timeout: float = 180) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` (polled every 10 ms, at most ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the run ended before it could be killed:\n" + log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"not ready after {timeout} s:\n" + log.read_text()[-3000:]
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def complete_checkpoint(work: Path) -> Callable[[], bool]:
    from alignx.checkpoints import checkpoint_problem

    return lambda: work.is_dir() and any(checkpoint_problem(p) is None for p in work.glob("checkpoint-*"))


def same_tensors(a: Path, b: Path) -> None:
    from safetensors.torch import load_file

    x, y = load_file(a), load_file(b)
    assert x.keys() == y.keys() and x
    diff = {k: float((x[k].float() - y[k].float()).abs().max()) for k in x if not torch.equal(x[k], y[k])}
    assert not diff, f"resumed != uninterrupted (max abs diff per tensor): {diff}"


def tear_a_newer_checkpoint(work: Path) -> None:
    """What a SIGKILL in the middle of the Trainer's save leaves: a newer ``checkpoint-N`` with the
    weights, a cut optimizer.pt and no trainer_state.json (written last). Transformers' own
    ``resume_from_checkpoint=True`` would take it (the highest N)."""
    from transformers.trainer_utils import get_last_checkpoint

    from alignx.checkpoints import checkpoint_problem

    step = {p: int(p.name.split("-")[1]) for p in work.glob("checkpoint-*")}
    good = max((p for p in step if checkpoint_problem(p) is None), key=step.get)
    torn = work / f"checkpoint-{max(step.values()) + 1}"
    torn.mkdir()
    shutil.copy(good / "adapter_model.safetensors", torn)
    (torn / "optimizer.pt").write_bytes((good / "optimizer.pt").read_bytes()[:100])
    assert get_last_checkpoint(str(work)) == str(torn)


# --- SIGKILL, then --resume -----------------------------------------------------------------------
@pytest.mark.slow
def test_train_experts_resumes_after_sigkill(tmp_path, data_dir, capsys):
    args = ["train-experts", "--base", "tiny-random", "--preset", "tiny", "--axes", "helpful", "--no-latent",
            "--max-steps", "10", "--data-dir", str(data_dir)]
    a, b = tmp_path / "a", tmp_path / "b"
    reference = start([*args, "--out", str(a)], tmp_path / "a.log")          # in parallel: one thread each
    killed = start([*args, "--out", str(b)], tmp_path / "b.log")
    kill_when(killed, complete_checkpoint(b / ".work" / "helpful"), tmp_path / "b.log")
    assert not (b / "helpful").exists()                                     # killed before the end
    tear_a_newer_checkpoint(b / ".work" / "helpful")
    finish(start([*args, "--out", str(b), "--resume"], tmp_path / "b2.log"), tmp_path / "b2.log")
    assert "ignoring the torn checkpoint" in (tmp_path / "b2.log").read_text()
    finish(reference, tmp_path / "a.log")
    same_tensors(a / "helpful" / "adapter_model.safetensors", b / "helpful" / "adapter_model.safetensors")
    ca, cb = (json.loads((x / "helpful" / "card.json").read_text()) for x in (a, b))
    assert ca["steps"] == cb["steps"] == 10
    assert ca["loss_log"] == cb["loss_log"] and ca["losses"] == cb["losses"]   # incl. the whole run's mean loss
    assert not (b / ".work" / "helpful").exists()
    # a finished expert is kept by a later --resume, not trained again (in this process: nothing is loaded)
    from alignx.cli import main

    before = (b / "helpful" / "adapter_model.safetensors").stat().st_mtime_ns
    assert main([*args, "--out", str(b), "--resume"]) == 0
    assert "helpful expert is finished in" in capsys.readouterr().err
    assert (b / "helpful" / "adapter_model.safetensors").stat().st_mtime_ns == before


@pytest.mark.slow
def test_train_mac_resumes_after_sigkill(tmp_path, data_dir):
    args = ["train-mac", "--model", "tiny-random", "--preset", "tiny", "--steps", "24", "--data-dir", str(data_dir)]
    a, b = tmp_path / "a", tmp_path / "b"
    reference = start([*args, "--out", str(a)], tmp_path / "a.log")
    killed = start([*args, "--out", str(b)], tmp_path / "b.log")
    kill_when(killed, lambda: (b / ".work" / "full" / "checkpoint.pt").is_file(), tmp_path / "b.log")
    assert not (b / "full").exists()
    finish(start([*args, "--out", str(b), "--resume"], tmp_path / "b2.log"), tmp_path / "b2.log")
    finish(reference, tmp_path / "a.log")
    same_tensors(a / "full" / "circuit.safetensors", b / "full" / "circuit.safetensors")
    ca, cb = (json.loads((x / "full" / "card.json").read_text()) for x in (a, b))
    assert ca["losses"] == cb["losses"] and len(ca["losses"]) == ca["steps"] == 24


@pytest.mark.slow
def test_dpo_resumes_after_sigkill(tmp_path, data_dir):
    args = ["personal", "train", "--method", "pba", "--preset", "tiny", "--max-steps", "8", "--limit", "4",
            "--model", "tiny-random", "--data-dir", str(data_dir)]
    a, b = tmp_path / "a", tmp_path / "b"
    reference = start([*args, "--out", str(a)], tmp_path / "a.log")
    killed = start([*args, "--out", str(b)], tmp_path / "b.log")
    kill_when(killed, complete_checkpoint(b / ".work" / "pba"), tmp_path / "b.log")
    assert not (b / "pba").exists()
    tear_a_newer_checkpoint(b / ".work" / "pba")
    finish(start([*args, "--out", str(b), "--resume"], tmp_path / "b2.log"), tmp_path / "b2.log")
    finish(reference, tmp_path / "a.log")
    same_tensors(a / "pba" / "adapter_model.safetensors", b / "pba" / "adapter_model.safetensors")
    ca, cb = (json.loads((x / "pba" / "card.json").read_text()) for x in (a, b))
    assert cb["resumed"] and not ca["resumed"]
    for key in ("steps", "losses", "final", "train_loss"):          # train_loss: the whole run's, not the tail's
        assert ca[key] == cb[key], key
    assert ca["wall_time_s"] > 0 and cb["wall_time_s"] > 0         # the total over both processes is known


# A judge that depends on every answer (so the report changes if any answer does) and reads no model.
EVAL_DRIVER = """
import sys
from alignx.eval.judges.base import Judge, register_judge

class LengthJudge(Judge):
    name, symmetric_preference = "length-test", False
    capabilities = frozenset({"prefer", "unsafe", "refusal", "truthful", "informative"})
    p = staticmethod(lambda text: (len(text) % 7 + 1) / 9)
    def prefer(self, instructions, first, second): return [self.p(a + b) for a, b in zip(first, second)]
    def unsafe(self, prompts, responses): return [self.p(r) for r in responses]
    refusal = informative = unsafe
    def truthful(self, questions, answers, references=None): return [self.p(a + "t") for a in answers]

register_judge("length-test", LengthJudge)
from alignx.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_eval_resumes_after_sigkill(tmp_path, data_dir):
    from tiny_studio import build

    experts = build(tmp_path / "experts")
    args = ["-c", EVAL_DRIVER, "eval", "--suite", "quick", "--model", "tiny-random", "--experts-dir", str(experts),
            "--mode", "expert:helpful", "--judge", "length-test", "--bootstrap", "50", "--no-progress",
            "--ref-cache", "none", "--max-new-tokens", "16", "--batch-size", "4", "--data-dir", str(data_dir)]
    a, b = tmp_path / "a", tmp_path / "b"
    reference = start([*args, "--out", str(a)], tmp_path / "a.log", module=False)
    generations = b / "generations.jsonl"
    killed = start([*args, "--out", str(b)], tmp_path / "b.log", module=False)
    kill_when(killed, lambda: generations.is_file() and generations.read_text().count("\n") >= 1, tmp_path / "b.log")
    n = generations.read_text().count("\n")
    killed = start([*args, "--out", str(b)], tmp_path / "b2.log", module=False)       # killed again while scoring
    kill_when(killed, lambda: (b / "scores.json").is_file(), tmp_path / "b2.log")
    assert not (b / "report.json").exists() and n < generations.read_text().count("\n") == 33
    finish(start([*args, "--out", str(b)], tmp_path / "b3.log", module=False), tmp_path / "b3.log")
    finish(reference, tmp_path / "a.log")
    ra, rb = (json.loads((x / "report.json").read_text()) for x in (a, b))
    timing = ("wall_time_s", "timings_s", "created")
    assert {k: v for k, v in ra.pop("run").items() if k not in timing} == \
           {k: v for k, v in rb.pop("run").items() if k not in timing}
    assert ra == rb
    for name in ("samples.jsonl", "model_outputs.json"):
        assert (a / name).read_text() == (b / name).read_text(), name
    assert sorted((a / "generations.jsonl").read_text().split("\n")) == sorted(generations.read_text().split("\n"))


# --- no half-written artefact is ever loaded --------------------------------------------------------
def test_last_checkpoint_skips_torn_checkpoints(tmp_path, caplog):
    from transformers.trainer_utils import get_last_checkpoint

    from alignx.checkpoints import checkpoint_problem, last_checkpoint

    def checkpoint(step: int, state: str | None = None, skip: tuple = ()) -> Path:
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for name in ("adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
            if name not in skip:
                (folder / name).write_bytes(b"x")
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
        return folder

    assert last_checkpoint(tmp_path / "none") is None
    good = checkpoint(2, json.dumps({"global_step": 2}))
    checkpoint(3, json.dumps({"global_step": 3}), skip=("optimizer.pt",))  # cannot happen in a save, but in a cleanup
    checkpoint(4, '{"global_step": 4, "log_hi')                          # trainer_state.json cut mid-write
    checkpoint(5, None, skip=("scheduler.pt", "rng_state.pth"))          # killed before trainer_state.json
    checkpoint(6, json.dumps({"global_step": 5}))                         # names another step
    old = checkpoint(1, json.dumps({"global_step": 1}), skip=("rng_state.pth",))
    assert get_last_checkpoint(str(tmp_path)).endswith("checkpoint-6")  # what Trainer(resume=True) would take
    problems = {p.name: checkpoint_problem(p) for p in tmp_path.iterdir()}
    assert problems["checkpoint-2"] is None and "optimizer.pt" in problems["checkpoint-3"]
    assert "unreadable" in problems["checkpoint-4"] and "no trainer_state.json" in problems["checkpoint-5"]
    assert "names step 5, not 6" in problems["checkpoint-6"] and "rng_state.pth" in problems["checkpoint-1"]
    assert last_checkpoint(tmp_path, remove_torn=False) == good and len(list(tmp_path.iterdir())) == 6
    assert last_checkpoint(tmp_path) == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-1", "checkpoint-2"]   # older: Trainer's rotation
    assert old.is_dir() and sum("torn checkpoint" in r.message for r in caplog.records) == 8


def test_training_clock_carries_the_total_across_checkpoints(tmp_path):
    from types import SimpleNamespace

    from alignx.checkpoints import CLOCK, TrainingClock, saved_seconds

    fresh = TrainingClock.resuming(None)
    assert fresh.before == 0.0 and 0 <= fresh.total() < 5
    ckpt = tmp_path / "checkpoint-4"
    ckpt.mkdir()
    assert TrainingClock.resuming(ckpt).total() is None            # a checkpoint from before the clock: unknown
    (ckpt / CLOCK).write_text('{"wall_time_s": 120.5}')
    resumed = TrainingClock.resuming(ckpt)
    assert resumed.before == 120.5 and 120.5 <= resumed.total() < 125.5
    args, state = SimpleNamespace(output_dir=str(tmp_path)), SimpleNamespace(global_step=6, is_world_process_zero=True)
    resumed.callback().on_step_end(args, state, SimpleNamespace(should_save=False))
    assert not (tmp_path / "checkpoint-6").exists()                # no save at this step: nothing written
    resumed.callback().on_step_end(args, state, SimpleNamespace(should_save=True))   # the Trainer saves step 6 next
    assert 120.5 <= saved_seconds(tmp_path / "checkpoint-6") < 125.5
    for bad in ("{", '{"wall_time_s": "soon"}', '{"wall_time_s": null}', "[]"):
        (ckpt / CLOCK).write_text(bad)
        assert TrainingClock.resuming(ckpt).total() is None, bad


def test_run_mean_loss_weights_each_log_by_its_steps():
    from alignx.checkpoints import run_mean_loss

    history = [{"loss": 4.0, "step": 1}, {"loss": 2.0, "step": 3}, {"eval_loss": 9.0, "step": 3},
               {"loss": 1.0, "step": 4}, {"train_loss": 7.0, "step": 4}]
    assert run_mean_loss(history) == pytest.approx((4.0 + 2 * 2.0 + 1.0) / 4)
    assert run_mean_loss([]) is None


SLOW_SAVE = """
import shutil, sys, time
from pathlib import Path
from alignx.atomic import replace_dir, write_json
src, root, report = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
with replace_dir(root / "helpful") as tmp:           # a new helpful expert, being saved
    for f in src.iterdir():
        shutil.copy(f, tmp / f.name)
    write_json(report, {"new": object()}, default=lambda o: time.sleep(600))   # a slow write of report.json
"""


def test_a_sigkill_mid_save_leaves_the_old_artefact_and_loaders_skip_the_temp(tmp_path):
    """A real SIGKILL while an expert folder and a report are being written: the old expert and
    report stay as they were, the temp entries left behind are dot-names, and the loaders
    (experts, Studio, NegotiaX circuits) skip them."""
    from types import SimpleNamespace

    from alignx.atomic import is_temporary
    from alignx.experts.io import list_experts
    from alignx.negotiax.family import available
    from alignx.studio import Studio
    from tiny_studio import make_random_experts

    root, new = tmp_path / "experts", tmp_path / "new"
    make_random_experts(root)
    make_random_experts(new, ["helpful"], seed=5)
    report = tmp_path / "report.json"
    report.write_text('{"old": true}\n')
    old_weights = (root / "helpful" / "adapter_model.safetensors").read_bytes()
    log = tmp_path / "save.log"
    proc = start(["-c", SLOW_SAVE, str(new / "helpful"), str(root), str(report)], log, module=False)
    kill_when(proc, lambda: any(tmp_path.glob(".report.json.*")), log, timeout=60)
    left = sorted(p.name for p in [*root.iterdir(), *tmp_path.iterdir()] if is_temporary(p))
    assert any(n.startswith(".helpful-") for n in left) and any(n.startswith(".report.json.") for n in left), left
    temp_expert = next(root.glob(".helpful-*"))
    assert (temp_expert / "card.json").is_file()                # it even looks complete
    assert (root / "helpful" / "adapter_model.safetensors").read_bytes() == old_weights
    assert json.loads(report.read_text()) == {"old": True}
    assert list(list_experts(root)) == ["harmless", "helpful", "honest"]
    assert Studio.load("tiny-random", root, with_router=False).experts.keys() == {"harmless", "helpful", "honest"}
    # a NegotiaX circuits folder with a killed save's temp copy of "full"
    circuits = tmp_path / "negotiax"
    for name in ("full", ".full-k1ll3d", ".full.old-1-abcd"):
        (circuits / name).mkdir(parents=True)
        (circuits / name / "circuit.safetensors").write_bytes(b"x")
        (circuits / name / "card.json").write_text(json.dumps({"base_model": "tiny-random", "objectives": []}))
    studio = SimpleNamespace(lm=SimpleNamespace(name="tiny-random"), extras={"negotiax_dir": circuits})
    assert available(studio) == {"negotiax": circuits / "full"}


def test_generation_cache_survives_odd_line_ends_and_a_missing_newline(tmp_path):
    """Answers with U+0085 / U+2028 (json leaves them raw; ``str.splitlines`` splits on them) and a
    run killed after a line but before its newline: the cache reads back every answer and the
    next append starts a new line."""
    from alignx.eval.runner import GenerationCache

    cache = GenerationCache(tmp_path / "generations.jsonl", "k")
    cache.append({"task": "t", "id": "1", "prompt": "p", "output": "a\x85b\u2028c\u2029d"})
    with cache.path.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"task": "t", "id": "2", "prompt": "p", "output": "x", "key": "k"}))   # no newline
    rows = cache.load()
    assert rows[("t", "1")]["output"] == "a\x85b\u2028c\u2029d" and rows[("t", "2")]["output"] == "x"
    cache.append({"task": "t", "id": "3", "prompt": "p", "output": "y"})
    assert [r["output"] for r in cache.load().values()] == ["a\x85b\u2028c\u2029d", "x", "y"]


def test_an_unreadable_train_mac_checkpoint_is_one_clear_error(tmp_path):
    from alignx.errors import InvalidInput
    from alignx.models import load_model
    from alignx.negotiax import preset
    from alignx.negotiax.core import NegotiaX
    from alignx.negotiax.train import train_mac, train_preset

    lm = load_model("tiny-random")
    nx = NegotiaX.fresh(lm.model, lm.tokenizer, ("helpful", "honest"), preset("tiny"))
    ckpt = tmp_path / ".work" / "full" / "checkpoint.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"PK\x03\x04 cut short")
    data = {o: [("Question?", "An answer.")] * 2 for o in ("helpful", "honest")}
    with pytest.raises(InvalidInput, match=r"checkpoint\.pt: not a readable Train_MAC checkpoint.*without --resume"):
        train_mac(nx, data, nx.cfg, train_preset("tiny", steps=2), tmp_path, name="full", resume=True)
