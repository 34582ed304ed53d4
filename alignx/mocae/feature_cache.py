"""The latent space's input features h_a(x), computed once per prompt and cached on disk.

``LatentSpace.encode`` runs the base model and every expert on each prompt (1 + n adapters);
on a shared CPU that costs seconds per prompt, and routing evaluations and router refits read
the same prompts again and again. ``CachedFeatures`` keeps h (n_adapters, d) per prompt under

    ~/.cache/alignx/features/<fingerprint>/shard-*.safetensors

``fingerprint`` = sha256 of the base model's name, the adapters (names and the bytes of each
expert's ``adapter_model.safetensors``) and ``max_length``: a retrained expert or another base
model never reads stale features. Each shard holds ``h`` (n_adapters, m, d) in float32 and, in
its metadata, the sha256 of each of its m prompts; shards are written atomically after every
few batches, so a killed run loses at most one shard.

Speed: the prompts still missing are sorted by token length before batching (less padding),
and when the experts' LoRA starts above layer 0 the batch runs the shared trunk once
(``alignx.mocae.fusion.expert_forward`` with ``StackedLoRA``: the layers below the fork on B
rows, the layers above on (n + 1) B rows, the last copy without any update = the base). Same
features as ``alignx.experts.latent.features`` up to float rounding (tested).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Sequence

import torch

from alignx import atomic, hooks
from alignx.experts.latent import _ids, features
from alignx.generation import BASE, model_lock

DEFAULT_ROOT = Path(os.environ.get("ALIGNX_CACHE", Path.home() / ".cache" / "alignx")) / "features"


def prompt_key(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def fingerprint(model_name: str, adapters: Sequence[str], experts_dir: str | os.PathLike | None,
                max_length: int) -> str:
    """sha256 over the model name, the adapter names, each expert's weights file and max_length."""
    h = hashlib.sha256(json.dumps([model_name, list(adapters), max_length]).encode())
    for a in adapters:
        if a == BASE or experts_dir is None:
            continue
        path = Path(experts_dir) / a / "adapter_model.safetensors"
        h.update(path.read_bytes() if path.exists() else a.encode())
    return h.hexdigest()[:32]


@torch.inference_mode()
def trunk_features(model, tokenizer, prompts: Sequence[str], experts: Sequence[str], stacked,
                   max_length: int = 256) -> torch.Tensor:
    """(1 + n, B, d) mean-pooled last hidden states, [BASE, *experts] order, of one batch via the
    shared trunk: copies 0..n-1 of the rows above the fork read expert i, copy n reads none."""
    from alignx.mocae.fusion import expert_forward

    rows = [_ids(tokenizer, (p, None))[:max_length] for p in prompts]
    width = max(map(len, rows))
    device = next(model.parameters()).device
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows], device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    bf16 = device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    last = hooks.hidden_state_name(model, -1)
    k = len(experts) + 1
    names = [e for e in experts for _ in rows] + [BASE] * len(rows)
    with model_lock(model), hooks.capture(model, last) as cache, \
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        expert_forward(model, stacked, names, len(rows), input_ids=ids, attention_mask=mask, logits_to_keep=1)
    hs = cache[last].float()
    full = mask.repeat(k, 1)
    pooled = ((hs * full[..., None]).sum(1) / full.sum(1, keepdim=True)).view(k, len(rows), -1).cpu()
    return torch.cat([pooled[-1:], pooled[:-1]])


class CachedFeatures:
    """``__call__(prompts) -> (n_adapters, n, d)`` features of a latent space's adapters, cached."""

    def __init__(self, model, tokenizer, adapters: Sequence[str], model_name: str,
                 experts_dir: str | os.PathLike | None, root: str | os.PathLike | None = None,
                 max_length: int = 256, batch_size: int = 16, shard_batches: int = 4,
                 progress: Callable[[int, int], None] = lambda done, total: None):
        self.model, self.tokenizer, self.adapters = model, tokenizer, list(adapters)
        self.max_length, self.batch_size, self.shard_batches, self.progress = max_length, batch_size, shard_batches, progress
        self.folder = Path(root or DEFAULT_ROOT) / fingerprint(model_name, self.adapters, experts_dir, max_length)
        self._rows: dict[str, torch.Tensor] = {}
        self._stacked = self._make_stacked()
        self._load()

    @classmethod
    def for_space(cls, studio, space, **kw) -> "CachedFeatures":
        return cls(studio.model, studio.tokenizer, space.adapters, studio.lm.name, studio.experts_dir, **kw)

    def _make_stacked(self):
        experts = [a for a in self.adapters if a != BASE]
        if self.adapters != [BASE, *experts] or not experts or not hasattr(self.model, "peft_config"):
            return None
        from alignx.mocae.stacked import StackedLoRA

        try:
            stacked = StackedLoRA(self.model, experts)
        except Exception:      # not stackable (non-Linear / DoRA / partial): peft's mixed batches
            return None
        return stacked if stacked.fork > 0 else None

    def _load(self) -> None:
        from safetensors import safe_open

        for shard in sorted(self.folder.glob("shard-*.safetensors")):
            with safe_open(str(shard), "pt") as f:
                keys = json.loads(f.metadata()["keys"])
                h = f.get_tensor("h")
            for i, key in enumerate(keys):
                self._rows[key] = h[:, i]

    def __len__(self) -> int:
        return len(self._rows)

    def missing(self, prompts: Sequence[str]) -> list[str]:
        return [p for p in dict.fromkeys(prompts) if prompt_key(p) not in self._rows]

    def _encode(self, batch: list[str]) -> torch.Tensor:
        if self._stacked is not None:
            return trunk_features(self.model, self.tokenizer, batch, self.adapters[1:], self._stacked, self.max_length)
        return features(self.model, self.tokenizer, batch, self.adapters, len(batch), self.max_length)

    def _flush(self, keys: list[str], parts: list[torch.Tensor]) -> None:
        if not keys:
            return
        n = len(list(self.folder.glob("shard-*.safetensors")))
        atomic.save_safetensors(self.folder / f"shard-{n:05d}-{keys[0][:8]}.safetensors",
                                {"h": torch.cat(parts, 1).contiguous()}, metadata={"keys": json.dumps(keys)})

    def __call__(self, prompts: Sequence[str]) -> torch.Tensor:
        todo = self.missing(prompts)
        todo.sort(key=lambda p: len(_ids(self.tokenizer, (p, None))[: self.max_length]))
        keys: list[str] = []
        parts: list[torch.Tensor] = []
        for s in range(0, len(todo), self.batch_size):
            batch = todo[s:s + self.batch_size]
            h = self._encode(batch)
            for i, p in enumerate(batch):
                self._rows[prompt_key(p)] = h[:, i]
            keys += [prompt_key(p) for p in batch]
            parts.append(h)
            if len(parts) >= self.shard_batches:
                self._flush(keys, parts)
                keys, parts = [], []
            self.progress(min(s + self.batch_size, len(todo)), len(todo))
        self._flush(keys, parts)
        if not prompts:
            return torch.zeros(len(self.adapters), 0, 0)
        return torch.stack([self._rows[prompt_key(p)] for p in prompts], 1)

    def latents(self, space, prompts: Sequence[str]) -> torch.Tensor:
        """The router input of ``LatentSpace.encode``: (n, (1 + n_experts) k), base block first."""
        z = space.project(self(prompts))
        return z.permute(1, 0, 2).reshape(len(prompts), -1)
