"""All experts' LoRA updates of a layer as one batched matmul, for logit fusion.

peft's mixed-adapter batches (``adapter_names``) run each adapter on its sub-batch, one after
another, in every LoRA layer, and register a forward hook on every layer per call. On a small
model decoding a token at a time that Python overhead, not arithmetic, dominates. Here the
rows are expert-major (rows ``[i*B, (i+1)*B)`` read expert ``i``; rows after ``n*B`` get no
update, e.g. the base row of per-token re-routing) and each layer adds

    delta = bmm(bmm(x_i, A_i^T), (s_i B_i)^T)      for all i at once,

with experts of smaller rank zero-padded to the largest rank (exact). Numerically it is the same
sum peft computes; tests compare the two paths.

Shared trunk: below ``fork``, the first decoder layer holding an expert's LoRA, every expert row
computes the same thing. ``active(per_expert, trunk=k)`` takes ``per_expert`` rows of input only,
runs the layers below the fork once on them, and repeats them k times at the fork
(``alignx.fork``), so the layers above see the usual expert-major rows. The KV cache then holds
``per_expert`` rows below the fork and k x that above it; decoding continues from it unchanged. Same outputs as the full batch (tested); the saving is
the fork's share of the layers.
"""
from __future__ import annotations

from alignx.errors import InvalidInput

from contextlib import ExitStack, contextmanager
from typing import Iterator, Sequence

import torch


class StackedLoRA:
    def __init__(self, model, experts: Sequence[str], share_trunk: bool = True):
        self.model, self.experts, self.share_trunk = model, list(experts), share_trunk
        self.layers: list[tuple[torch.nn.Module, torch.Tensor, torch.Tensor]] = []
        n = len(self.experts)
        with torch.no_grad():
            for module in model.modules():
                lora_a = getattr(module, "lora_A", None)
                if not isinstance(lora_a, torch.nn.ModuleDict) or not any(e in lora_a for e in self.experts):
                    continue
                if not all(e in lora_a for e in self.experts):   # an unpatched layer would apply the active adapter
                    raise InvalidInput(f"a LoRA layer carries only some of {self.experts}: not stackable")
                if getattr(module, "merged", False) or any(e in getattr(module, "lora_variant", {}) for e in experts):
                    raise InvalidInput(f"{type(module).__name__}: merged or non-vanilla LoRA (e.g. DoRA) is not stackable")
                if not isinstance(module.base_layer, torch.nn.Linear):
                    raise InvalidInput(f"only Linear LoRA layers are stackable, got {type(module.base_layer).__name__}")
                r = max(lora_a[e].weight.shape[0] for e in self.experts)
                w = lora_a[self.experts[0]].weight
                a_t = torch.zeros(n, module.in_features, r, dtype=w.dtype, device=w.device)
                b_t = torch.zeros(n, r, module.out_features, dtype=w.dtype, device=w.device)
                for i, e in enumerate(self.experts):
                    a, b = lora_a[e].weight, module.lora_B[e].weight
                    a_t[i, :, : a.shape[0]] = a.T
                    b_t[i, : a.shape[0]] = (b * module.scaling[e]).T
                self.layers.append((module, a_t, b_t))
        if not self.layers:
            raise InvalidInput(f"no LoRA layer carries all of {self.experts}")
        self.fork = _first_layer_with(model, {id(m) for m, _, _ in self.layers})

    @contextmanager
    def active(self, per_expert: int, trunk: int | None = None) -> Iterator[None]:
        """While active (hold the model lock), forwards take expert-major rows, ``per_expert`` per expert,
        and must not pass ``adapter_names``. With ``trunk = k`` they take ``per_expert`` rows only and
        the fork layer repeats them k times (k >= the number of experts; extra rows get no update)."""
        from alignx.fork import ForkRows
        from alignx.hooks import backbone, module_hook

        if trunk is not None and trunk < len(self.experts):
            raise InvalidInput(f"trunk repeats {trunk} < {len(self.experts)} experts")
        if trunk is not None and self.fork == 0:
            raise InvalidInput("shared trunk: the experts' LoRA starts at layer 0, there is no trunk to share")
        with ExitStack() as hooks:
            if trunk is not None:                           # every layer from the fork runs on the copies
                fork = ForkRows(trunk, per_expert)
                for i, layer in enumerate(backbone(self.model).layers[self.fork:]):
                    hooks.enter_context(module_hook(layer, fork.hook(first=i == 0), kind="pre", with_kwargs=True))
            try:
                for module, a_t, b_t in self.layers:
                    module.forward = _stacked_forward(module, a_t, b_t, per_expert)
                yield
            finally:
                for module, _, _ in self.layers:
                    module.__dict__.pop("forward", None)


def _first_layer_with(model, modules: set[int]) -> int:
    """Index of the first decoder layer containing one of ``modules`` (by id)."""
    from alignx.hooks import backbone

    for i, layer in enumerate(backbone(model).layers):
        if any(id(m) in modules for m in layer.modules()):
            return i
    raise InvalidInput("the stacked LoRA layers are not inside the decoder layers")


def _stacked_forward(module, a_t: torch.Tensor, b_t: torch.Tensor, per_expert: int):
    n = a_t.shape[0]
    rows = n * per_expert

    def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        result = module.base_layer(x, *args, **kwargs)
        if x.shape[0] < rows:
            raise InvalidInput(f"stacked LoRA expects at least {rows} rows ({n} experts x {per_expert}), got {x.shape[0]}")
        xs = x[:rows].reshape(n, -1, x.shape[-1]).to(a_t.dtype)
        delta = torch.bmm(torch.bmm(xs, a_t), b_t).reshape(rows, *x.shape[1:-1], -1)
        if rows == x.shape[0]:
            return result + delta.to(result.dtype)
        return torch.cat([result[:rows] + delta.to(result.dtype), result[rows:]])

    return forward
