"""What scales out without running it here: the accelerate configs for 7B on GPUs (read and
validated by accelerate's own classes), bench/gpu.sh (syntax, its clear failure without CUDA), the
GPU batch-size arithmetic, and the README's scale-out commands against the CLI and presets."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "accelerate"
EXPECTED = {"deepspeed_zero2.yaml": ("DEEPSPEED", 2), "deepspeed_zero3.yaml": ("DEEPSPEED", 3),
            "fsdp.yaml": ("FSDP", None), "ddp.yaml": ("MULTI_GPU", None)}


def _launch_args(path: Path):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(path), "train.py"])
    return _validate_launch_command(args)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_config_is_valid(name):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    path = CONFIGS / name
    cfg = ClusterConfig.from_yaml_file(path)          # unknown keys raise here
    kind, stage = EXPECTED[name]
    assert cfg.distributed_type.value == kind and cfg.mixed_precision == "bf16" and not cfg.use_cpu
    assert cfg.num_machines == 1 and cfg.num_processes >= 2
    known = {a.dest for a in launch_command_parser()._actions}
    for key in [*cfg.deepspeed_config, *cfg.fsdp_config]:      # each becomes an `accelerate launch` option
        assert key in known, f"{name}: {key} is not an accelerate launch option"
    args, defaults, _ = _launch_args(path)
    assert args.mixed_precision == "bf16" and args.use_deepspeed == (kind == "DEEPSPEED")
    assert args.use_fsdp == (kind == "FSDP")
    text = path.read_text()
    assert f"--config_file configs/accelerate/{name}" in text            # the command it is for


@pytest.mark.parametrize("name", ["deepspeed_zero2.yaml", "deepspeed_zero3.yaml"])
def test_deepspeed_plugin_leaves_batches_to_the_trainer(name):
    from accelerate.utils import DeepSpeedPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    args, defaults, _ = _launch_args(CONFIGS / name)
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
    _, env = prepare_deepspeed_cmd_env(args)
    with mock.patch.dict(os.environ, {k: v for k, v in env.items() if k.startswith("ACCELERATE")}):
        ds = DeepSpeedPlugin().deepspeed_config
    stage = EXPECTED[name][1]
    assert ds["zero_optimization"]["stage"] == stage
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"):
        assert ds[key] == "auto", key                                   # filled from the Trainer's arguments
    if stage == 3:                                                      # the adapter is gathered to be saved
        assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_fsdp_environment():
    from accelerate.utils.launch import prepare_multi_gpu_env

    args, _, _ = _launch_args(CONFIGS / "fsdp.yaml")
    env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    assert env["FSDP_SHARDING_STRATEGY"] == "FULL_SHARD" and env["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT"
    assert env["FSDP_USE_ORIG_PARAMS"] == "true"                         # LoRA: frozen + trainable in one unit
    assert env["FSDP_ACTIVATION_CHECKPOINTING"] == "false"              # the Trainer's checkpointing instead
    assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"


def test_paper_presets_use_gradient_checkpointing_and_keep_their_batch():
    from alignx.experts.config import preset as expert_preset
    from alignx.personal.train import preset as dpo_preset

    assert expert_preset("paper").gradient_checkpointing and not expert_preset("cpu").gradient_checkpointing
    assert dpo_preset("paper").gradient_checkpointing
    for world in (1, 2, 4, 8):
        d, acc = expert_preset("paper").plan(world)
        assert d * world * acc == 64


def unquoted_expansions(script: str) -> list[str]:
    """``$NAME`` / ``${NAME}`` expansions outside double quotes (word splitting: shellcheck SC2086),
    by line, skipping comments, single-quoted text and here-documents."""
    found, heredoc_end = [], None
    for n, line in enumerate(script.splitlines(), 1):
        if heredoc_end is not None:
            heredoc_end = None if line.strip() == heredoc_end else heredoc_end
            continue
        marker = re.search(r"<<-?\s*'?(\w+)'?", line)
        if marker:
            heredoc_end = marker.group(1)
        quote, i = None, 0
        while i < len(line):
            c = line[i]
            if quote is None and c == "#" and (i == 0 or line[i - 1].isspace()):
                break
            if c == "\\" and quote != "'":
                i += 2
                continue
            if c in "'\"" and quote in (None, c):
                quote = None if quote == c else c
            elif c == "$" and quote is None and re.match(r"\$\{?[A-Za-z_]", line[i:]):
                found.append(f"line {n}: {line.strip()}")
            i += 1
    return found


def test_unquoted_expansions_checker():
    assert unquoted_expansions('echo $A\n') == ["line 1: echo $A"]
    assert unquoted_expansions('echo "$A" \'$B\' # $C\ncat <<EOF\n$D\nEOF\nx=$?\n') == []


def test_gpu_script_syntax_and_clear_failure_without_cuda():
    script = REPO / "bench" / "gpu.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    for bench in ("bench/$bench.py", "--device cuda", "pytest -m gpu"):
        assert bench in text
    assert "decode negotiax" in text
    assert not unquoted_expansions(text)                                # shellcheck's SC2086
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: bench/gpu.sh would run the benches")
    run = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHON=sys.executable))
    assert run.returncode == 2 and "no CUDA GPU" in run.stderr and run.stdout == ""


def test_batch_for_memory_arithmetic():
    from alignx.errors import InvalidInput
    from alignx.memory import Shape, batch_for_memory

    mistral = Shape(layers=32, hidden=4096, intermediate=14336, kv_heads=8, head_dim=128, vocab=32000, dtype_bytes=2)
    assert mistral.kv_bytes_per_token() == 2 * 32 * 8 * 128 * 2 == 128 * 1024      # 128 KiB per token in bf16
    assert mistral.work_bytes_per_token() == (4 * 4096 + 3 * 14336) * 2 + 8 * 32000
    row = mistral.row_bytes(1024)
    assert row == 1024 * (131072 + 374784)
    gib = 2 ** 30
    assert batch_for_memory(40 * gib, mistral, 1024) == int(40 * gib * 0.8) // row == 66
    assert batch_for_memory(40 * gib, mistral, 1024, rows=4) == 16              # one row per expert + base
    assert batch_for_memory(40 * gib, mistral, 1024, reserve=0.0) == 40 * gib // row
    assert batch_for_memory(10 ** 6, mistral, 1024) == 1                         # never below one prompt
    assert batch_for_memory(10 ** 15, mistral, 16) == 256                        # capped
    with pytest.raises(InvalidInput):
        batch_for_memory(gib, mistral, 0)


def test_auto_batch_size_is_the_default_on_cpu(tiny_lm):
    from alignx.memory import DEFAULT_BATCH, Shape, auto_batch_size, parse_batch_size

    assert auto_batch_size(tiny_lm.model, 512) == DEFAULT_BATCH == 8             # the CPU path is unchanged
    shape = Shape.of(tiny_lm.model)
    assert (shape.layers, shape.hidden, shape.kv_heads, shape.head_dim, shape.dtype_bytes) == (2, 64, 2, 16, 4)
    assert parse_batch_size("auto") == "auto" and parse_batch_size("4") == 4
    with pytest.raises(ValueError, match="positive integer"):
        parse_batch_size("four")


def _readme_commands(section: str) -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    body = text.split(section, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", body, re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if "-m alignx" in line:
                commands.append(shlex.split(line.split("-m alignx", 1)[1]))
    return commands


def test_readme_scale_out_commands_parse():
    """Every ``-m alignx`` command of the README's "Scale out" section parses with this CLI, its
    presets exist, and the 7B models named there are the paper's."""
    from alignx.cli import build_parser
    from alignx.experts.config import PRESETS as EXPERT_PRESETS
    from alignx.negotiax.train import TRAIN_PRESETS
    from alignx.personal.train import PRESETS as DPO_PRESETS

    commands = _readme_commands("## Scale out")
    assert len(commands) >= 6
    seen = set()
    parser = build_parser()
    for argv in commands:
        args = parser.parse_args(argv)
        seen.add(args.command)
        preset = getattr(args, "preset", None)
        if preset:
            presets = {"train-experts": EXPERT_PRESETS, "train-mac": TRAIN_PRESETS, "personal": DPO_PRESETS}
            assert preset in presets[args.command], argv
        for flag in ("base", "model"):
            name = getattr(args, flag, None)
            if name and "/" in name:
                assert name in ("mistralai/Mistral-7B-Instruct-v0.2", "meta-llama/Llama-2-7b-chat-hf"), argv
    assert {"train-experts", "train-mac", "personal", "eval"} <= seen
    text = (REPO / "README.md").read_text()
    for name in EXPECTED:
        assert f"configs/accelerate/{name}" in text
