"""Forking a batch inside the decoder: the layers below a fork run once on B rows, the layers
from the fork on run on k copies of them (rows [i B, (i + 1) B) are copy i).

Used by MoCaE's shared trunk (``alignx.mocae.stacked``: k expert rows above the experts' first
LoRA layer) and by NegotiaX pathways of depth m > 0 (``alignx.negotiax.pathways``: the shared
stream plus N pathway rows in the m layers above the fork). ``ForkRows.hook(first)`` is a
pre-hook, installed with ``alignx.hooks.module_hook(layer, ..., kind="pre", with_kwargs=True)``
on every layer that runs on the copies: on the first it repeats the hidden states (and, when B is
not fixed in advance, reads B off them); on each it repeats the per-layer inputs that carry the
batch (the attention mask, position ids and rotary embeddings when B > 1; with B = 1 they
broadcast). A KV cache built this way holds B rows below the fork and k B in the forked layers,
and decoding continues from it unchanged.
"""
from __future__ import annotations

import torch

from alignx.errors import InvalidInput


def repeat_rows(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, ...) -> (k B, ...): rows [i B, (i + 1) B) are copy i."""
    return x.repeat(k, *([1] * (x.dim() - 1)))


class ForkRows:
    """k copies of the batch from the first forked layer on; ``rows`` = B (None: read per forward)."""

    def __init__(self, k: int, rows: int | None = None) -> None:
        if k < 1:
            raise InvalidInput(f"fork: k must be >= 1, got {k}")
        self.k, self.fixed, self.rows = k, rows, rows

    def hook(self, first: bool):
        def pre(module, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            if first:
                if self.fixed is not None and h.shape[0] != self.fixed:
                    raise InvalidInput(f"fork: expected {self.fixed} rows below the fork, got {h.shape[0]}")
                self.rows = h.shape[0]
                if args:
                    args = (repeat_rows(h, self.k), *args[1:])
                else:
                    kwargs["hidden_states"] = repeat_rows(h, self.k)
            elif self.rows is None or h.shape[0] != self.rows * self.k:
                raise InvalidInput(f"fork: expected {self.rows} x {self.k} rows in a forked layer, got {h.shape[0]}")
            rows = self.rows
            if rows > 1:
                for name in ("attention_mask", "position_ids"):
                    t = kwargs.get(name)
                    if isinstance(t, torch.Tensor) and t.dim() > 0 and t.shape[0] == rows:
                        kwargs[name] = repeat_rows(t, self.k)
                pe = kwargs.get("position_embeddings")
                if isinstance(pe, tuple):
                    kwargs["position_embeddings"] = tuple(repeat_rows(t, self.k) if t.shape[0] == rows else t
                                                          for t in pe)
            return args, kwargs

        return pre
