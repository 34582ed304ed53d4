"""Attention-head importance per objective: a gradient estimate checked by exact ablation.

Every head h = (layer l, head j) gets a mask xi_h (1 = as trained) multiplying its slice of
o_proj's input (hook point ``blocks.{l}.attn.z``). For an objective o with held-out rows R_o:

    L_o(x, y)  = -(1/|y|) sum_t log pi(y_t | x, y_<t)                 (target rows: mean NLL)
    L_o(x, y+, y-) = -log sigmoid(log pi(y+ | x) - log pi(y- | x))      (preference rows)

    I_o(h)     = E_{r in R_o} | dL_o(r) / d xi_h |  at xi = 1          (Michel et al. 2019, eq. 2)

estimated with one backward pass per batch of ``batch_size`` rows (1 = the expectation of the
absolute value per row, as in the paper; larger batches take |.| of the batch mean). The exact
check zeroes head h's slice of o_proj's input (biases and the other heads untouched) and measures

    Delta_o(h, r) = L_o(r; h ablated) - L_o(r),  Delta_o(h) = E_r Delta_o(h, r)  (> 0: h helps o)

A first-order Taylor expansion gives Delta_o(h, r) ~ -dL_o(r)/dxi_h, so I_o(h) estimates
E_r |Delta_o(h, r)|: the rankings by the two should agree (``spearman``). Both work on any mode: the loss goes through
``policy.forward_logits`` (MoCaE rows with their own routing weights from ``policy.prepare``).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch

from alignx.errors import InvalidInput
from alignx.interp.rows import Row

Progress = Callable[[int, int], None] | None


def head_shape(model) -> tuple[int, int]:
    """(layers, heads per layer) of a Llama-style model (peft wrapper or not)."""
    from alignx.hooks import backbone

    body = backbone(model)
    n_heads = int(body.config.num_attention_heads)
    return len(body.layers), n_heads


def check_heads(model, heads: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    n_layers, n_heads = head_shape(model)
    out = []
    for h in heads:
        l, j = int(h[0]), int(h[1])
        if not 0 <= l < n_layers:
            raise InvalidInput(f"layer {l} out of range: the model has layers 0..{n_layers - 1}")
        if not 0 <= j < n_heads:
            raise InvalidInput(f"head {j} out of range: layer {l} has heads 0..{n_heads - 1}")
        out.append((l, j))
    return out


def _encode(policy, rows: Sequence[Row]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """Right-padded ids (2B rows when the rows are preference rows: chosen then rejected), mask,
    the response-token mask over next-token positions (B', L-1) and the pair flag."""
    tok, eos = policy.tokenizer, policy.tokenizer.eos_token_id
    pairs = rows[0].rejected is not None
    if any((r.rejected is not None) != pairs for r in rows):
        raise InvalidInput("mix of target rows and preference rows in one objective")
    seqs, starts = [], []
    for answer_key in (("response", "rejected") if pairs else ("response",)):
        for r in rows:
            pid = policy.prompt_ids(r.prompt)
            cid = tok(getattr(r, answer_key), add_special_tokens=False)["input_ids"] + ([eos] if eos is not None else [])
            seqs.append(pid + cid)
            starts.append(len(pid))
    width = max(map(len, seqs))
    pad = tok.pad_token_id or 0
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    target = torch.zeros(len(seqs), width - 1)
    for b, (s, st) in enumerate(zip(seqs, starts)):
        target[b, st - 1:len(s) - 1] = 1.0
    return ids, mask, target, pairs


def row_losses(policy, rows: Sequence[Row]) -> torch.Tensor:
    """(B,) L_o per row (differentiable): mean response NLL, or the pair's preference loss."""
    ids, mask, target, pairs = _encode(policy, rows)
    dev = policy.device
    prompts = [r.prompt for r in rows] * (2 if pairs else 1)
    context = policy.prepare(prompts)
    first = int(target.sum(0).nonzero()[0])          # no logits before the first response token (LM head cost)
    target = target[:, first:].to(dev)
    lp = policy.token_logprobs(ids.to(dev), mask.to(dev), first, **context).float() * target
    if not pairs:
        return -lp.sum(1) / target.sum(1)
    total = lp.sum(1)
    n = len(rows)
    return -torch.nn.functional.logsigmoid(total[:n] - total[n:])


def _batches(rows: Sequence[Row], size: int) -> Iterator[Sequence[Row]]:
    if size < 1:
        raise InvalidInput(f"batch_size must be >= 1, got {size}")
    for s in range(0, len(rows), size):
        yield rows[s:s + size]


@contextmanager
def masked_heads(model, mask: torch.Tensor) -> Iterator[None]:
    """Multiply head (l, j)'s slice of o_proj's input by ``mask[l, j]`` (differentiable)."""
    from alignx.hooks import intervene

    n_layers, n_heads = head_shape(model)
    if tuple(mask.shape) != (n_layers, n_heads):
        raise InvalidInput(f"head mask must be {(n_layers, n_heads)}, got {tuple(mask.shape)}")

    def fn_for(l: int):
        def fn(z: torch.Tensor, name: str) -> torch.Tensor:
            shaped = z.view(*z.shape[:-1], n_heads, z.shape[-1] // n_heads)
            return (shaped * mask[l].to(z.dtype)[:, None]).view(z.shape)
        return fn

    with intervene(model, {f"blocks.{l}.attn.z": fn_for(l) for l in range(n_layers)}):
        yield


@contextmanager
def ablated_heads(model, heads: Sequence[tuple[int, int]]) -> Iterator[None]:
    """Zero the listed heads' slices of o_proj's input (for generation, scoring, anything)."""
    heads = check_heads(model, heads)
    mask = torch.ones(head_shape(model))
    for l, j in heads:
        mask[l, j] = 0.0
    with torch.no_grad(), masked_heads(model, mask):
        yield


def autocast(policy, bf16: bool):
    """bfloat16 autocast on the policy's device when ``bf16`` (about 2x on a CPU with bf16 support)."""
    return torch.autocast(policy.device.type, dtype=torch.bfloat16, enabled=bool(bf16))


def gradient_importance(policy, rows: Sequence[Row], batch_size: int = 1,
                        progress: Progress = None, should_stop: Callable[[], bool] | None = None,
                        bf16: bool = False) -> torch.Tensor:
    """(layers, heads) I_o(h) = E |dL_o / dxi_h| over ``rows`` (see the module docstring)."""
    if not rows:
        raise InvalidInput("gradient_importance needs at least one row")
    model = policy.model
    total = torch.zeros(head_shape(model))
    n_batches = math.ceil(len(rows) / batch_size)
    with policy.lock:
        for i, batch in enumerate(_batches(rows, batch_size)):
            if should_stop and should_stop():
                raise InterruptedError("head importance cancelled")
            xi = torch.ones(head_shape(model), requires_grad=True)
            with masked_heads(model, xi), torch.enable_grad(), autocast(policy, bf16):
                loss = row_losses(policy, batch).mean()
                (grad,) = torch.autograd.grad(loss, xi)
            total += grad.abs().float() * len(batch)
            if progress:
                progress(i + 1, n_batches)
    return total / len(rows)


@torch.no_grad()
def losses(policy, rows: Sequence[Row], batch_size: int = 8, bf16: bool = False) -> torch.Tensor:
    """(B,) L_o per row, no gradient."""
    with policy.lock, autocast(policy, bf16):
        return torch.cat([row_losses(policy, b).float().cpu() for b in _batches(rows, batch_size)])


def ablation_deltas(policy, rows: Sequence[Row], heads: Sequence[tuple[int, int]], batch_size: int = 8,
                    progress: Progress = None, should_stop: Callable[[], bool] | None = None, bf16: bool = False
                    ) -> dict[tuple[int, int], dict[str, float]]:
    """``{head: {"delta": Delta_o, "abs_delta": E_r |Delta_o(r)|}}`` with that one head zeroed:
    ``delta`` is the change of the mean loss (> 0: the head helps o), ``abs_delta`` the mean
    per-row absolute change, the exact counterpart of ``gradient_importance``'s E |dL/dxi|."""
    heads = check_heads(policy.model, heads)
    base = losses(policy, rows, batch_size, bf16)
    out = {}
    for i, h in enumerate(heads):
        if should_stop and should_stop():
            raise InterruptedError("head ablation cancelled")
        with policy.lock, ablated_heads(policy.model, [h]):
            diff = losses(policy, rows, batch_size, bf16) - base
        out[h] = {"delta": float(diff.mean()), "abs_delta": float(diff.abs().mean())}
        if progress:
            progress(i + 1, len(heads))
    return out


def top_heads(importance: torch.Tensor | Sequence[Sequence[float]], k: int) -> list[tuple[int, int]]:
    """The k (layer, head) with the largest importance, largest first (ties: lower index first)."""
    m = torch.as_tensor(importance, dtype=torch.float64)
    order = sorted(range(m.numel()), key=lambda i: (-float(m.view(-1)[i]), i))[:max(0, k)]
    return [(i // m.shape[1], i % m.shape[1]) for i in order]


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho: the Pearson correlation of the ranks (average ranks for ties); 0 when a
    side is constant."""
    if len(a) != len(b) or len(a) < 2:
        raise InvalidInput("spearman needs two equally long sequences of >= 2 values")
    ra, rb = torch.tensor(_ranks(list(map(float, a)))), torch.tensor(_ranks(list(map(float, b))))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / den if den else 0.0
