"""Log-likelihood scoring for the judge-free metrics (MC1/MC2, Alignment Accuracy), cached.

``chunked_logprob`` scores (prompt, continuation) pairs longest first, so each batch pads to
rows of nearly one length, and returns them in the caller's order. With a ``ScoreCache`` it
skips pairs scored before and saves after every chunk: a rerun of a finished evaluation (the
sweep's collector pass, a resumed run) scores nothing again, and the reference policy's scores
for Alignment Accuracy, the same for every mode of one base model, are computed once.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Sequence

import torch

log = logging.getLogger(__name__)


def pair_hash(prompt: str, continuation: str) -> str:
    return hashlib.sha256(f"{prompt}\0{continuation}".encode()).hexdigest()[:24]


class ScoreCache:
    """One JSON file ``{"key": ..., "scores": {pair_hash: log-prob}}`` for one policy; ``key``
    names the policy (model, mode, calibration, experts). A file of another key is not mixed in:
    it is set aside as ``<name>.stale`` and scoring starts afresh. Written atomically; ``refresh``
    and ``save`` merge in what other processes saved meanwhile (parallel runs sharing one
    reference), so none of their scores is lost for later runs."""

    def __init__(self, path: str | Path, key: str):
        self.path, self.key = Path(path), key
        self.scores: dict[str, float] = {}
        self.refresh()

    def shard_paths(self) -> list[Path]:
        return sorted(self.path.parent.glob(f"{self.path.stem}.shard-*{self.path.suffix}"))

    def shard(self, index: int) -> "ScoreCache":
        """Process ``index``'s own file next to this one (multi-process runs; ``refresh`` reads it)."""
        return ScoreCache(self.path.with_name(f"{self.path.stem}.shard-{index}{self.path.suffix}"), self.key)

    def remove_shards(self) -> None:
        for path in self.shard_paths():
            path.unlink(missing_ok=True)

    def _on_disk(self, path: Path | None = None) -> dict[str, float]:
        path = path or self.path
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("key") == self.key and isinstance(data.get("scores"), dict):
                return {k: float(v) for k, v in data["scores"].items()}
        except (json.JSONDecodeError, OSError, TypeError, ValueError):
            pass
        log.warning("%s: scores of another policy or unreadable; moved to %s.stale", path, path.name)
        try:
            path.replace(path.with_name(path.name + ".stale"))
        except FileNotFoundError:             # another process moved it first
            pass
        return {}

    def refresh(self) -> None:
        """Merge in the file and any shard a multi-process run left (a killed run's scores count)."""
        for path in [self.path, *(p for p in self.shard_paths() if p != self.path)]:
            self.scores.update(self._on_disk(path))

    def save(self) -> None:
        from alignx.atomic import write_text

        self.refresh()
        write_text(self.path, json.dumps({"key": self.key, "scores": self.scores}) + "\n")


def progress_bar(total: int, desc: str, enabled: bool):
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="item", disable=not enabled, file=sys.stderr)


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's own weights (LoRA and other adapter weights left out), from each
    tensor's name, shape, sum and absolute sum: changes when the weights change, costs one pass."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                continue
            name = name.replace("base_model.model.", "").replace(".base_layer", "")
            t = p.detach().double()
            h.update(f"{name}{tuple(p.shape)}{float(t.sum()):.6e}{float(t.abs().sum()):.6e}".encode())
    return h.hexdigest()[:16]


def chunked_logprob(policy, prompts: Sequence[str], conts: Sequence[str], batch_size: int, bar_desc: str,
                    progress: bool, cache: ScoreCache | None = None) -> list[float]:
    """``policy.logprob`` of every pair, longest first in chunks of 4 batches (one progress step and,
    with ``cache``, one save per chunk); pairs already in ``cache`` are not scored again. Under a
    launcher the longest-first batches are shared out contiguously (``split_batches``: each process
    scores whole one-process batches, so the same numbers), saved to the process's shard of
    ``cache``, gathered, and the main process saves the merged cache."""
    from alignx import distributed as dist

    keys = [pair_hash(p, c) for p, c in zip(prompts, conts)]
    if cache is not None:
        cache.refresh()
    scores = cache.scores if cache is not None else {}
    todo = sorted({k: i for i, k in enumerate(keys) if k not in scores}.values(),
                  key=lambda i: -(len(prompts[i]) + len(conts[i])))
    dist.barrier()                      # every process has read the same cache before any writes to a shard
    mine = dist.split_batches(todo, batch_size)
    writer = cache.shard(dist.rank()) if cache is not None and dist.launched() else cache
    bar = progress_bar(len(prompts), bar_desc, progress and dist.is_main())
    bar.update(len(prompts) - len(todo))
    step = max(batch_size * 4, 1)
    for s in range(0, len(mine), step):
        idx = mine[s:s + step]
        lp = policy.logprob([prompts[i] for i in idx], [conts[i] for i in idx], batch_size=batch_size)
        scores.update((keys[i], v) for i, v in zip(idx, lp))
        if writer is not None:
            writer.scores.update((keys[i], v) for i, v in zip(idx, lp))
            writer.save()
        bar.update(len(idx))
    bar.close()
    if dist.launched():
        scores.update(dist.gather([(keys[i], scores[keys[i]]) for i in mine]))
        if cache is not None and dist.is_main():
            cache.save()
            cache.remove_shards()
        dist.barrier()
    return [scores[k] for k in keys]
