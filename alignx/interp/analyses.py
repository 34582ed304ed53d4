"""The analyses as cached, JSON-ready results: what the CLI writes and the app draws.

Each function takes a ``Studio`` and a mode name (any registered mode), validates its inputs
before any work, reports progress through ``progress(done, total, what)`` and stops when
``should_stop()`` turns true (raising ``InterruptedError``). Results are plain dicts (lists of
floats, no tensors) cached with ``alignx.interp.cache.cached``.
"""
from __future__ import annotations

import time
from typing import Callable, Mapping, Sequence

from alignx.errors import InvalidInput, unknown
from alignx.interp import cache as C
from alignx.interp.rows import Row, as_rows, objective_rows

Progress = Callable[[int, int, str], None] | None


def _check_mode(studio, mode: str) -> None:
    modes = studio.modes(include_unlisted=True)
    if mode not in modes:
        raise unknown("mode", mode, modes)


def _rows_hash(rows: Mapping[str, Sequence[Row]]) -> dict:
    import hashlib

    return {o: hashlib.sha256("\x00".join(f"{r.prompt}\x01{r.response}\x01{r.rejected}" for r in rs).encode())
            .hexdigest()[:16] for o, rs in rows.items()}


def heads(studio, mode: str, objectives: Sequence[str] | None = None, rows: Mapping[str, Sequence] | None = None,
          n_rows: int = 32, batch_size: int = 1, exact_top_k: int = 0, seed: int = 0, data_dir=None,
          cache_dir=None, refresh: bool = False, progress: Progress = None,
          should_stop: Callable[[], bool] | None = None, bf16: bool = False) -> dict:
    """Head importance per objective for ``mode`` (``bf16``: under bfloat16 autocast): ``objectives[o]["importance"]`` is the
    (layers x heads) matrix E |dL_o / dxi_h|, ``top`` the heads by it, and with ``exact_top_k`` > 0
    ``ablation`` the exact Delta_o of the top-k heads and ``spearman`` between the two rankings."""
    from alignx.interp import heads as H

    _check_mode(studio, mode)
    if n_rows < 1:
        raise InvalidInput(f"n_rows must be >= 1, got {n_rows}")
    if exact_top_k < 0:
        raise InvalidInput(f"exact_top_k must be >= 0, got {exact_top_k}")
    names = [o.name for o in studio.objectives]
    for o in objectives or ():
        if o not in names and not (rows and o in rows):
            raise unknown("objective", o, names)
    table = as_rows(rows) if rows else objective_rows(studio, n_rows, seed, data_dir, objectives)
    if objectives:
        table = {o: table[o] for o in objectives}
    n_layers, n_heads = H.head_shape(studio.model)
    params = {"objectives": sorted(table), "rows": _rows_hash(table), "batch_size": batch_size,
              "exact_top_k": exact_top_k, "loss": "mean NLL of the target | preference loss", "bf16": bool(bf16)}

    def compute() -> dict:
        t0 = time.time()
        policy = studio.policy(mode)
        out: dict = {}
        for i, (o, rs) in enumerate(table.items()):
            step = (lambda d, n, o=o: progress(d, n, f"{o}: gradients")) if progress else None
            imp = H.gradient_importance(policy, rs, batch_size, step, should_stop, bf16)
            top = H.top_heads(imp, n_layers * n_heads)
            entry = {"importance": imp.tolist(), "rows": len(rs), "loss": float(H.losses(policy, rs, bf16=bf16).mean()),
                     "top": [[l, h, float(imp[l, h])] for l, h in top[:20]]}
            if exact_top_k:
                step = (lambda d, n, o=o: progress(d, n, f"{o}: ablations")) if progress else None
                deltas = H.ablation_deltas(policy, rs, top[:exact_top_k], progress=step, should_stop=should_stop,
                                           bf16=bf16)
                entry["ablation"] = [{"layer": l, "head": h, **deltas[(l, h)]} for l, h in top[:exact_top_k]]
                if exact_top_k >= 2:
                    entry["spearman"] = H.spearman([float(imp[h]) for h in top[:exact_top_k]],
                                                   [deltas[h]["abs_delta"] for h in top[:exact_top_k]])
            out[o] = entry
        return {"analysis": "heads", "mode": mode, "layers": n_layers, "heads": n_heads, "objectives": out, "bf16": bool(bf16),
                "definition": "importance = E_rows |dL_o / d xi_h| at xi = 1 (Michel et al. 2019); "
                              "ablation delta = L_o(head zeroed) - L_o",
                "wall_time_s": round(time.time() - t0, 1)}

    return C.cached(cache_dir, "heads", C.fingerprint(studio, mode), params, compute, refresh)


def difference(report: dict, base: dict) -> dict[str, list[list[float]]]:
    """``{objective: importance(report) - importance(base)}`` for the objectives both hold."""
    if (report["layers"], report["heads"]) != (base["layers"], base["heads"]):
        raise InvalidInput("head maps of different models cannot be subtracted")
    out = {}
    for o, e in report["objectives"].items():
        if o in base["objectives"]:
            b = base["objectives"][o]["importance"]
            out[o] = [[x - y for x, y in zip(r1, r0)] for r1, r0 in zip(e["importance"], b)]
    return out


MAX_ATTRIBUTION_CHARS = 4_000


def attribute(studio, mode: str, prompt: str, target: str | None = None, method: str = "feature_ablation",
              unit: str = "word", contrast_mode: str | None = None, n_steps: int = 24, max_new_tokens: int = 64,
              cache_dir=None, refresh: bool = False, progress: Progress = None) -> dict:
    """Prompt-token attribution of ``target`` (default: the mode's own greedy answer) under ``mode``,
    or of log p_mode(y) - log p_contrast(y) with ``contrast_mode``; ``scores`` has one value per
    feature (a word / segment for feature ablation, a token for integrated gradients)."""
    from alignx.generation import Sampling
    from alignx.interp import attribution as A

    _check_mode(studio, mode)
    if contrast_mode is not None:
        _check_mode(studio, contrast_mode)
    if method not in A.METHODS:
        raise unknown("attribution method", method, A.METHODS)
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidInput("attribution needs a non-empty prompt")
    if len(prompt) > MAX_ATTRIBUTION_CHARS:   # feature ablation runs the model once per word
        raise InvalidInput(f"attribution reads prompts of at most {MAX_ATTRIBUTION_CHARS:,} characters, "
                           f"got {len(prompt):,}")
    if method == "feature_ablation":
        A.split_prompt(prompt, unit)                  # validates the unit before any model work
    policy = studio.policy(mode)
    generated = target is None or not target.strip()
    if generated:
        if progress:
            progress(0, 2, "generating the answer to attribute")
        target = policy.answer(prompt, Sampling(max_new_tokens=max_new_tokens, temperature=0.0))
        if not target.strip():
            raise InvalidInput(f"{mode} gave an empty answer to attribute; pass a target text")
    params = {"prompt": prompt, "target": target, "method": method, "unit": unit, "contrast": contrast_mode,
              "n_steps": n_steps}
    ident = C.fingerprint(studio, mode) | ({"contrast": C.fingerprint(studio, contrast_mode)} if contrast_mode else {})

    def compute() -> dict:
        t0 = time.time()
        if progress:
            progress(1, 2, f"{method} over the prompt")
        contrast = studio.policy(contrast_mode) if contrast_mode else None
        if method == "feature_ablation":
            res = A.feature_ablation(policy, prompt, target, unit, contrast, mode, contrast_mode)
        else:
            res = A.integrated_gradients(policy, prompt, target, n_steps, contrast, mode, contrast_mode)
        out = {"analysis": "attribution", **res.to_dict(), "prompt": prompt, "target_generated": generated,
               "wall_time_s": round(time.time() - t0, 1)}
        if progress:
            progress(2, 2, "done")
        return out

    return C.cached(cache_dir, "attribution", ident, params, compute, refresh)


def refusal_under_ablation(studio, mode: str, heads_: Sequence[tuple[int, int]], prompts: Sequence[str],
                           max_new_tokens: int = 48, batch_size: int = 8) -> dict:
    """Greedy answers of ``mode`` to ``prompts`` with ``heads_`` ablated, and their refusal rate by
    the stock-phrase detector ``alignx.eval.refusal.refusal_flags`` (the answers are returned, so a
    judge can score them too)."""
    from alignx.eval.refusal import refusal_flags
    from alignx.generation import Sampling
    from alignx.interp.heads import ablated_heads

    policy = studio.policy(mode)
    with policy.lock, ablated_heads(studio.model, heads_):
        answers = policy.generate(list(prompts), Sampling(max_new_tokens=max_new_tokens, temperature=0.0),
                                  batch_size=batch_size)
    flags = refusal_flags(answers)
    return {"heads": [list(h) for h in heads_], "refusal_rate": sum(flags) / len(flags), "flags": flags,
            "answers": answers}
