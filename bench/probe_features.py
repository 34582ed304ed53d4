"""Pooled hidden states of chat-templated prompts, shared by the probes in bench/ (routing_probe,
harm_probe): one forward per batch of 16, prompts cut at 256 tokens, three poolings per layer:
``all`` (mean over every chat-template token), ``user`` (mean over the user's tokens only),
``last`` (the last token)."""
from __future__ import annotations

from typing import Sequence

import torch

from alignx import hooks
from alignx.generation import chat_prompt_ids, template_margins

POOLS = ("all", "user", "last")


@torch.inference_mode()
def prompt_features(model, tokenizer, prompts: Sequence[str], layers: Sequence[int],
                    pools: Sequence[str] = POOLS, batch: int = 16) -> dict[tuple[str, int], torch.Tensor]:
    """{(pool, layer): (n, d) float tensor} for every pool in ``pools`` and layer in ``layers``."""
    pre, suf = template_margins(tokenizer)           # template tokens before and after the user's
    out: dict[tuple[str, int], list[torch.Tensor]] = {}
    points = {L: hooks.hidden_state_name(model, L) for L in layers}   # HF hidden_states index -> hook point
    for s in range(0, len(prompts), batch):
        rows = [chat_prompt_ids(tokenizer, q)[:256] for q in prompts[s:s + batch]]
        w = max(map(len, rows))
        ids = torch.tensor([r + [0] * (w - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (w - len(r)) for r in rows]).float()
        weights = {"all": mask, "user": torch.zeros_like(mask)}
        for i, r in enumerate(rows):
            weights["user"][i, pre:len(r) - suf] = 1
        with hooks.capture(model, list(points.values())) as cache:
            model(input_ids=ids, attention_mask=mask.long(), logits_to_keep=1)
        last = torch.tensor([len(r) - 1 for r in rows])
        for L in layers:
            h = cache[points[L]].float()
            for pool in pools:
                v = h[torch.arange(len(rows)), last] if pool == "last" else \
                    (h * weights[pool][..., None]).sum(1) / weights[pool].sum(1, keepdim=True)
                out.setdefault((pool, L), []).append(v)
    return {k: torch.cat(v) for k, v in out.items()}
