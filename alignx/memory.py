"""Batch sizes for batched generation and scoring, sized to a GPU's free memory.

One prompt row of ``T`` tokens (prompt + new tokens) holds, while it is decoded,

    KV cache     kv(T)   = T x 2 x layers x kv_heads x head_dim x b          (K and V, every layer)
    working set  w(T)    = T x [(4 x hidden + 3 x intermediate) x b + 2 x 4 x vocab]

with b the bytes per weight element (2 in bf16): the activations of one layer at a time (q, k, v,
o and the MLP's gate / up / product; layers run one after another under inference mode) and fp32
logits + log-softmax over the vocabulary for every position (what scoring a continuation needs;
decoding needs one position, so this bounds it from above). A prompt answered by ``rows`` rows at
once (MoCaE logit fusion: one row per expert, plus the base) counts ``rows`` times. Then

    batch = floor( free x (1 - reserve) / (rows x (kv(T) + w(T))) ),  clipped to [1, cap],

with ``free`` the device's free bytes after the weights are loaded (``torch.cuda.mem_get_info``)
and ``reserve`` a share kept back for the allocator's fragmentation and kernels' workspaces. The
CPU keeps the fixed default (``DEFAULT_BATCH``): the CPU path stays as it was.
"""
from __future__ import annotations

from dataclasses import dataclass

from alignx.errors import InvalidInput

DEFAULT_BATCH = 8          # the CPU's batch size (and the fallback)
MAX_BATCH = 256


@dataclass(frozen=True)
class Shape:
    """What the estimate needs of a decoder: sizes and bytes per element."""

    layers: int
    hidden: int
    intermediate: int
    kv_heads: int
    head_dim: int
    vocab: int
    dtype_bytes: int

    @classmethod
    def of(cls, model) -> "Shape":
        """The shape of a transformers causal LM (or a peft wrapper around one)."""
        import torch

        c = model.config
        heads = int(c.num_attention_heads)
        head_dim = int(getattr(c, "head_dim", None) or c.hidden_size // heads)
        dtype = next(model.parameters()).dtype
        return cls(layers=int(c.num_hidden_layers), hidden=int(c.hidden_size),
                   intermediate=int(getattr(c, "intermediate_size", 4 * c.hidden_size)),
                   kv_heads=int(getattr(c, "num_key_value_heads", None) or heads), head_dim=head_dim,
                   vocab=int(c.vocab_size), dtype_bytes=torch.empty((), dtype=dtype).element_size())

    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    def work_bytes_per_token(self) -> int:
        return (4 * self.hidden + 3 * self.intermediate) * self.dtype_bytes + 2 * 4 * self.vocab

    def row_bytes(self, tokens: int) -> int:
        """kv(T) + w(T) for one row of ``tokens`` tokens."""
        return tokens * (self.kv_bytes_per_token() + self.work_bytes_per_token())


def batch_for_memory(free_bytes: int, shape: Shape, tokens: int, rows: int = 1, reserve: float = 0.2,
                     cap: int = MAX_BATCH) -> int:
    """The module docstring's formula: prompts per batch that fit in ``free_bytes``."""
    if tokens < 1 or rows < 1:
        raise InvalidInput(f"tokens and rows must be >= 1, got {tokens} and {rows}")
    if not 0 <= reserve < 1:
        raise InvalidInput(f"reserve must be in [0, 1), got {reserve}")
    usable = int(max(0, free_bytes) * (1 - reserve))
    return max(1, min(cap, usable // (rows * shape.row_bytes(tokens))))


def auto_batch_size(model, tokens: int, rows: int = 1, default: int = DEFAULT_BATCH, reserve: float = 0.2,
                    cap: int = MAX_BATCH) -> int:
    """``batch_for_memory`` on the model's CUDA device (its free memory now); ``default`` elsewhere.
    Under a launcher every process takes the smallest of their sizes (the shares of an evaluation
    are cut in batches of one size, ``alignx.distributed.split_batches``)."""
    import torch

    from alignx import distributed as dist

    device = next(model.parameters()).device
    size = default
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        size = batch_for_memory(free, Shape.of(model), tokens, rows, reserve, cap)
    return int(min(dist.gather([size]))) if dist.launched() else size


def parse_batch_size(value: str) -> str | int:
    """``--batch-size``: ``auto`` or a positive integer."""
    if str(value).strip().lower() == "auto":
        return "auto"
    try:
        n = int(value)
    except ValueError:
        raise InvalidInput(f"--batch-size must be 'auto' or a positive integer, got {value!r}") from None
    if n < 1:
        raise InvalidInput(f"--batch-size must be >= 1, got {n}")
    return n
