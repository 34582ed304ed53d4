"""NegotiaX as a ``Policy``: the base model (adapters off) with the circuit active in its forward.

``variant`` and ``leave_out`` are values of the policy (one policy per setting), passed to the
circuit on every pass. Decoding is KV-cached (``generate`` batches prompts with left padding); each step reports the last token's fusion weights
averaged over the MAC heads ({objective: alpha}), which the app draws under the text.
"""
from __future__ import annotations

from typing import Sequence

import torch

from alignx.generation import BASE, ModelStep, cache_of, hf_generate_kwargs, model_lock, with_cache
from alignx.negotiax.core import NegotiaX
from alignx.policy import Policy


class NegotiaXStep:
    """One KV-cached stream through the base with the circuit active."""

    def __init__(self, policy: "NegotiaXPolicy") -> None:
        self.p, self.past = policy, None

    @torch.inference_mode()
    def __call__(self, ids: Sequence[int]):
        p = self.p
        x = torch.tensor([list(ids)], device=p.device)
        record: list = []
        with model_lock(p.model), p.nx.active(p.variant, p.leave_out, record=record):
            out = p.model(input_ids=x, use_cache=True, **with_cache(p.model, self.past), **p._names(1))
        self.past = cache_of(out)
        report = dict(zip(p.nx.objectives, record[-1][0].tolist())) if record else None
        return torch.log_softmax(out.logits[0, -1].float(), -1), report


class NegotiaXPolicy(Policy):
    def __init__(self, nx: NegotiaX, variant: str = "full", leave_out: Sequence[str] | None = None,
                 name: str = "negotiax") -> None:
        super().__init__(nx.model, nx.tokenizer)
        nx.circuit.index(leave_out)
        self.nx, self.variant, self.leave_out, self.name = nx, variant, tuple(leave_out or ()), name
        self.is_peft = hasattr(nx.model, "peft_config")

    def _names(self, n: int) -> dict:
        return {"adapter_names": [BASE] * n} if self.is_peft else {}

    def make_step(self, prompt: str) -> NegotiaXStep:
        return NegotiaXStep(self)

    def generate(self, prompts, sampling=None, batch_size=8, on_done=None):
        """Batched ``model.generate`` with left padding, the circuit active (as ``SinglePolicy``'s)."""
        def rows(chunk, ids, mask, sampling, pad):
            with self.nx.active(self.variant, self.leave_out):
                gen = self.model.generate(input_ids=ids, attention_mask=mask,
                                          **hf_generate_kwargs(sampling, pad, self.eos), **self._names(len(chunk)))
            return gen[:, ids.shape[1]:]

        return self._batched(prompts, sampling, batch_size, on_done, rows)

    def forward_logits(self, input_ids=None, attention_mask=None, inputs_embeds=None, *, logits_to_keep: int = 0,
                       **context):
        rows = len(input_ids if input_ids is not None else inputs_embeds)
        with self.lock, self.nx.active(self.variant, self.leave_out):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                              logits_to_keep=logits_to_keep, **self._names(rows)).logits


def base_step(model) -> ModelStep:
    """The base's own step (for comparisons in tests and benches)."""
    return ModelStep(model, [BASE] if hasattr(model, "peft_config") else None)
