"""Frozen-model features for the offline judges.

A (prompt, response) pair is laid out in the model's chat template (user = prompt, assistant =
response), run once through the frozen base model, and the hidden states of the chosen layers are
mean-pooled over the response tokens (plus the last prompt token, so an empty response still has a
vector) and concatenated. Prompts and responses are truncated to a fixed number of tokens so the
cost per row is bounded. Features can be cached on disk, keyed by a hash of the spec and the text.
"""
from __future__ import annotations

from alignx.errors import InvalidInput

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from alignx import hooks
from alignx.atomic import save_safetensors
from alignx.generation import chat_prompt_ids, model_lock


@dataclass(frozen=True)
class FeatureSpec:
    model: str = "smollm2-135m-instruct"
    layers: tuple[int, ...] = (10, 15, 20, 25, -1)   # hidden_states indices (0 = embeddings, -1 = last)
    max_prompt_tokens: int = 96
    max_response_tokens: int = 128

    def to_dict(self) -> dict:
        return dict(asdict(self), layers=list(self.layers), pooling="mean over response tokens + last prompt token")

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        return cls(d["model"], tuple(d["layers"]), int(d["max_prompt_tokens"]), int(d["max_response_tokens"]))

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def encode_pair(tokenizer, prompt: str, response: str, spec: FeatureSpec) -> tuple[list[int], int]:
    """Token ids of the templated pair and the index where the pooled span starts."""
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if len(p_ids) > spec.max_prompt_tokens:
        prompt = tokenizer.decode(p_ids[:spec.max_prompt_tokens])
    ids = chat_prompt_ids(tokenizer, prompt)
    r_ids = tokenizer(response, add_special_tokens=False)["input_ids"][:spec.max_response_tokens] if response else []
    return ids + r_ids, len(ids) - 1


def _backbone(model: torch.nn.Module) -> torch.nn.Module:
    """The transformer without its LM head (the head's vocabulary projection is wasted work here);
    a peft model's LoRA layers stay in it (its active adapter applies)."""
    return hooks.backbone(model)


@torch.inference_mode()
def extract(model: torch.nn.Module, tokenizer, prompts: Sequence[str], responses: Sequence[str],
            spec: FeatureSpec, batch_size: int = 16,
            on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
    """(n, len(layers) * hidden) float32 features, in input order."""
    if len(prompts) != len(responses):
        raise InvalidInput(f"{len(prompts)} prompts but {len(responses)} responses")
    rows = [encode_pair(tokenizer, p, r, spec) for p, r in zip(prompts, responses)]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))   # little padding per batch
    body = _backbone(model)
    points = [hooks.hidden_state_name(body, layer) for layer in spec.layers]
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[torch.Tensor | None] = [None] * len(rows)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        width = max(len(rows[i][0]) for i in idx)
        ids = torch.tensor([rows[i][0] + [pad] * (width - len(rows[i][0])) for i in idx], device=device)
        mask = torch.tensor([[1] * len(rows[i][0]) + [0] * (width - len(rows[i][0])) for i in idx], device=device)
        with model_lock(model), hooks.capture(body, points) as cache:    # the one lock: hooks see only this pass
            body(input_ids=ids, attention_mask=mask)
        span = torch.zeros(len(idx), width, device=device)
        for b, i in enumerate(idx):
            span[b, rows[i][1]:len(rows[i][0])] = 1.0
        weights = (span / span.sum(1, keepdim=True))[:, :, None]
        pooled = torch.cat([(cache[name].float() * weights).sum(1) for name in points], dim=-1).cpu()
        for b, i in enumerate(idx):
            out[i] = pooled[b]
        if on_batch:
            on_batch(len(idx))
    if not rows:
        return torch.zeros(0, 0)
    return torch.stack(out)  # type: ignore[arg-type]


class FeatureCache:
    """Features on disk, one safetensors file per (spec, list of texts): reruns skip the model."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def path(self, spec: FeatureSpec, prompts: Sequence[str], responses: Sequence[str]) -> Path:
        h = hashlib.sha256(spec.key().encode())
        for p, r in zip(prompts, responses):
            h.update(p.encode() + b"\0" + r.encode() + b"\1")
        return self.folder / f"{spec.key()}-{h.hexdigest()[:24]}.safetensors"

    def get_or_compute(self, spec: FeatureSpec, prompts: Sequence[str], responses: Sequence[str],
                       compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        from safetensors.torch import load_file

        path = self.path(spec, prompts, responses)
        if path.exists():
            return load_file(str(path))["features"]
        feats = compute()
        save_safetensors(path, {"features": feats.contiguous()})   # atomic: concurrent runs never see half a file
        return feats
