"""The MAC analysis of a NegotiaX mode: what the negotiation does, token by token and head by head.

- ``negotiation``: per-token fusion weights alpha_{t,h,i} over objectives for every MAC head, over
  a prompt and the mode's greedy answer (``mac.weights``, one forward pass);
- ``specialisation``: each MAC head's mean alpha over the response tokens of each objective's
  held-out rows (heads x objectives, one matrix per prompt category = objective);
- ``interventions``: the greedy answer of the full model beside the answer with one pathway
  switched off (masked out of the negotiation, its bias included: ``negotiax:without-o``), and
  the circuit off (the base exactly);
- ``trajectories``: each prompt's last-token hidden state after every layer, with and without
  the circuit, in one 2-D PCA. Each layer's states are divided by their RMS norm over all
  points of that layer first (the residual stream grows with depth), then one PCA is fitted to
  every (prompt, layer, with / without) point, so the paths share axes;
- ``geometry``: two objective x objective matrices: the subspace overlap
  ||P_i P_j^T||_F / sqrt(||P_i P_i^T||_F ||P_j P_j^T||_F) (1 on the diagonal, 0 for orthogonal
  subspaces), and the cosine between the objectives' write directions d_i = mean over held-out
  tokens of MAC(a) with alpha one-hot on i (what pathway i alone adds to the stream).
Every function validates before any model work and returns a JSON-ready dict, cached on disk.
"""
from __future__ import annotations

import time
from typing import Sequence

import torch

from alignx.errors import InvalidInput
from alignx.interp import cache as C

VIEWS = ("negotiation", "specialisation", "interventions", "trajectories", "geometry")


def nx_policy(studio, mode: str):
    """The ``NegotiaXPolicy`` of ``mode``; any other mode is a clear error listing the NegotiaX modes."""
    from alignx.negotiax.policy import NegotiaXPolicy

    modes = [m for m in studio.modes(include_unlisted=True) if m == "negotiax" or m.startswith("negotiax:")]
    if mode not in modes:
        raise InvalidInput(f"the MAC analysis needs a NegotiaX mode, not {mode!r}; available: "
                           + (", ".join(modes) or "none (train one: python -m alignx train-mac)"))
    policy = studio.policy(mode)
    assert isinstance(policy, NegotiaXPolicy)
    return policy


def _ids(policy, prompt: str, response: str) -> tuple[list[int], int]:
    from alignx.experts.sft import tokenize_pair

    enc = tokenize_pair(policy.tokenizer, prompt, response, 4096)
    start = next((i for i, l in enumerate(enc["labels"]) if l != -100), len(enc["labels"]))
    return enc["input_ids"], start


def _weights(policy, ids: list[int]) -> torch.Tensor:
    """(T, H, N) fusion weights of one sequence."""
    from alignx import hooks

    x = torch.tensor([ids], device=policy.device)
    with torch.no_grad(), hooks.capture(policy.model, "mac.weights") as cache:
        policy.forward_logits(x, torch.ones_like(x))
    return cache["mac.weights"][0].float().cpu()


def _check_prompt(prompt) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidInput("the MAC analysis needs a non-empty prompt")
    return prompt


def negotiation(studio, mode: str, prompt: str, max_new_tokens: int = 32, cache_dir=None, refresh=False) -> dict:
    from alignx.generation import Sampling

    policy, prompt = nx_policy(studio, mode), _check_prompt(prompt)

    def compute() -> dict:
        t0 = time.time()
        answer = policy.answer(prompt, Sampling(max_new_tokens=max_new_tokens, temperature=0.0))
        ids, start = _ids(policy, prompt, answer or " ")
        w = _weights(policy, ids)
        tokens = [policy.tokenizer.decode([t]) for t in ids]
        return {"analysis": "mac-negotiation", "mode": mode, "prompt": prompt, "answer": answer,
                "objectives": list(policy.nx.objectives), "tokens": tokens, "response_start": start,
                "weights": w.tolist(), "mean_over_heads": w.mean(1).tolist(), "heads": int(w.shape[1]),
                "wall_time_s": round(time.time() - t0, 2)}

    return C.cached(cache_dir, "mac-negotiation", C.fingerprint(studio, mode),
                    {"prompt": prompt, "max_new_tokens": max_new_tokens}, compute, refresh)


def specialisation(studio, mode: str, n_rows: int = 16, seed: int = 0, data_dir=None, cache_dir=None,
                   refresh=False) -> dict:
    from alignx.interp.analyses import _rows_hash
    from alignx.interp.rows import objective_rows

    policy = nx_policy(studio, mode)
    if n_rows < 1:
        raise InvalidInput(f"n_rows must be >= 1, got {n_rows}")
    rows = objective_rows(studio, n_rows, seed, data_dir)

    def compute() -> dict:
        t0 = time.time()
        out = {}
        for cat, rs in rows.items():
            acc = []
            for r in rs:
                ids, start = _ids(policy, r.prompt, r.response)
                acc.append(_weights(policy, ids)[start:].mean(0))            # (H, N) over response tokens
            out[cat] = torch.stack(acc).mean(0).tolist()
        return {"analysis": "mac-specialisation", "mode": mode, "objectives": list(policy.nx.objectives),
                "categories": out, "rows": {c: len(r) for c, r in rows.items()},
                "definition": "mean alpha_{h,i} over the response tokens of each category's held-out rows",
                "wall_time_s": round(time.time() - t0, 1)}

    return C.cached(cache_dir, "mac-specialisation", C.fingerprint(studio, mode), {"rows": _rows_hash(rows)},
                    compute, refresh)


def interventions(studio, mode: str, prompt: str, max_new_tokens: int = 48, cache_dir=None, refresh=False) -> dict:
    from alignx.generation import Sampling
    from alignx.negotiax.policy import NegotiaXPolicy

    policy, prompt = nx_policy(studio, mode), _check_prompt(prompt)
    nx = policy.nx

    def compute() -> dict:
        t0 = time.time()
        s = Sampling(max_new_tokens=max_new_tokens, temperature=0.0)
        answers = {"full": policy.answer(prompt, s)}
        for o in nx.objectives:
            if o in policy.leave_out:
                continue
            if len(set(policy.leave_out) | {o}) < len(nx.objectives):
                answers[f"without {o}"] = NegotiaXPolicy(nx, policy.variant, [*policy.leave_out, o]).answer(prompt, s)
        answers["circuit off"] = NegotiaXPolicy(nx, "off").answer(prompt, s)
        return {"analysis": "mac-interventions", "mode": mode, "prompt": prompt, "answers": answers,
                "wall_time_s": round(time.time() - t0, 1)}

    return C.cached(cache_dir, "mac-interventions", C.fingerprint(studio, mode),
                    {"prompt": prompt, "max_new_tokens": max_new_tokens}, compute, refresh)


def _last_states(policy, prompt: str, active: bool) -> torch.Tensor:
    """(L + 1, d): the last prompt token's hidden state after the embedding and every layer
    (the last entry is the final norm's output, as HF returns it)."""
    ids = torch.tensor([policy.prompt_ids(prompt)], device=policy.device)
    names = policy._names(1)
    with torch.no_grad(), policy.lock:
        if active:
            with policy.nx.active(policy.variant, policy.leave_out):
                out = policy.model(input_ids=ids, output_hidden_states=True, **names)
        else:
            out = policy.model(input_ids=ids, output_hidden_states=True, **names)
    return torch.stack([h[0, -1].float().cpu() for h in out.hidden_states])


def trajectories(studio, mode: str, prompts: Sequence[str], cache_dir=None, refresh=False) -> dict:
    policy = nx_policy(studio, mode)
    prompts = [_check_prompt(p) for p in prompts]
    if not prompts:
        raise InvalidInput("trajectories need at least one prompt")

    def compute() -> dict:
        t0 = time.time()
        states = torch.stack([torch.stack([_last_states(policy, p, True), _last_states(policy, p, False)])
                              for p in prompts])                                  # (P, 2, L+1, d)
        rms = states.pow(2).mean(-1).sqrt().mean((0, 1))                          # (L+1,) per layer
        z = states / rms[None, None, :, None]
        flat = z.reshape(-1, z.shape[-1])
        mean = flat.mean(0)
        _, s, v = torch.linalg.svd(flat - mean, full_matrices=False)
        xy = ((z - mean) @ v[:2].T)                                               # (P, 2, L+1, 2)
        var = (s ** 2) / (s ** 2).sum()
        shift = (states[:, 0] - states[:, 1]).norm(dim=-1) / states[:, 1].norm(dim=-1).clamp_min(1e-8)
        return {"analysis": "mac-trajectories", "mode": mode, "prompts": list(prompts), "fork_layer": policy.nx.fork,
                "points": {"with_mac": xy[:, 0].tolist(), "without_mac": xy[:, 1].tolist()},
                "explained_variance": var[:2].tolist(), "relative_shift": shift.tolist(),
                "definition": "hidden_states[l] of the last prompt token (l = 0: embeddings; last: final norm), "
                              "each layer divided by its RMS norm, one PCA over all points",
                "wall_time_s": round(time.time() - t0, 1)}

    return C.cached(cache_dir, "mac-trajectories", C.fingerprint(studio, mode), {"prompts": list(prompts)},
                    compute, refresh)


def geometry(studio, mode: str, n_rows: int = 8, seed: int = 0, data_dir=None, cache_dir=None, refresh=False) -> dict:
    from alignx.interp.analyses import _rows_hash
    from alignx.interp.rows import objective_rows

    policy = nx_policy(studio, mode)
    nx = policy.nx
    rows = objective_rows(studio, n_rows, seed, data_dir)

    def compute() -> dict:
        from alignx import hooks

        t0 = time.time()
        P = nx.circuit.P.detach().float()
        gram = torch.einsum("ird,jsd->ijrs", P, P).flatten(2).norm(dim=-1)       # ||P_i P_j^T||_F
        overlap = gram / torch.sqrt(torch.outer(gram.diag(), gram.diag()))
        dirs = []
        for o in nx.objectives:
            acc, count = None, 0
            for rs in rows.values():
                for r in rs:
                    ids, _ = _ids(policy, r.prompt, r.response)
                    x = torch.tensor([ids], device=policy.device)
                    with torch.no_grad(), policy.lock, nx.active("full", force=o), \
                            hooks.capture(policy.model, "mac.out") as cache:
                        policy.model(input_ids=x, **policy._names(1))
                    out = cache["mac.out"][0].float().cpu()
                    acc = out.sum(0) if acc is None else acc + out.sum(0)
                    count += out.shape[0]
            dirs.append(acc / max(count, 1))
        d = torch.stack(dirs)
        norms = d.norm(dim=-1)
        cos = (d @ d.T) / torch.outer(norms, norms).clamp_min(1e-12)
        return {"analysis": "mac-geometry", "mode": mode, "objectives": list(nx.objectives),
                "subspace_overlap": overlap.tolist(), "direction_cosine": cos.tolist(),
                "direction_norm": norms.tolist(), "rows": sum(len(r) for r in rows.values()),
                "wall_time_s": round(time.time() - t0, 1)}

    return C.cached(cache_dir, "mac-geometry", C.fingerprint(studio, mode), {"rows": _rows_hash(rows)}, compute,
                    refresh)
