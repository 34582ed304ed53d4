"""Token attribution with captum: which prompt words or tokens make a mode produce a target text.

The attributed quantity is the target's log-probability under a mode,

    f(x) = log pi(y | x) = sum_t log pi(y_t | chat(x), y_<t),

or, contrastively between modes A and B, f(x) = log pi_A(y | x) - log pi_B(y | x) ("which prompt
words make the harmless expert refuse where the helpful one answers").

- ``feature_ablation``: captum's ``LLMAttribution(FeatureAblation)`` over the prompt's words (or
  segments: sentences / clauses). a_i = f(x) - f(x without feature i), so a positive score means the
  feature raises the target's probability. A routed mode re-routes each perturbed prompt.
- ``integrated_gradients``: captum's ``LayerIntegratedGradients`` over the embedding output, from a
  baseline where only the user's prompt tokens are replaced by the pad (or EOS) token's embedding
  (the chat template stays), n_steps Riemann steps. Completeness: sum_i a_i = f(x) - f(x'), with
  captum's convergence delta reported. The route is held at the prompt's own weights.

The mode is wrapped in a small ``nn.Module`` (``PolicyLM``) whose forward is
``policy.forward_logits``: captum hooks only that wrapper's own embedding module, never the model.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from torch import nn

from alignx.errors import InvalidInput

UNITS = ("word", "segment")


def _repeat(context: dict, rows: int) -> dict:
    """A one-row ``prepare`` context repeated for ``rows`` rows (tensors and lists of length 1)."""
    out = {}
    for k, v in context.items():
        if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == 1:
            out[k] = v.expand(rows, *v.shape[1:])
        elif isinstance(v, (list, tuple)) and len(v) == 1:
            out[k] = list(v) * rows
        else:
            out[k] = v
    return out


class _Embed(nn.Module):
    """The policy's input embeddings as a module of the wrapper (captum's layer to attribute)."""

    def __init__(self, policy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.policy.embed(input_ids)


class PolicyLM(nn.Module):
    """A mode as a HF-style causal LM for captum: ``forward(input_ids) -> .logits``. ``prompt``
    (set by ``_ChatTokenizer.encode``) is the current user prompt, routed with ``policy.prepare``."""

    def __init__(self, policy) -> None:
        super().__init__()
        self.policy = policy
        self.embedding = _Embed(policy)
        self.prompt: str = ""
        self.fixed_context: dict | None = None

    @property
    def device(self) -> torch.device:
        return self.policy.device

    def context(self, rows: int) -> dict:
        ctx = self.fixed_context if self.fixed_context is not None else self.policy.prepare([self.prompt])
        return _repeat(ctx, rows)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_) -> SimpleNamespace:
        with torch.no_grad():
            e = self.embedding(input_ids)
            logits = self.policy.forward_logits(inputs_embeds=e, attention_mask=attention_mask,
                                                **self.context(len(input_ids)))
        return SimpleNamespace(logits=logits)


class _ChatTokenizer:
    """The tokenizer, but ``encode(text)`` wraps the text in the model's chat template (captum
    encodes the perturbed prompt with it) and tells the wrapper the prompt to route."""

    def __init__(self, tokenizer, lm: PolicyLM) -> None:
        self._tok, self._lm = tokenizer, lm

    def encode(self, text: str, return_tensors: str | None = None, add_special_tokens: bool = True, **kw):
        from alignx.generation import chat_prompt_ids

        self._lm.prompt = text
        ids = chat_prompt_ids(self._tok, text)
        return torch.tensor([ids]) if return_tensors == "pt" else ids

    def __call__(self, *args, **kw):
        return self._tok(*args, **kw)

    def __getattr__(self, name):
        return getattr(self._tok, name)


def split_prompt(prompt: str, unit: str = "word") -> list[str]:
    """The prompt cut into features that join back to it exactly: words with their trailing
    whitespace, or segments ending at . ! ? ; : , or a newline (with their whitespace)."""
    if unit not in UNITS:
        raise InvalidInput(f"unknown attribution unit {unit!r}; available: {', '.join(UNITS)}")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidInput("attribution needs a non-empty prompt")
    pattern = r"\S+\s*" if unit == "word" else r"[^.!?;:,\n]+[.!?;:,\n]*\s*|[.!?;:,\n]+\s*"
    lead = re.match(r"\s*", prompt).group(0)
    parts = re.findall(pattern, prompt[len(lead):])
    if parts:
        parts[0] = lead + parts[0]
    if "".join(parts) != prompt:
        raise AssertionError("split_prompt lost characters")   # the pattern covers every character
    return parts


@dataclass
class Attribution:
    """Scores per feature of the prompt (words, segments or tokens), for one target text."""
    method: str
    features: list[str]
    scores: list[float]
    target: str
    mode: str
    contrast: str | None = None
    target_logprob: float | None = None          # f(x): log p_A(y|x) (- log p_B(y|x) when contrastive)
    baseline_logprob: float | None = None        # f(x') for integrated gradients
    convergence_delta: float | None = None
    per_target_token: list[list[float]] | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: v for k, v in vars(self).items()}


def _target_ids(tokenizer, target: str) -> torch.Tensor:
    if not isinstance(target, str) or not target.strip():
        raise InvalidInput("attribution needs a non-empty target text (e.g. an answer, or \"I'm sorry, but I cannot\")")
    return torch.tensor(tokenizer(target, add_special_tokens=False)["input_ids"])


def _feature_ablation_one(policy, prompt: str, target_ids: torch.Tensor, unit: str):
    from captum.attr import FeatureAblation, LLMAttribution, TextTemplateInput

    lm = PolicyLM(policy)
    tok = _ChatTokenizer(policy.tokenizer, lm)
    parts = split_prompt(prompt, unit)
    inp = TextTemplateInput(template=lambda *v: "".join(v), values=parts)
    attr = LLMAttribution(FeatureAblation(lm), tok)
    with policy.lock:
        res = attr.attribute(inp, target=target_ids, forward_in_tokens=False)
        lm.fixed_context = None
        full = lm(torch.tensor([tok.encode(prompt) + target_ids.tolist()])).logits
    n_prompt = len(tok.encode(prompt))
    lp = torch.log_softmax(full[0, n_prompt - 1:-1].float(), -1).gather(-1, target_ids[:, None]).sum()
    return parts, res.seq_attr.float(), res.token_attr.float() if res.token_attr is not None else None, float(lp)


def feature_ablation(policy, prompt: str, target: str, unit: str = "word", contrast=None,
                     mode: str = "", contrast_mode: str | None = None) -> Attribution:
    """Word / segment attribution with ``LLMAttribution(FeatureAblation)``; ``contrast`` (another
    policy) attributes log p_A(y|x) - log p_B(y|x) (FeatureAblation is linear in f: a_A - a_B)."""
    ids = _target_ids(policy.tokenizer, target)
    parts, seq, tokens, lp = _feature_ablation_one(policy, prompt, ids, unit)
    if contrast is not None:
        _, seq_b, tokens_b, lp_b = _feature_ablation_one(contrast, prompt, ids, unit)
        seq, lp = seq - seq_b, lp - lp_b
        tokens = tokens - tokens_b if tokens is not None and tokens_b is not None else None
    return Attribution(f"feature_ablation:{unit}", parts, seq.tolist(), target, mode, contrast_mode,
                       target_logprob=lp, per_target_token=tokens.tolist() if tokens is not None else None)


def _prompt_span(tokenizer, prompt: str) -> tuple[list[int], int, int]:
    from alignx.generation import chat_prompt_ids, template_margins

    ids = chat_prompt_ids(tokenizer, prompt)
    pre, post = template_margins(tokenizer)
    return ids, pre, len(ids) - post


def integrated_gradients(policy, prompt: str, target: str, n_steps: int = 24, contrast=None,
                         mode: str = "", contrast_mode: str | None = None,
                         internal_batch_size: int | None = 8) -> Attribution:
    """Token attribution with ``LayerIntegratedGradients`` over the embeddings (see the module
    docstring); one score per prompt token (the summed attribution over the embedding width)."""
    from captum.attr import LayerIntegratedGradients

    if n_steps < 2:
        raise InvalidInput(f"n_steps must be >= 2, got {n_steps}")
    tok = policy.tokenizer
    tgt = _target_ids(tok, target)
    ids, start, end = _prompt_span(tok, prompt)
    if end <= start:
        raise InvalidInput("the prompt has no tokens of its own inside the chat template")
    seq = torch.tensor([ids + tgt.tolist()])
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    base = seq.clone()
    base[0, start:end] = int(pad)
    n_prompt = len(ids)
    lms = [PolicyLM(p) for p in ([policy] if contrast is None else [policy, contrast])]
    for lm, p in zip(lms, [policy, contrast]):
        lm.fixed_context = p.prepare([prompt])

    def logprob(lm: PolicyLM, e: torch.Tensor) -> torch.Tensor:
        logits = lm.policy.forward_logits(inputs_embeds=e, **lm.context(len(e)))
        lp = torch.log_softmax(logits[:, n_prompt - 1:-1].float(), -1)
        return lp.gather(-1, tgt.to(lp.device)[None, :, None].expand(len(e), -1, 1)).squeeze(-1).sum(-1)

    def f(input_ids: torch.Tensor) -> torch.Tensor:
        e = lms[0].embedding(input_ids)
        out = logprob(lms[0], e)
        if len(lms) == 2:
            out = out - logprob(lms[1], e)       # both modes read the same (interpolated) embeddings
        return out

    lig = LayerIntegratedGradients(f, lms[0].embedding)
    dev = policy.device
    with policy.lock, torch.enable_grad():
        attr, delta = lig.attribute(seq.to(dev), baselines=base.to(dev), n_steps=n_steps,
                                    internal_batch_size=internal_batch_size, return_convergence_delta=True)
        with torch.no_grad():
            fx, fb = float(f(seq.to(dev))[0]), float(f(base.to(dev))[0])
    scores = attr[0].sum(-1).float().cpu()
    feats = [tok.decode([t]) for t in ids[start:end]]
    return Attribution("integrated_gradients", feats, scores[start:end].tolist(), target, mode, contrast_mode,
                       target_logprob=fx, baseline_logprob=fb, convergence_delta=float(delta.abs().max()),
                       extra={"n_steps": n_steps, "template_tokens_score": float(scores[:start].abs().sum()
                                                                                   + scores[end:].abs().sum())})


METHODS = {"feature_ablation": feature_ablation, "integrated_gradients": integrated_gradients}
