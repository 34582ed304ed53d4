"""Interleaved timing rounds shared by the decode and NegotiaX benches.

Every round runs every mode once (base, A, B, ..., then base, A, B, ... again); a mode's ratio
is the median over rounds of (mode / base in the same round), so a burst of load on a shared
machine moves one round, not a ratio. Each run is a fresh step object: prefill the prompt
(timed), then ``tokens`` greedy KV-cached decode steps (timed, counted).
"""
from __future__ import annotations

import statistics
import sys
import time
from typing import Callable, Mapping, Sequence


def run_step(step, feed: Sequence[int], tokens: int) -> tuple[float, float, int, object]:
    """(prefill s, decode s per token, tokens decoded, the step) for one prompt."""
    import torch

    t0 = time.perf_counter()
    lp, _ = step(list(feed))
    prefill = time.perf_counter() - t0
    token, n = [int(torch.as_tensor(lp).argmax())], 0
    t0 = time.perf_counter()
    for _ in range(tokens):
        lp, _ = step(token)
        token = [int(torch.as_tensor(lp).argmax())]
        n += 1
    return prefill, (time.perf_counter() - t0) / max(n, 1), n, step


def interleaved(makers: Mapping[str, Callable[[], object]], feeds: Sequence[Sequence[int]], tokens: int,
                rounds: int, on_run: Callable[[str, object], None] | None = None) -> dict[str, list[tuple[float, float]]]:
    """Per mode, per round: (median prefill s, median decode s / token) over ``feeds``. One
    untimed warm-up run per mode first. ``on_run(mode, step)`` sees each finished step (memory)."""
    for make in makers.values():
        run_step(make(), feeds[0], 2)
    out: dict[str, list[tuple[float, float]]] = {k: [] for k in makers}
    for r in range(rounds):
        for name, make in makers.items():
            pre, dec = [], []
            for f in feeds:
                p, d, _, step = run_step(make(), f, tokens)
                pre.append(p)
                dec.append(d)
                if on_run:
                    on_run(name, step)
            out[name].append((statistics.median(pre), statistics.median(dec)))
        print(f"round {r + 1}: " + "  ".join(f"{k} {v[-1][1] * 1000:.1f}" for k, v in out.items()) + " ms/token",
              file=sys.stderr, flush=True)
    return out


def ratios(rounds: Mapping[str, list[tuple[float, float]]], base: str = "base") -> dict[str, float]:
    """``{mode: decode ratio, mode_prefill: prefill ratio}``: medians over rounds of mode / base."""
    out = {}
    for name, rs in rounds.items():
        if name == base:
            continue
        b = rounds[base]
        out[name] = round(statistics.median(r[1] / x[1] for r, x in zip(rs, b)), 3)
        out[f"{name}_prefill"] = round(statistics.median(r[0] / x[0] for r, x in zip(rs, b)), 3)
    return out


def cache_bytes(step) -> int:
    """Bytes held by a step's KV cache (``past`` attribute; every tensor in it), 0 if none."""
    import torch

    past = getattr(step, "past", None)
    seen, total = set(), 0

    def walk(x):
        nonlocal total
        if isinstance(x, torch.Tensor):
            if x.data_ptr() not in seen:
                seen.add(x.data_ptr())
                total += x.numel() * x.element_size()
        elif isinstance(x, (list, tuple)):
            for y in x:
                walk(y)
        elif hasattr(x, "layers"):
            for layer in x.layers:
                walk([getattr(layer, "keys", None), getattr(layer, "values", None)])
        elif hasattr(x, "key_cache"):
            walk([x.key_cache, x.value_cache])

    walk(past)
    return total
