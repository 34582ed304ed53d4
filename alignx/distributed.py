"""Multi-process runs under ``accelerate launch`` (or ``torchrun``): who this process is, its device,
how work is shared out, and who writes.

A launcher starts W copies of the same command and sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``;
without one, W = 1 and every function here is a no-op (nothing is imported, no process group).
Contracts the training and evaluation code relies on:

* **device**: ``--device auto`` (and a bare ``cuda``) under a launcher is ``cuda:LOCAL_RANK`` when a
  GPU exists and the launch is not ``--cpu``; else the CPU (gloo);
* **global batch** = per-device batch x W x gradient-accumulation steps, whatever W is
  (``batch_plan``): a run on 2 processes sees the same optimizer batches as one process;
* **sharding** is contiguous and batch-aligned (``split_batches``): process r gets whole batches
  ``[r * n / W, (r + 1) * n / W)`` of the one-process batch list (the split of accelerate's
  ``PartialState.split_between_processes`` applied to batches), so every batch, and so every greedy
  answer and every log-probability, is the one a single process computes;
* **writes**: only the main process (rank 0) writes cards, exports, merged files and checkpoint
  metadata (all through ``alignx.atomic``); the others wait at a ``barrier``.
"""
from __future__ import annotations

import os
from typing import Any, Sequence, TypeVar

from alignx.errors import InvalidInput

T = TypeVar("T")


def world_size() -> int:
    """W: processes in this run (``WORLD_SIZE`` set by the launcher; 1 without one)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def launched() -> bool:
    """True when a launcher started more than one process."""
    return world_size() > 1


def is_main() -> bool:
    return rank() == 0


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def launch_device(requested: str | None = None):
    """The device of this process for ``requested`` in (None, "auto", "cuda"): ``cuda:LOCAL_RANK``
    under a launcher with GPUs (``cuda`` without one; never another process's GPU), else the CPU.
    ``accelerate launch --cpu`` (``ACCELERATE_USE_CPU``) keeps everything on the CPU."""
    import torch

    if requested not in (None, "auto", "cuda"):
        return torch.device(requested)
    cpu_only = _env_true("ACCELERATE_USE_CPU")
    if requested == "cuda" or (torch.cuda.is_available() and not cpu_only):
        if not torch.cuda.is_available():
            raise InvalidInput("--device cuda: no CUDA GPU is visible to this process")
        return torch.device("cuda", local_rank() % max(1, torch.cuda.device_count())) if launched() \
            else torch.device("cuda")
    return torch.device("cpu")


def state():
    """accelerate's ``PartialState`` (it joins the process group on first use under a launcher:
    gloo on CPUs, nccl on GPUs); None in a single process, where nothing needs it."""
    if not launched():
        return None
    import torch
    from accelerate import PartialState

    # cpu=True where no GPU is usable: accelerate then runs MULTI_CPU over gloo (its default would
    # fall back to one process on a machine without CUDA, whatever the launcher started)
    return PartialState(cpu=_env_true("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


def barrier() -> None:
    """Wait until every process arrives (no-op in one process)."""
    st = state()
    if st is not None:
        st.wait_for_everyone()


def gather(items: list[T]) -> list[T]:
    """Every process's ``items`` concatenated in rank order, on every process (picklable items;
    accelerate's ``gather_object``); ``items`` itself in one process."""
    if not launched():
        return list(items)
    from accelerate.utils import gather_object

    state()
    return list(gather_object(list(items)))


def reduce_sum(values: Sequence[float], device=None) -> list[float]:
    """Element-wise sum over processes of a short vector of numbers (float64 all-reduce)."""
    if not launched():
        return [float(v) for v in values]
    import torch
    import torch.distributed as tdist

    st = state()
    t = torch.tensor([float(v) for v in values], dtype=torch.float64,
                     device=device if device is not None else st.device)
    tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t.cpu().tolist()


def shard_bounds(n: int, processes: int | None = None, index: int | None = None) -> tuple[int, int]:
    """[start, end) of process ``index``'s share of n units: contiguous, the first n % W processes get
    one more (the rule of ``PartialState.split_between_processes``)."""
    w = world_size() if processes is None else processes
    r = rank() if index is None else index
    per, extra = divmod(n, w)
    start = r * per + min(r, extra)
    return start, start + per + (1 if r < extra else 0)


def split_batches(items: Sequence[T], batch_size: int, processes: int | None = None,
                  index: int | None = None) -> list[T]:
    """This process's items when ``items`` is cut into batches of ``batch_size`` (the last may be
    shorter) and the batches are shared out contiguously (``shard_bounds`` over batches). The
    concatenation over processes in rank order is ``items``, and each batch is a one-process batch."""
    if batch_size < 1:
        raise InvalidInput(f"batch_size must be >= 1, got {batch_size}")
    n_batches = -(-len(items) // batch_size)
    start, end = shard_bounds(n_batches, processes, index)
    return list(items[start * batch_size:end * batch_size])


def batch_plan(global_batch: int, per_device: int, processes: int | None = None) -> tuple[int, int]:
    """(per-device batch, gradient-accumulation steps) with per_device' x W x accum == global_batch,
    per_device' the largest divisor of global_batch / W not above ``per_device``. Raises when
    ``global_batch`` is not a multiple of W (no split gives the same optimizer batch)."""
    w = world_size() if processes is None else processes
    if global_batch < 1 or per_device < 1:
        raise InvalidInput(f"batch sizes must be >= 1 (global {global_batch}, per device {per_device})")
    if global_batch % w:
        raise InvalidInput(f"global batch {global_batch} is not a multiple of the {w} processes: choose a batch "
                           f"size divisible by {w} so every process gets the same share")
    share = global_batch // w
    d = max(x for x in range(1, min(per_device, share) + 1) if share % x == 0)
    return d, share // d


def describe() -> dict[str, Any]:
    """What a card records about the processes of a run."""
    return {"processes": world_size(), "backend": _backend()}


def _backend() -> str | None:
    st = state()
    return None if st is None else str(st.backend)


def trained_state_dict(trainer) -> dict:
    """The full state dict of a ``transformers.Trainer``'s trained model, for the main process to
    save (``save_pretrained(state_dict=...)``): accelerate's ``get_state_dict`` of the wrapped model,
    which gathers ZeRO-3 partitions (needs ``zero3_save_16bit_model: true``, set in
    ``configs/accelerate/deepspeed_zero3.yaml``) and FSDP shards, and unwraps DDP. A collective
    under DeepSpeed / FSDP: every process calls it."""
    return trainer.accelerator.get_state_dict(trainer.model_wrapped)
