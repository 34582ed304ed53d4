"""Module I at depth m > 0: objective pathways that run m decoder layers of their own.

With fork layer F and depth m the stream leaving layer F is forked (``alignx.fork``) into N + 1
row groups for layers F+1 .. F+m: group 0 is the shared stream (the base, no update), group i the
pathway of objective i, which adds its own low-rank update to each target module t of those
layers (``o_proj`` and ``down_proj``: the two writes into the residual stream):

    y_t = W_t x + [group i] B_{i,l,t} A_{i,l,t} x,       A in R^{r_p x in}, B in R^{out x r_p}, B = 0 at init

At the output of layer F+m the groups meet in the MAC (``Circuit`` with ``streams``): with x_0 the
shared stream and x_i pathway i's hidden state,

    v_i = P_i x_i + c_i,     q from x_0,     h' = x_0 + MAC(x_0, v_1..v_N)

and the layers above run on the one fused stream again. The layers below the fork and their KV
cache are shared; the forked layers keep (N + 1) B rows of cache. With B = 0 and W_o = 0 at init
the model is the base exactly; "off" gives x_0, the base, exactly.
"""
from __future__ import annotations

import math
from contextlib import ExitStack, contextmanager
from typing import Iterator

import torch
from torch import nn

from alignx.errors import InvalidInput

TARGETS = ("self_attn.o_proj", "mlp.down_proj")


def _linear_shape(module: nn.Module) -> tuple[int, int]:
    base = getattr(module, "base_layer", module)
    if not isinstance(base, nn.Linear):
        raise InvalidInput(f"pathway target {type(base).__name__} is not a Linear layer")
    return base.in_features, base.out_features


def _submodule(layer: nn.Module, path: str) -> nn.Module:
    mod = layer
    for part in path.split("."):
        if not hasattr(mod, part):
            raise InvalidInput(f"pathway target {path!r} not found in the decoder layer ({type(layer).__name__})")
        mod = getattr(mod, part)
    return mod


def pathway_shapes(model, fork: int, depth: int) -> dict[str, tuple[int, int]]:
    """``{"<layer>.<target>": (in, out)}`` for the m layers above the fork (checked)."""
    from alignx.hooks import backbone

    layers = backbone(model).layers
    if fork + depth >= len(layers):
        raise InvalidInput(f"fork layer {fork} + pathway depth {depth} needs layers up to {fork + depth}; "
                           f"the model has layers 0..{len(layers) - 1}")
    return {f"{l}.{t}": _linear_shape(_submodule(layers[l], t))
            for l in range(fork + 1, fork + depth + 1) for t in TARGETS}


class Pathways(nn.Module):
    """The per-objective low-rank updates of the forked layers (A random, B zero)."""

    def __init__(self, shapes: dict[str, tuple[int, int]], n: int, rank: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed + 7)
        self.keys = sorted(shapes)
        self.A = nn.ParameterDict({k.replace(".", "_"): nn.Parameter(torch.randn(n, rank, i, generator=g) / math.sqrt(i))
                                   for k, (i, _) in shapes.items()})
        self.B = nn.ParameterDict({k.replace(".", "_"): nn.Parameter(torch.zeros(n, o, rank))
                                   for k, (_, o) in shapes.items()})

    def delta(self, key: str, x: torch.Tensor, rows: int) -> torch.Tensor:
        """The update of groups 1..N for input x of (N + 1) * rows rows, shape of x[rows:] (out)."""
        a, b = self.A[key.replace(".", "_")], self.B[key.replace(".", "_")]
        n = a.shape[0]
        xs = x[rows:].reshape(n, -1, x.shape[-1]).to(a.dtype)                # (N, rows * T, in)
        return torch.bmm(torch.bmm(xs, a.transpose(1, 2)), b.transpose(1, 2))  # (N, rows * T, out)


@contextmanager
def forked(nx, variant: str, leave_out, force, record: list | None) -> Iterator[None]:
    """Hooks for depth m > 0 (``nx.circuit.pathways`` set): fork after layer F, each pathway's
    updates in layers F+1..F+m, the MAC at the output of layer F+m (see the module docstring)."""
    from alignx.fork import ForkRows
    from alignx.hooks import backbone, module_hook

    circuit, n = nx.circuit, len(nx.objectives)
    layers = backbone(nx.model).layers
    top = nx.fork + nx.cfg.depth
    fork = ForkRows(n + 1)

    def lora(key: str):
        def fn(module, args, output):
            x = args[0]
            d = circuit.pathways.delta(key, x, fork.rows)
            out = output.clone()
            out[fork.rows:] = out[fork.rows:] + d.reshape(out[fork.rows:].shape).to(out.dtype)
            return out
        return fn

    def merge(module, args, output):
        h = output[0] if isinstance(output, tuple) else output
        b = fork.rows
        x0 = h[:b]
        streams = h[b:].reshape(n, b, *h.shape[1:]).permute(1, 2, 0, 3)      # (B, T, N, d)
        res = circuit(x0, variant, leave_out, force, streams=streams)
        if record is not None:
            record.append(res.weights[:, -1].mean(1).detach().float().cpu())
        new = x0 + res.delta
        return (new, *output[1:]) if isinstance(output, tuple) else new

    with ExitStack() as stack:
        for l in range(nx.fork + 1, top + 1):
            stack.enter_context(module_hook(layers[l], fork.hook(first=l == nx.fork + 1), kind="pre",
                                            with_kwargs=True))
            for t in TARGETS:
                stack.enter_context(module_hook(_submodule(layers[l], t), lora(f"{l}.{t}")))
        stack.enter_context(module_hook(layers[top], merge))
        yield
