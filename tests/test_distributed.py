"""Multi-process runs: the sharing rules (``alignx.distributed``), the shard files of an evaluation,
and, marked slow, the whole job list (train-experts, train-mac, DPO, eval) under
``accelerate launch --multi_gpu --num_processes 2`` on this CPU (gloo) against one process."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from alignx import distributed as dist
from alignx.errors import InvalidInput

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("n", range(0, 13))
def test_split_batches_covers_every_item_in_whole_batches(n):
    items = list(range(n))
    for batch in (1, 2, 3, 5):
        for world in (1, 2, 3):
            shares = [dist.split_batches(items, batch, world, r) for r in range(world)]
            assert sum(shares, []) == items                              # in order, each item once
            batches = [items[i:i + batch] for i in range(0, n, batch)]
            cut = [b for s in shares for b in (s[i:i + batch] for i in range(0, len(s), batch))]
            assert cut == batches                                        # every batch is a one-process batch
            counts = [-(-len(s) // batch) for s in shares]
            assert max(counts) - min(counts) <= 1                        # batches shared out evenly


def test_batch_plan_keeps_the_global_batch():
    assert dist.batch_plan(64, 8, 1) == (8, 8) and dist.batch_plan(64, 8, 2) == (8, 4)
    assert dist.batch_plan(4, 2, 2) == (2, 1) and dist.batch_plan(2, 2, 2) == (1, 1)
    assert dist.batch_plan(12, 8, 2) == (6, 1) and dist.batch_plan(10, 4, 1) == (2, 5)
    for g in range(1, 40):
        for per in (1, 2, 3, 8):
            for w in (1, 2, 4):
                if g % w:
                    with pytest.raises(InvalidInput, match=f"not a multiple of the {w} processes"):
                        dist.batch_plan(g, per, w)
                    continue
                d, acc = dist.batch_plan(g, per, w)
                assert d * w * acc == g and 1 <= d <= per
    with pytest.raises(InvalidInput, match=">= 1"):
        dist.batch_plan(0, 8, 1)


def test_expert_config_plan_follows_the_processes(monkeypatch):
    from alignx.experts.config import preset

    cfg = preset("paper")                              # global batch 64, 8 per device
    assert cfg.plan(1) == (8, 8) and cfg.plan(8) == (8, 1) and cfg.gradient_checkpointing
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert cfg.grad_accum == 2                         # this run's processes: 8 x 4 x 2 = 64


def test_device_follows_local_rank(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dist.launch_device("auto") == torch.device("cpu")           # no GPU: gloo on the CPU
    with pytest.raises(InvalidInput, match="no CUDA GPU"):
        dist.launch_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert dist.launch_device("auto") == torch.device("cuda", 1)       # this process's own GPU
    assert dist.launch_device("cuda") == torch.device("cuda", 1)
    assert dist.launch_device("cuda:0") == torch.device("cuda", 0)     # an explicit index is kept
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")                    # accelerate launch --cpu
    assert dist.launch_device("auto") == torch.device("cpu")
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("ACCELERATE_USE_CPU")
    assert dist.launch_device(None) == torch.device("cuda")            # one process: the default GPU


def test_dtype_defaults(monkeypatch):
    from alignx.models import pick_dtype

    assert pick_dtype(torch.device("cpu")) == torch.float32             # the CPU stays fp32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert pick_dtype(torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert pick_dtype(torch.device("cuda")) == torch.float16
    assert pick_dtype(torch.device("cuda"), "float32") == torch.float32


def test_generation_shards_resume_and_merge(tmp_path):
    from alignx.eval.runner import CacheMismatch, GenerationCache

    cache = GenerationCache(tmp_path / "generations.jsonl", "k1")
    cache.append({"task": "alpaca", "id": "a", "prompt": "p", "output": "x"})
    cache.shard(1).append({"task": "alpaca", "id": "b", "prompt": "q", "output": "y"})
    with cache.shard(0).path.open("a") as f:
        f.write('{"task": "alp')                                        # killed mid-line
    assert set(cache.load()) == {("alpaca", "a"), ("alpaca", "b")}       # a rerun sees every process's rows
    rows = [cache.load()[k] for k in (("alpaca", "a"), ("alpaca", "b"))]
    cache.merge([{k: v for k, v in r.items() if k != "key"} for r in rows])
    assert cache.shard_paths() == []
    assert [json.loads(x)["id"] for x in cache.path.read_text().splitlines()] == ["a", "b"]
    GenerationCache(tmp_path / "generations.jsonl", "k2").shard(0).append({"task": "t", "id": "c", "prompt": "",
                                                                             "output": ""})
    with pytest.raises(CacheMismatch, match="another run"):
        cache.load()


def test_score_shards_are_read_back(tmp_path):
    from alignx.eval.scores import ScoreCache

    main = ScoreCache(tmp_path / "scores.json", "k")
    shard = main.shard(1)
    shard.scores["h1"] = -1.5
    shard.save()
    again = ScoreCache(tmp_path / "scores.json", "k")
    assert again.scores == {"h1": -1.5}
    again.save()
    again.remove_shards()
    assert ScoreCache(tmp_path / "scores.json", "k").scores == {"h1": -1.5} and main.shard_paths() == []


def test_4bit_load_fails_clearly_without_cuda_or_bitsandbytes():
    import importlib.util

    from alignx.models import load_model, quantization_4bit

    with pytest.raises(InvalidInput, match="needs a CUDA GPU"):
        load_model("tiny-random", device="cpu", load_in_4bit=True)
    if importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(InvalidInput, match="bitsandbytes package"):
            quantization_4bit(torch.device("cuda", 0))


def test_train_mac_needs_a_row_per_process(monkeypatch, tiny_lm):
    from alignx.negotiax import preset
    from alignx.negotiax.core import NegotiaX
    from alignx.negotiax.train import train_mac, train_preset

    monkeypatch.setenv("WORLD_SIZE", "4")                   # checked before any process group is needed
    nx = NegotiaX.fresh(tiny_lm.model, tiny_lm.tokenizer, ["harmless", "helpful"], preset("tiny"))
    data = {o: [("Say hi.", "Hi.")] * 4 for o in ("harmless", "helpful")}
    with pytest.raises(InvalidInput, match="fewer rows per step than the 4 processes"):
        train_mac(nx, data, nx.cfg, train_preset("tiny", batch_size=2), "/nonexistent/never-written")


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path, data_dir):
    """train-experts, train-mac, personal train (DPO) and eval under ``accelerate launch --multi_gpu
    --num_processes 2`` (no GPU here: torchrun + gloo on the CPU) give what one process gives: the
    same adapters and circuit within float tolerance, the same generations, scores and report."""
    sys.path.insert(0, str(REPO / "tests"))
    from tiny_studio import build

    build(tmp_path / "studio")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", PYTHONPATH=str(REPO))
    worker = [str(REPO / "tests" / "dist_worker.py")]
    args = [str(tmp_path / "studio"), str(data_dir)]
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    with socket.socket() as s:                          # a free port: other runs may hold 29500
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    t0 = time.time()
    one = subprocess.run([sys.executable, *worker, str(tmp_path / "one"), *args], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    t1 = time.time()
    two = subprocess.run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", port,
                          *worker, str(tmp_path / "two"), *args], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    print(f"1 process {t1 - t0:.0f} s, 2 processes {time.time() - t1:.0f} s")
    a, b = tmp_path / "one", tmp_path / "two"
    from dist_worker import compare

    result = compare(a, b)
    assert result["experts_adapter_max_abs_diff"] <= 1e-6 and result["dpo_adapter_max_abs_diff"] <= 1e-6
    assert result["mac_circuit_max_abs_diff"] <= 1e-5
    assert all(result["eval_files_identical"].values()) and result["eval_report_equal"], result
    assert json.loads((b / "times.json").read_text())["processes"] == 2
    card = json.loads((b / "experts" / "helpful" / "card.json").read_text())
    assert card["processes"]["processes"] == 2 and card["processes"]["global_batch"] == 4
    assert card["processes"]["grad_accum"] == 1                        # 2 per device x 2 processes x 1
    from safetensors.torch import load_file                            # and the adapter did learn (B starts at 0)

    trained = load_file(a / "experts" / "helpful" / "adapter_model.safetensors")
    assert max(float(v.abs().max()) for k, v in trained.items() if "lora_B" in k) > 1e-4
    assert json.loads((b / "mac/full/card.json").read_text())["processes"] == {"processes": 2, "backend": "gloo"}
    assert json.loads((b / "eval/report.json").read_text())["run"]["processes"] == 2
    assert not list((b / "eval").glob("*.shard-*")) and not (b / "experts" / ".work" / "helpful").exists()


@pytest.mark.slow
def test_gradient_checkpointing_trains_the_same_adapter(tmp_path, data_dir):
    """The paper presets' gradient checkpointing (non-reentrant, frozen peft base) only trades compute
    for memory: the adapter equals the one trained without it."""
    from safetensors.torch import load_file

    from alignx.experts.config import preset
    from alignx.experts.train import train_expert
    from alignx.models import load_model

    pairs = [(f"Name a colour, number {i}.", f"Blue is colour number {i}.") for i in range(8)]
    out = {}
    for gc in (False, True):
        cfg = preset("tiny", max_steps=3, gradient_checkpointing=gc)
        path = train_expert(load_model("tiny-random", device="cpu"), "helpful", tmp_path / str(gc), cfg,
                            data_dir=data_dir, pairs=pairs)
        out[gc] = load_file(path / "adapter_model.safetensors")
    assert max(float(v.abs().max()) for k, v in out[True].items() if "lora_B" in k) > 1e-4
    assert max(float((out[True][k] - out[False][k]).abs().max()) for k in out[True]) <= 1e-6
