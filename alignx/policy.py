"""A *policy* is one way to answer prompts: the base, one expert, a MoCaE fusion, or any mode a
method family (``alignx.methods``) registers.

Every policy streams (``stream``), answers batches (``generate``), scores continuations
(``logprob``, the sum of log p(continuation | chat-templated prompt)) and exposes its full,
differentiable forward pass (``forward_logits``), so the CLI, the app, the evaluation harness and
the interpretability tools treat all modes alike. Subclasses provide:

- ``make_step(prompt)``: a fresh KV-cached step function (see ``alignx.generation``);
- ``forward_logits(input_ids | inputs_embeds, attention_mask, **context) -> (B, L, V)``: no KV
  cache, gradients flow to ``inputs_embeds`` and to hooked activations; softmax of row b,
  position t is the policy's next-token distribution after tokens <= t (what ``make_step`` gives
  when decoding the same tokens);
- ``prepare(prompts) -> context``: per-row values ``forward_logits`` needs besides the tokens
  (MoCaE: each prompt's routing weights), passed as arguments, never kept on the policy, so one
  policy serves many threads at once.
"""
from __future__ import annotations

from alignx.errors import InvalidInput

import threading
from typing import Callable, Iterator, Sequence

import torch

from alignx.generation import (BASE, ModelStep, Sampling, TokenEvent, chat_prompt_ids, check_prompt_length, decode,
                               eos_ids, hf_generate_kwargs, left_pad, model_lock)
from alignx.logprobs import gather_logprobs


class Policy:
    name = "policy"
    source: dict | None = None      # what the policy was built from beyond the experts (e.g. a NegotiaX circuit
                                    # folder): recorded in eval reports and part of their cache key

    def __init__(self, model: torch.nn.Module, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.eos = eos_ids(tokenizer, model)
        self.lock = model_lock(model)   # shared by every policy of this model; per forward, not per stream

    # --- to override -------------------------------------------------------------------------
    def make_step(self, prompt: str):
        raise NotImplementedError

    def forward_logits(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                       inputs_embeds: torch.Tensor | None = None, *, logits_to_keep: int = 0,
                       **context) -> torch.Tensor:
        """(B, L, V) next-token logits of the policy over the whole sequence (``logits_to_keep`` > 0:
        only the last that many positions), differentiable; ``context`` comes from ``prepare``."""
        raise NotImplementedError

    def prepare(self, prompts: Sequence[str]) -> dict:
        """Per-row context for ``forward_logits`` / ``token_logprobs`` of rows answering ``prompts``."""
        return {}

    def token_logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, first: int = 0,
                       **context) -> torch.Tensor:
        """(B, L-1-first) log p(token t+1 | tokens <= t) for t >= ``first``, right-padded ``input_ids``
        (only those positions go through the LM head: ``logits_to_keep``, the vocabulary matmul
        dominates scoring on a CPU). Built on ``forward_logits``."""
        logits = self.forward_logits(input_ids, attention_mask, logits_to_keep=input_ids.shape[1] - first,
                                     **context)[:, :-1]
        return gather_logprobs(logits, input_ids[:, first + 1:])

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The input embeddings of ``input_ids`` (for ``forward_logits(inputs_embeds=...)``)."""
        return self.model.get_input_embeddings()(input_ids)

    # --- shared ----------------------------------------------------------------------------
    def prompt_ids(self, prompt: str) -> list[int]:
        return chat_prompt_ids(self.tokenizer, prompt)

    def stream(self, prompt: str, sampling: Sampling | None = None,
               stop: threading.Event | None = None) -> Iterator[TokenEvent]:
        sampling = sampling or Sampling()
        ids = self.prompt_ids(prompt)
        check_prompt_length(ids, self.model)        # before make_step: a MoCaE step routes the prompt
        step = self.make_step(prompt)
        yield from decode(step, ids, self.tokenizer, sampling, stop, self.eos)

    def answer(self, prompt: str, sampling: Sampling | None = None, stop: threading.Event | None = None) -> str:
        return "".join(ev.text for ev in self.stream(prompt, sampling, stop)).strip()

    def generate(self, prompts: Sequence[str], sampling: Sampling | None = None, batch_size: int = 8,
                 on_done: Callable[[int, str], None] | None = None) -> list[str]:
        """Answers in prompt order; ``on_done(i, text)`` after each (for progress and caching)."""
        out = []
        for i, p in enumerate(prompts):
            out.append(self.answer(p, sampling))
            if on_done:
                on_done(i, out[-1])
        return out

    @torch.inference_mode()
    def _batched(self, prompts: Sequence[str], sampling: Sampling | None, batch_size: int,
                 on_done: Callable[[int, str], None] | None,
                 rows: Callable[[list[str], torch.Tensor, torch.Tensor, Sampling, int], Sequence]) -> list[str]:
        """The batch loop of the batched ``generate``s: left-pad each chunk, ``rows(chunk, ids, mask,
        sampling, pad)`` gives each prompt's new token ids (under the model lock), decode in order."""
        sampling = sampling or Sampling()
        tok, out = self.tokenizer, []
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        for s in range(0, len(prompts), batch_size):
            chunk = list(prompts[s:s + batch_size])
            rows_ids = [self.prompt_ids(p) for p in chunk]
            for r in rows_ids:
                check_prompt_length(r, self.model)
            ids, mask = left_pad(rows_ids, pad, self.device)
            with self.lock:
                new = rows(chunk, ids, mask, sampling, pad)
            for j, row in enumerate(new):
                out.append(tok.decode(row, skip_special_tokens=True).strip())
                if on_done:
                    on_done(s + j, out[-1])
        return out

    @torch.inference_mode()
    def logprob(self, prompts: Sequence[str], continuations: Sequence[str], batch_size: int = 8) -> list[float]:
        """Sum of log-probs of each continuation's tokens (plus end-of-turn) after the prompt."""
        if len(prompts) != len(continuations):
            raise InvalidInput("prompts and continuations differ in length")
        scores: list[float] = []
        eos = self.tokenizer.eos_token_id
        for s in range(0, len(prompts), batch_size):
            rows, starts = [], []
            context = self.prepare(list(prompts[s:s + batch_size]))
            for p, c in zip(prompts[s:s + batch_size], continuations[s:s + batch_size]):
                pid = self.prompt_ids(p)
                cid = self.tokenizer(c, add_special_tokens=False)["input_ids"] + ([eos] if eos is not None else [])
                rows.append(pid + cid)
                starts.append(len(pid))
            width = max(map(len, rows))
            pad = self.tokenizer.pad_token_id or 0
            ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
            first = min(starts) - 1               # no logits needed before the first continuation
            with self.lock:
                lp = self.token_logprobs(ids.to(self.device), mask.to(self.device), first, **context).cpu()
            for b, (r, st) in enumerate(zip(rows, starts)):
                scores.append(float(lp[b, st - 1 - first:len(r) - 1 - first].sum()))
        return scores

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


class SinglePolicy(Policy):
    """The base model (``adapter=None``) or one peft adapter of a multi-adapter model."""

    def __init__(self, model, tokenizer, adapter: str | None = None, temperature: float = 1.0):
        super().__init__(model, tokenizer)
        self.adapter = adapter
        self.temperature = temperature
        self.is_peft = hasattr(model, "peft_config")
        self.name = f"expert:{adapter}" if adapter else "base"

    def _names(self, n: int) -> dict:
        return {"adapter_names": [self.adapter or BASE] * n} if self.is_peft else {}

    def make_step(self, prompt: str) -> ModelStep:
        names = [self.adapter or BASE] if self.is_peft else None
        temps = [self.temperature] if self.temperature != 1.0 else None
        return ModelStep(self.model, names, temps)

    def forward_logits(self, input_ids=None, attention_mask=None, inputs_embeds=None, *, logits_to_keep: int = 0,
                       **context):
        """The model's logits (divided by the policy's temperature when it is not 1)."""
        rows = len(input_ids if input_ids is not None else inputs_embeds)
        with self.lock:
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                                logits_to_keep=logits_to_keep, **self._names(rows)).logits
        return logits if self.temperature == 1.0 else logits / self.temperature

    def generate(self, prompts, sampling=None, batch_size=8, on_done=None):
        """Batched ``model.generate`` with left padding: much faster than one prompt at a time."""
        def rows(chunk, ids, mask, sampling, pad):
            gen = self.model.generate(input_ids=ids, attention_mask=mask, **hf_generate_kwargs(sampling, pad, self.eos),
                                      **self._names(len(chunk)))
            return gen[:, ids.shape[1]:]

        return self._batched(prompts, sampling, batch_size, on_done, rows)
