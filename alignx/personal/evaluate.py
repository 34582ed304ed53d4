"""Alignment Accuracy per persona on the P-Soups evaluation halves, for every personalization method.

For a user u and a pair (x, y_c, y_r) of the evaluation half, a method m scores

    r_m(y) = beta [ log pi_m(y | x, u) - log pi_ref(y | x) ]          (beta = 0.1)

with pi_ref the base model given the plain prompt (no user information) and pi_m the method's
policy with its own prompt; the pair counts 1 when r_m(y_c) > r_m(y_r), 1/2 on a tie, 0 otherwise
(``alignx.personal.metrics.alignment_accuracy``). Methods:

- ``base``: the base, plain prompt (pi_m = pi_ref: every pair ties, 0.5 by construction);
- ``prompt-ica`` / ``prompt-pba``: the base with the user's ICA / PBA prompt, untrained;
- ``personal-ica`` / ``personal-pba``: the DPO-trained adapters with those prompts;
- ``persona-oracle``: the base with the ground-truth persona as a system prompt (the ceiling);
- ``prompt-pba-inferred`` / ``personal-pba-inferred``: PBA with the profile inferred from the
  user's history by the direction probe (``alignx.personal.infer``), when a probe is given.

Log-likelihoods of the reference are computed once per file and shared by every method.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Sequence

from alignx.errors import InvalidInput

DEFAULT_METHODS = ("base", "prompt-ica", "prompt-pba", "personal-ica", "personal-pba", "persona-oracle")


def persona_labels(file_name: str, examples: Sequence) -> dict[str, str]:
    """Short labels for a file's personas: the file name's parts in order of first appearance
    (``friendly_unfriendly`` -> friendly, unfriendly), else p1, p2, ..."""
    personas = list(dict.fromkeys(ex.user.persona or "unknown" for ex in examples))
    parts = file_name.split("_")
    names = parts if len(parts) == len(personas) else [f"{file_name}:p{i + 1}" for i in range(len(personas))]
    return dict(zip(personas, names))


def balanced(rows: Sequence, n: int | None, seed: int = 0) -> list:
    """At most ``n`` rows, as many of each persona as possible (a seeded shuffle, then round-robin
    over the personas), in their original order; all rows when ``n`` is None."""
    import random

    if n is None or n >= len(rows):
        return list(rows)
    by: dict[str, list[int]] = {}
    for i, ex in enumerate(rows):
        by.setdefault(ex.user.persona or "", []).append(i)
    rng = random.Random(seed)
    for idx in by.values():
        rng.shuffle(idx)
    picked: list[int] = []
    while len(picked) < n:
        for idx in by.values():
            if idx and len(picked) < n:
                picked.append(idx.pop())
    return [rows[i] for i in sorted(picked)]


def _policy(studio, method: str, user=None):
    from alignx import methods

    if method == "base":
        return methods.policy(studio, "base")
    mode = method.replace("-inferred", "")
    return methods.policy(studio, mode, **({"user": user} if user is not None else {}))


def method_logprobs(studio, method: str, examples: Sequence, batch_size: int = 8) -> tuple[list[float], list[float]]:
    """(log pi_m(y_c | x, u), log pi_m(y_r | x, u)) for every example, batched across users: each
    example's prompt is its user's text; the oracle is batched per persona (its system prompt)."""
    from alignx.policy import SinglePolicy

    if method == "persona-oracle":
        chosen, rejected = [0.0] * len(examples), [0.0] * len(examples)
        by_persona: dict[str, list[int]] = {}
        for i, ex in enumerate(examples):
            by_persona.setdefault(ex.user.persona, []).append(i)
        for idx in by_persona.values():
            policy = _policy(studio, method, examples[idx[0]].user)
            prompts = [examples[i].prompt for i in idx]
            scores = policy.logprob(prompts * 2, [examples[i].chosen for i in idx] + [examples[i].rejected for i in idx],
                                    batch_size)
            for j, i in enumerate(idx):
                chosen[i], rejected[i] = scores[j], scores[len(idx) + j]
        return chosen, rejected
    if method == "base":
        texts, adapter = [ex.prompt for ex in examples], None
    else:
        from alignx.personal.prompts import load_dims
        from alignx.personal.train import user_prompt

        policy = _policy(studio, method)                         # loads a trained adapter once
        dims = load_dims()
        texts = [user_prompt(policy.method, ex.prompt, ex.user, dims) for ex in examples]
        adapter = policy.adapter
    plain = SinglePolicy(studio.model, studio.tokenizer, adapter)     # the texts already hold the user
    scores = plain.logprob(texts * 2, [ex.chosen for ex in examples] + [ex.rejected for ex in examples], batch_size)
    return scores[:len(examples)], scores[len(examples):]


def with_inferred(examples: Sequence, directions) -> list:
    """The examples with each user's direction replaced by the inferred one (profile text dropped)."""
    return [replace(ex, user=replace(ex.user, direction=tuple(float(v) for v in d), profile=None))
            for ex, d in zip(examples, directions)]


def evaluate(studio, splits: dict[str, tuple[list, list]], methods: Sequence[str] = DEFAULT_METHODS,
             beta: float = 0.1, batch_size: int = 8, n_boot: int = 1000, seed: int = 0, limit: int | None = None,
             inferred: dict[str, list] | None = None, log: Callable[[str], None] = lambda m: None,
             bf16: bool = False) -> dict:
    """``{"alignment_accuracy": {method: {persona: {value, ci95, n}}}, "by_file": ..., ...}``.
    ``inferred``: file -> inferred directions of its evaluation examples (enables the *-inferred methods)."""
    import contextlib

    import torch

    from alignx.personal.metrics import alignment_accuracy

    autocast = (lambda: torch.autocast(studio.lm.device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    unknown_methods = sorted(set(methods) - set(DEFAULT_METHODS) - {"prompt-pba-inferred", "personal-pba-inferred"})
    if unknown_methods:
        raise InvalidInput(f"unknown personalization method(s) {unknown_methods}; available: "
                           f"{', '.join(DEFAULT_METHODS)}, prompt-pba-inferred, personal-pba-inferred")
    t0 = time.time()
    table: dict[str, dict] = {m: {} for m in methods}
    by_file: dict[str, dict] = {}
    for file_name, (_, eval_rows) in splits.items():
        rows = balanced(eval_rows, limit, seed)
        labels = persona_labels(file_name, eval_rows)          # from the whole half: stable under --limit
        groups = [labels[ex.user.persona or "unknown"] for ex in rows]
        log(f"{file_name}: reference log-probs of {len(rows)} pairs")
        with autocast():
            ref_c, ref_r = method_logprobs(studio, "base", rows, batch_size)
        by_file[file_name] = {"pairs": len(rows), "personas": labels, "methods": {}}
        for method in methods:
            if method.endswith("-inferred"):
                if not inferred or file_name not in inferred:
                    continue
                data = with_inferred(rows, inferred[file_name][:len(rows)])
            else:
                data = rows
            log(f"{file_name}: {method}")
            with autocast():
                pi_c, pi_r = method_logprobs(studio, method, data, batch_size)
            rc = [beta * (p - r) for p, r in zip(pi_c, ref_c)]
            rr = [beta * (p - r) for p, r in zip(pi_r, ref_r)]
            aa = alignment_accuracy(rc, rr, groups, n_boot=n_boot, seed=seed)
            by_file[file_name]["methods"][method] = aa
            for persona, entry in aa["by_group"].items():
                table[method][persona] = {"value": entry["value"], "ci95": entry["ci95"], "n": entry["n"],
                                          "file": file_name}
            table[method][f"{file_name}:all"] = {"value": aa["value"], "ci95": aa["ci95"], "n": aa["n"],
                                                 "file": file_name}
    return {"alignment_accuracy": table, "by_file": by_file, "beta": beta, "model": studio.lm.name,
            "methods": list(methods), "limit": limit, "seed": seed, "n_boot": n_boot, "bf16": bf16,
            "wall_time_s": round(time.time() - t0, 1)}


def markdown(report: dict) -> str:
    """The RESULTS table: one row per method, one column per persona (value [95% CI])."""
    table = report["alignment_accuracy"]
    personas = list(dict.fromkeys(p for m in table.values() for p in m))
    lines = ["| method | " + " | ".join(personas) + " |", "|---|" + "---|" * len(personas)]
    for method, row in table.items():
        cells = []
        for p in personas:
            e = row.get(p)
            cells.append("n/a" if not e or e["value"] is None else
                         f"{e['value']:.3f} [{e['ci95'][0]:.3f}, {e['ci95'][1]:.3f}]")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
