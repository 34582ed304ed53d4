"""Token log-probabilities without a (rows, L, V) log-softmax: memory that scoring long answers can afford.

    log p(t | h) = z_t - logsumexp_v z_v,     z = (W h + b) / tau

is what ``log_softmax(z).gather(t)`` computes, but the gather needs only one vocabulary row per
position. ``gather_logprobs`` evaluates it over slices of rows, so besides the logits it holds one
slice's logsumexp temporaries instead of a second full (rows, L, V) tensor. ``head_logprobs`` goes
one step further for stacked expert rows (MoCaE logit fusion: n x B rows): it takes the final
hidden states (rows, L, d) and runs the LM head itself, slice by slice, so no (rows, L, V) tensor
exists at all. At the default model (V = 49,152, d = 576) a full log-softmax of 3 experts x 16
answers x 1,000 tokens is 9.4 GB of logits plus as much again for their log-softmax; the sliced
head keeps ``budget`` values at a time (64 M floats = 256 MB by default).
"""
from __future__ import annotations

import torch
from torch import nn

BUDGET = 1 << 26            # logits held at once (floats) per slice


def _rows_per_slice(per_row: int, budget: int) -> int:
    return max(1, budget // max(per_row, 1))


def _target_logprobs(z: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(z)[targets] of one slice's float logits: z_t - logsumexp_v z_v."""
    return z.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(z, -1)


def gather_logprobs(logits: torch.Tensor, targets: torch.Tensor, budget: int = BUDGET) -> torch.Tensor:
    """(R, L) log softmax(logits)[r, l, targets[r, l]] of (R, L, V) ``logits``, in float32, one slice
    of rows at a time. Differentiable; equal to the full log-softmax's gather up to rounding."""
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} do not match")
    step = _rows_per_slice(logits.shape[1] * logits.shape[2], budget)
    out = [_target_logprobs(logits[s:s + step].float(), targets[s:s + step]) for s in range(0, len(logits), step)]
    return torch.cat(out) if out else logits.new_zeros(targets.shape, dtype=torch.float32)


def plain_head(model: nn.Module) -> nn.Linear | None:
    """The model's LM head when ``hidden @ W.T + b`` is all it does (a plain ``nn.Linear``, no LoRA on
    it, no logit soft-capping or scaling in the config); None otherwise (use the logits path)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if type(head) is not nn.Linear:                     # a peft LoRA layer wraps it: not plain
        return None
    cfg = getattr(model, "config", None)
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None) not in (None, 1, 1.0):
        return None
    return head


def head_logprobs(head: nn.Linear, hidden: torch.Tensor, targets: torch.Tensor, temperatures: torch.Tensor,
                  budget: int = BUDGET) -> torch.Tensor:
    """(R, L) log softmax((W h + b) / tau_r)[targets] for final hidden states ``hidden`` (R, L, d) and one
    temperature per row (``temperatures``, (R,)): the LM head applied slice by slice."""
    rows, length = targets.shape
    step = _rows_per_slice(length * head.out_features, budget)
    out = []
    for s in range(0, rows, step):
        z = nn.functional.linear(hidden[s:s + step], head.weight, head.bias).float()
        out.append(_target_logprobs(z / temperatures[s:s + step, None, None].to(z.device), targets[s:s + step]))
    return torch.cat(out) if out else hidden.new_zeros(targets.shape, dtype=torch.float32)
