"""The Mechanistic Alignment Circuit: N objective pathways (Module I) fused per token by negotiation
(Module II), read from and written back to one layer's self-attention output.

For a token's self-attention output a in R^d at the fork layer, objectives i = 1..N:

    Module I    v_i = P_i a + c_i                              P_i in R^{r x d}: objective i's subspace
    Module II   q_h = (W_q a)_h                                 the query comes from the shared stream
                k_{h,i} = (W_k v_i + e_i)_h,  u_{h,i} = (W_v v_i)_h   e_i: objective i's key embedding
                alpha_{h,i} = softmax_i(q_h . k_{h,i} / sqrt(d_h))    per token and head: the negotiation
                MAC(a) = W_o concat_h( sum_i alpha_{h,i} u_{h,i} ) + b_o
    output      a' = a + MAC(a)

W_o and b_o start at zero, so an untrained circuit leaves the model exactly as it was. Variants
(values passed per call, never state): ``full``; ``module1`` (alpha = 1/N: pathways without
negotiation); ``module2`` / ``frozen`` (the same forward as full: they differ in training, no
per-pathway supervision / W_q and W_k kept at their random init); ``off`` (MAC(a) = 0: weights and
biases). ``leave_out`` removes objectives from the softmax (their alpha is exactly 0);
``force`` puts alpha one-hot on one objective (a pathway on its own).

Subspace separation: S = sum_{i<j} ||P~_i P~_j^T||_F^2 with P~_i = P_i / ||P_i||_F (scale-free).

Depth m > 0 (``alignx.negotiax.pathways``): each pathway runs m layers of its own above the fork
and v_i = P_i x_i + c_i reads pathway i's own hidden state x_i (``streams``); the query still
comes from the shared stream a = x_0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from alignx.errors import InvalidInput
from alignx.negotiax.config import VARIANTS, NegotiaXConfig


@dataclass
class CircuitOutput:
    delta: torch.Tensor        # (B, T, d): MAC(a), added to the attention output
    weights: torch.Tensor      # (B, T, H, N): alpha per token, head and objective
    pathways: torch.Tensor     # (B, T, N, r): v_i per token


class Circuit(nn.Module):
    def __init__(self, hidden: int, objectives: Sequence[str], cfg: NegotiaXConfig,
                 pathway_shapes: dict[str, tuple[int, int]] | None = None) -> None:
        super().__init__()
        if len(objectives) < 2 or len(set(objectives)) != len(objectives):
            raise InvalidInput(f"NegotiaX needs >= 2 distinct objectives, got {list(objectives)}")
        if cfg.rank > hidden:
            raise InvalidInput(f"rank {cfg.rank} is larger than the hidden size {hidden}")
        self.objectives = tuple(objectives)
        n, r, h, dh = len(objectives), cfg.rank, cfg.heads, cfg.head_dim
        self.heads, self.head_dim = h, dh
        g = torch.Generator().manual_seed(cfg.seed)
        self.P = nn.Parameter(torch.randn(n, r, hidden, generator=g) / math.sqrt(hidden))
        self.c = nn.Parameter(torch.zeros(n, r))
        self.W_q = nn.Parameter(torch.randn(h * dh, hidden, generator=g) / math.sqrt(hidden))
        self.W_k = nn.Parameter(torch.randn(h * dh, r, generator=g) / math.sqrt(r))
        self.W_v = nn.Parameter(torch.randn(h * dh, r, generator=g) / math.sqrt(r))
        self.e = nn.Parameter(torch.randn(n, h * dh, generator=g))
        self.W_o = nn.Parameter(torch.zeros(hidden, h * dh))
        self.b_o = nn.Parameter(torch.zeros(hidden))
        self.tap_weights, self.tap_pathways, self.tap_out = nn.Identity(), nn.Identity(), nn.Identity()   # mac.* points
        self.pathways = None
        if cfg.depth > 0:
            from alignx.negotiax.pathways import Pathways

            if not pathway_shapes:
                raise InvalidInput(f"pathway depth {cfg.depth} needs the shapes of the forked layers' targets")
            self.pathways = Pathways(pathway_shapes, n, cfg.pathway_rank, cfg.seed)

    def index(self, names: Sequence[str] | None) -> list[int]:
        from alignx.errors import unknown

        out = []
        for name in names or ():
            if name not in self.objectives:
                raise unknown("objective", name, self.objectives)
            out.append(self.objectives.index(name))
        return out

    def forward(self, a: torch.Tensor, variant: str = "full", leave_out: Sequence[str] | None = None,
                force: str | None = None, streams: torch.Tensor | None = None) -> CircuitOutput:
        """``a`` (B, T, d): the shared stream; ``streams`` (B, T, N, d): each pathway's own hidden
        state (depth m > 0; None: every pathway reads ``a``)."""
        if variant not in VARIANTS:
            from alignx.errors import unknown

            raise unknown("NegotiaX variant", variant, VARIANTS)
        n, h, dh = len(self.objectives), self.heads, self.head_dim
        dt = self.P.dtype
        x = a.to(dt)
        B, T, _ = x.shape
        if streams is None:
            v = torch.einsum("btd,nrd->btnr", x, self.P) + self.c
        else:
            v = torch.einsum("btnd,nrd->btnr", streams.to(dt), self.P) + self.c
        v = self.tap_pathways(v)
        if variant == "off":
            zeros = torch.zeros(B, T, h, n, dtype=dt, device=x.device)
            return CircuitOutput(torch.zeros_like(a), self.tap_weights(zeros), v)
        dropped = self.index(leave_out)
        if len(dropped) >= n:
            raise InvalidInput("leave_out would remove every objective")
        if variant == "module1" or force is not None:
            alpha = torch.zeros(B, T, h, n, dtype=dt, device=x.device)
            if force is not None:
                alpha[..., self.index([force])[0]] = 1.0
            else:
                keep = [i for i in range(n) if i not in dropped]
                alpha[..., keep] = 1.0 / len(keep)
        else:
            q = (x @ self.W_q.T).view(B, T, h, dh)
            k = (v @ self.W_k.T + self.e).view(B, T, n, h, dh)
            scores = torch.einsum("bthd,btnhd->bthn", q, k) / math.sqrt(dh)
            if dropped:
                scores = scores.masked_fill(torch.tensor([i in dropped for i in range(n)], device=x.device), float("-inf"))
            alpha = torch.softmax(scores, dim=-1)
        alpha = self.tap_weights(alpha)
        u = (v @ self.W_v.T).view(B, T, n, h, dh)
        fused = torch.einsum("bthn,btnhd->bthd", alpha, u).reshape(B, T, h * dh)
        delta = self.tap_out(fused @ self.W_o.T + self.b_o)
        return CircuitOutput(delta.to(a.dtype), alpha, v)

    def separation(self) -> torch.Tensor:
        """S = sum_{i<j} ||P~_i P~_j^T||_F^2 (0 when the subspaces are orthogonal)."""
        p = self.P / self.P.flatten(1).norm(dim=1)[:, None, None]
        n = len(self.objectives)
        return sum(((p[i] @ p[j].T) ** 2).sum() for i in range(n) for j in range(i + 1, n))

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
