"""Fused decoding of the experts, exact in both modes.

Logit fusion: one batched forward over the experts (peft ``adapter_names``, one row each);
    log p(t) = logsumexp_i( log w_i + log softmax(logits_i / tau_i)(t) )
with tau_i each expert's calibration temperature. With ``per_token`` the weights are
recomputed after every token from the running mean of each adapter's last hidden states
(a base row joins the batch), i.e. the router re-reads the latent of prompt + answer so far.

``stacked`` (a ``StackedLoRA``, see ``alignx.mocae.stacked``) computes the expert rows' LoRA updates
as one batched matmul per layer instead of peft's per-adapter sub-batches; it is the same sum.

Batched generation (``mixture_generate``, ``FusedAdapter.per_row``) answers many prompts at
once, each with its own weights: prompts x experts rows in one forward for logit fusion; one
row per prompt, with a per-row scale on the fused A x, for adapter fusion.

Adapter fusion: one stream whose LoRA update is sum_i w_i s_i B_i A_i (s_i = alpha_i / r_i):
a persistent rank-sum(r_i) adapter built once with peft's ``add_weighted_adapter(...,
combination_type="cat")`` (A = [w_1 s_1 A_1; ...], B = [B_1, ...], scaling 1) whose A blocks are
rewritten in place whenever the weights change, under the model lock.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch

from alignx.generation import BASE, cache_of, model_lock, sample_token, with_cache
from alignx.hooks import capture, hidden_state_name, lora_hooked, module_hook
from alignx.logprobs import head_logprobs, plain_head

FUSED = "__mocae__"


class FusedAdapter:
    """The ``cat`` adapter of the experts, reweighted in place."""

    def __init__(self, model, experts: Sequence[str]):
        self.model, self.experts = model, list(experts)
        with model_lock(model):
            if FUSED not in model.peft_config:
                model.add_weighted_adapter(self.experts, [1.0] * len(self.experts), FUSED, combination_type="cat")
            self.blocks = []
            for module in model.modules():
                if hasattr(module, "lora_A") and FUSED in getattr(module, "lora_A", {}):
                    parts, row = [], 0
                    for e in self.experts:
                        a = module.lora_A[e].weight
                        parts.append((a, module.scaling[e] / module.scaling[FUSED], slice(row, row + a.shape[0])))
                        row += a.shape[0]
                    self.blocks.append((module.lora_A[FUSED], parts))
        self.current: tuple[float, ...] | None = None

    @torch.no_grad()
    def set_weights(self, w: Sequence[float]) -> None:
        """Write w into the fused adapter; the caller holds ``model_lock(model)``."""
        key = tuple(round(float(x), 8) for x in w)
        if key == self.current:
            return
        for linear, parts in self.blocks:
            for wi, (a, scale, rows) in zip(key, parts):
                linear.weight[rows].copy_(a * (wi * scale))
        self.current = key

    @contextmanager
    def per_row(self, w: torch.Tensor) -> Iterator[None]:
        """Row b of the next forwards gets its own weights ``w[b]`` ((B, n) tensor): the A blocks hold
        s_i A_i and a forward hook scales each row's rank-r_i slice of A x by w[b, i], so row b's update
        is sum_i w[b, i] s_i B_i A_i x. Every row must use the fused adapter; the caller holds the lock."""
        from contextlib import ExitStack

        self.set_weights([1.0] * len(self.experts))
        with ExitStack() as stack:
            for linear, parts in self.blocks:
                expand = torch.zeros(len(self.experts), linear.weight.shape[0])
                for i, (_, _, rows) in enumerate(parts):
                    expand[i, rows] = 1.0
                scale = (w.float() @ expand).to(linear.weight.device, linear.weight.dtype)[:, None, :]   # (B, 1, R)
                stack.enter_context(module_hook(linear, lambda m, args, out, s=scale: out * s))
            yield

    def delta_weight(self, module) -> torch.Tensor:
        """The fused adapter's weight delta of one LoRA layer (for tests: equals the explicit sum)."""
        return module.get_delta_weight(FUSED)


class AdapterFusionStep:
    """KV-cached single stream through the fused adapter with fixed weights."""

    def __init__(self, fused: FusedAdapter, weights: torch.Tensor):
        self.fused, self.w, self.past = fused, weights, None
        self.report = dict(zip(fused.experts, weights.tolist()))

    @torch.inference_mode()
    def __call__(self, ids: Sequence[int]):
        model = self.fused.model
        x = torch.tensor([list(ids)], device=next(model.parameters()).device)
        with model_lock(model):
            self.fused.set_weights(self.w.tolist())
            out = model(input_ids=x, use_cache=True, adapter_names=[FUSED], **with_cache(model, self.past))
        self.past = cache_of(out)
        return torch.log_softmax(out.logits[0, -1].float(), -1), self.report


def expert_forward(model, stacked, names: list[str], per_expert: int, **kwargs):
    """One forward over expert-major rows: ``stacked`` (a ``StackedLoRA``) or peft's ``adapter_names``.

    ``kwargs`` hold ``per_expert`` rows (the first group); the rows of ``names`` are built from
    them: on the stacked path once, below the shared trunk's fork, then repeated at the fork
    (``StackedLoRA.active(trunk=...)``); on peft's path repeated up front.
    While a hook sits on a LoRA submodule (``alignx.hooks.lora_hooked``) the stacked path, which
    bypasses those submodules, is left for peft's, so ``blocks.*.lora.*`` hooks see every row."""
    k = len(names) // per_expert
    if stacked is None or lora_hooked(model):
        return model(adapter_names=names, **_repeated(kwargs, k))
    if stacked.fork == 0 or not stacked.share_trunk:        # LoRA from the first layer: no trunk to share
        with stacked.active(per_expert):
            return model(**_repeated(kwargs, k))
    with stacked.active(per_expert, trunk=k):
        return model(**kwargs)


def _repeated(kwargs: dict, k: int) -> dict:
    """The batched inputs of a forward repeated k times along the rows (copy-major)."""
    from alignx.fork import repeat_rows

    out = dict(kwargs)
    for key in ("input_ids", "inputs_embeds", "attention_mask", "position_ids"):
        if out.get(key) is not None:
            out[key] = repeat_rows(out[key], k)
    return out


class LogitFusionStep:
    """All experts in one batched forward; the next-token distribution is their weighted mixture."""

    def __init__(self, model, experts: Sequence[str], temperatures: Sequence[float], weights: torch.Tensor,
                 reroute: Callable[[torch.Tensor], torch.Tensor] | None = None, stacked=None):
        self.model, self.experts, self.stacked = model, list(experts), stacked
        self.rows = self.experts + ([BASE] if reroute else [])
        self.temps = torch.tensor(list(temperatures), dtype=torch.float32)
        self.w, self.reroute, self.past = weights.float(), reroute, None
        self.h_sum, self.h_count = None, 0

    @torch.inference_mode()
    def __call__(self, ids: Sequence[int]):
        device = next(self.model.parameters()).device
        x = torch.tensor([list(ids)], device=device)        # one row: expert_forward forks it
        last = [hidden_state_name(self.model, -1)] if self.reroute is not None else []   # the final-norm output
        with model_lock(self.model), capture(self.model, last) as seen:
            out = expert_forward(self.model, self.stacked, self.rows, 1, input_ids=x, use_cache=True,
                                 **with_cache(self.model, self.past))
        self.past = cache_of(out)
        n = len(self.experts)
        lp = torch.log_softmax(out.logits[:n, -1].float() / self.temps[:, None].to(device), -1)
        if self.reroute is not None:
            h = seen[last[0]].float().sum(1)                    # (rows, d), running mean below
            self.h_sum = h if self.h_sum is None else self.h_sum + h
            self.h_count += x.shape[1]
            mean = self.h_sum / self.h_count                    # rows: experts..., base
            self.w = self.reroute(torch.cat([mean[n:], mean[:n]]).cpu())   # LatentSpace order: base first
        mixed = torch.logsumexp(torch.log(self.w.clamp_min(1e-12)).to(device)[:, None] + lp, dim=0)
        return mixed, dict(zip(self.experts, self.w.tolist()))


def expert_logprobs(model, experts: Sequence[str], temperatures: Sequence[float], input_ids=None,
                    attention_mask=None, inputs_embeds=None, logits_to_keep: int = 0, stacked=None) -> torch.Tensor:
    """(n, B, L, V) log softmax(logits_i / tau_i) of every expert i for B rows, all experts in one
    batched forward over expert-major rows (no KV cache; differentiable)."""
    x = input_ids if input_ids is not None else inputs_embeds
    n, b = len(experts), x.shape[0]
    names = [e for e in experts for _ in range(b)]
    kw: dict = {"logits_to_keep": logits_to_keep, "attention_mask": attention_mask}
    if input_ids is not None:
        kw["input_ids"] = input_ids
    else:
        kw["inputs_embeds"] = inputs_embeds
    with model_lock(model):
        logits = expert_forward(model, stacked, names, b, **kw).logits.float()
    temps = torch.tensor(list(temperatures), device=logits.device).repeat_interleave(b)[:, None, None]
    return torch.log_softmax(logits / temps, -1).view(n, b, *logits.shape[1:])


def log_weights(w: torch.Tensor, n: int, b: int, device) -> torch.Tensor:
    """(n, B, 1, 1) log w for weights of shape (n,) (one mixture for every row) or (B, n) (one per row)."""
    w = w.float().clamp_min(1e-12)
    w = w.expand(b, n) if w.dim() == 1 else w
    return torch.log(w).T.to(device)[:, :, None, None]


def mixture_logits(lp: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(B, L, V) log p_mix = logsumexp_i(log w_i + lp_i) of ``expert_logprobs``' (n, B, L, V)."""
    return torch.logsumexp(log_weights(w, lp.shape[0], lp.shape[1], lp.device) + lp, dim=0)


def mixture_token_logprobs(model, experts: Sequence[str], temperatures: Sequence[float], w: torch.Tensor,
                           input_ids: torch.Tensor, attention_mask: torch.Tensor, first: int = 0,
                           stacked=None) -> torch.Tensor:
    """(B, L-1-first) log p_mix(token t+1 | <= t), t >= ``first``, for right-padded rows; ``w`` is (n,)
    or (B, n). The same value as gathering ``mixture_logits``, with the mixture taken after the
    gather. With a plain LM head (``alignx.logprobs.plain_head``) the forward keeps one position's
    logits and the head runs slice by slice on the captured final hidden states
    (``head_logprobs``): no (n x B, L, V) tensor is made, which at the default model's vocabulary
    is what decides whether 16 long answers x 3 experts fit in memory."""
    n, b = len(experts), input_ids.shape[0]
    target = input_ids[:, first + 1:]
    head = plain_head(model)
    if head is None:
        lp = expert_logprobs(model, experts, temperatures, input_ids, attention_mask,
                             logits_to_keep=input_ids.shape[1] - first, stacked=stacked)[:, :, :-1]
        lp = lp.gather(-1, target[None, :, :, None].expand(n, -1, -1, 1)).squeeze(-1)    # (n, B, L')
    else:
        last = hidden_state_name(model, -1)                 # the final-norm output: the head's input
        with model_lock(model), capture(model, last, detach=not torch.is_grad_enabled()) as seen:
            expert_forward(model, stacked, [e for e in experts for _ in range(b)], b, input_ids=input_ids,
                           attention_mask=attention_mask, logits_to_keep=1)
        h = seen[last][:, first:-1]                          # (n x B, L', d), expert-major rows
        temps = torch.tensor(list(temperatures), dtype=torch.float32).repeat_interleave(b)
        lp = head_logprobs(head, h, target.repeat(n, 1), temps).view(n, b, -1)
    return torch.logsumexp(log_weights(w, n, b, lp.device)[..., 0] + lp, dim=0)


@torch.inference_mode()
def mixture_generate(model, experts: Sequence[str], temperatures: Sequence[float], w: torch.Tensor,
                     ids: torch.Tensor, mask: torch.Tensor, sampling, eos: set[int], pad: int,
                     stacked=None) -> list[list[int]]:
    """Logit-fusion decoding of B left-padded prompts at once, prompt b under weights ``w[b]`` ((B, n)).

    One KV-cached forward per step over expert-major rows (expert i, prompt b) = row i * B + b;
    each prompt's next token is drawn from its own mixture, as ``LogitFusionStep`` does for one
    prompt (greedy decoding gives the same tokens; sampled ones use one generator for the batch).
    Returns the new token ids of each prompt, without EOS. The caller holds the model lock."""
    n, b = len(experts), ids.shape[0]
    device = ids.device
    names = [e for e in experts for _ in range(b)]
    x, m = ids, mask                                       # B rows: expert_forward forks them
    pos = (m.cumsum(-1) - 1).clamp_min(0)
    temps = torch.tensor(list(temperatures), dtype=torch.float32, device=device).repeat_interleave(b)[:, None]
    logw = torch.log(w.float().clamp_min(1e-12)).T.to(device)[:, :, None]            # (n, B, 1)
    gen = torch.Generator().manual_seed(sampling.seed) if sampling.seed is not None else None
    out: list[list[int]] = [[] for _ in range(b)]
    done = [False] * b
    past = None
    for _ in range(sampling.max_new_tokens):
        o = expert_forward(model, stacked, names, b, input_ids=x, attention_mask=m, position_ids=pos,
                           use_cache=True, **with_cache(model, past))
        past = cache_of(o)
        lp = torch.log_softmax(o.logits[:, -1].float() / temps, -1)
        mixed = torch.logsumexp(logw + lp.view(n, b, -1), dim=0).cpu()                # (B, V)
        nxt = [pad] * b                                    # finished prompts are fed padding
        for j in (j for j in range(b) if not done[j]):
            nxt[j] = t = sample_token(mixed[j], sampling, gen)
            if t in eos:
                done[j] = True
            else:
                out[j].append(t)
        if all(done):
            break
        x = torch.tensor(nxt, device=device)[:, None]
        m = torch.cat([m, torch.ones_like(m[:, :1])], dim=1)
        pos = pos[:, -1:] + 1
    return out
