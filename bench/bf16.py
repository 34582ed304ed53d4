"""bfloat16 against float32 on this machine's CPU: one linear layer of the default model's MLP shape.

    OMP_NUM_THREADS=1 python bench/bf16.py [--rows 256] [--rounds 7]

Times ``F.linear`` of a (rows x 576) input and a (1536 x 576) weight, forward and forward + backward,
in float32 and in bfloat16, in interleaved rounds (each round times fp32, then bf16): each ratio is the
median over rounds of bf16 / fp32 in the same round. The last line is one JSON object with the ratios and
``native_bf16`` (``alignx.models.native_bf16``: whether oneDNN has bf16 kernels here), the probe
behind the refusal of ``--bf16`` on hardware without them.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(fn, repeats: int) -> float:
    fn()                                              # warm-up: kernels chosen, buffers allocated
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def main() -> None:
    import torch
    import torch.nn.functional as F

    from alignx.models import native_bf16

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    x32, w32 = torch.randn(a.rows, 576, generator=g), torch.randn(1536, 576, generator=g)

    def forward(dtype):
        x, w = x32.to(dtype), w32.to(dtype)
        return lambda: F.linear(x, w)

    def train(dtype):
        x, w = x32.to(dtype), w32.to(dtype).requires_grad_(True)
        return lambda: F.linear(x, w).sum().backward()

    ratios: dict[str, list[float]] = {"forward": [], "forward_backward": []}
    ms: dict[str, list[float]] = {}
    for _ in range(a.rounds):
        for name, make in (("forward", forward), ("forward_backward", train)):
            t32, t16 = timed(make(torch.float32), a.repeats), timed(make(torch.bfloat16), a.repeats)
            ratios[name].append(t16 / t32)
            ms.setdefault(f"{name}_fp32_ms", []).append(t32 * 1e3)
            ms.setdefault(f"{name}_bf16_ms", []).append(t16 * 1e3)
    for k, v in ms.items():
        print(f"{k:26s} {statistics.median(v):9.2f}", file=sys.stderr)
    print(json.dumps({"native_bf16": native_bf16(torch.device("cpu")), "threads": torch.get_num_threads(),
                      "rows": a.rows, **{f"bf16_over_fp32_{k}": round(statistics.median(v), 2) for k, v in ratios.items()},
                      **{k: round(statistics.median(v), 2) for k, v in ms.items()}}))


if __name__ == "__main__":
    main()
