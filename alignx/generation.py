"""Token-by-token generation shared by every mode.

A *step function* owns a KV cache and maps the newest token ids to next-token log-probs
(and optionally the routing weights it used). ``decode`` turns any step function into a
stream of ``TokenEvent``s with sampling, EOS handling, incremental detokenization and a
stop signal checked before every forward pass, so Stop really halts the work.

``ModelStep`` is the step function of one model over a batch of rows that all read the same
tokens, one row per peft adapter (``"__base__"`` = adapters off): a single expert is one row,
MoCaE logit fusion is one row per expert in one batched forward.
"""
from __future__ import annotations

from alignx.errors import InvalidInput

import threading
import weakref
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch

BASE = "__base__"  # peft's name for "no adapter" inside a mixed-adapter batch
_LOCKS: "weakref.WeakKeyDictionary[torch.nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: torch.nn.Module) -> threading.RLock:
    """The one lock of a model, held around each forward pass by every caller (policies, latent
    features, judges, the app), never across a generator's yields (gradio resumes generators on
    other threads). Code that changes adapter state (scalings, active adapters) holds it from the
    change until the state is restored. A peft wrapper shares the lock of the model it wraps, so
    wrapping a model in a ``PeftModel`` later (loading a first expert) keeps its lock."""
    inner = getattr(model, "get_base_model", None)
    if callable(inner):
        model = inner()
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


@dataclass(frozen=True)
class Sampling:
    """Decoding parameters, validated. ``temperature == 0`` means greedy."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = 0

    MAX_TOKENS = 2048

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int):
            raise InvalidInput(f"max_new_tokens must be an integer, got {self.max_new_tokens!r}")
        if not 1 <= self.max_new_tokens <= self.MAX_TOKENS:
            raise InvalidInput(f"max_new_tokens must be in [1, {self.MAX_TOKENS}], got {self.max_new_tokens}")
        if not 0.0 <= float(self.temperature) <= 5.0:
            raise InvalidInput(f"temperature must be in [0, 5] (0 = greedy), got {self.temperature}")
        if not 0.0 < float(self.top_p) <= 1.0:
            raise InvalidInput(f"top_p must be in (0, 1], got {self.top_p}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not -2 ** 63 <= self.seed < 2 ** 64):
            raise InvalidInput(f"seed must be an integer in [-2**63, 2**64), got {self.seed!r}")


@dataclass
class TokenEvent:
    token_id: int
    text: str                                   # the new text this token completes (may be "")
    weights: dict[str, float] | None = None     # routing weights used for this token, if any
    finished: bool = False


StepFn = Callable[[Sequence[int]], "tuple[torch.Tensor, dict[str, float] | None]"]


def check_text(text, what: str = "prompt") -> str:
    """``text`` when it is a string the tokenizer can read, else ``InvalidInput``: a lone UTF-16
    surrogate (what a non-UTF-8 byte in a command-line argument, or a JSON ``"\\ud800"``,
    becomes in Python) cannot be encoded and would fail deep inside the tokenizer."""
    if not isinstance(text, str):
        raise InvalidInput(f"the {what} must be a string, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"the {what} is not valid Unicode text (a lone surrogate "
                           f"{text[exc.start]!r} at character {exc.start})") from None
    return text


def has_visible_text(text: str) -> bool:
    """Whether ``text`` holds anything besides whitespace and control characters (Unicode Cc)."""
    import unicodedata

    return any(not ch.isspace() and unicodedata.category(ch) != "Cc" for ch in text)


def chat_prompt_ids(tokenizer, prompt: str, system: str | None = None) -> list[int]:
    """The model's chat template with a generation prompt; plain text if it has none."""
    check_text(prompt)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return list(ids)
    return tokenizer(prompt, add_special_tokens=True)["input_ids"]


def context_length(model) -> int | None:
    """The most tokens the model reads at once (``config.max_position_embeddings``), or None."""
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return n if isinstance(n, int) and n > 0 else None


def check_prompt_length(ids: Sequence[int], model) -> None:
    """``InvalidInput`` when a templated prompt is longer than the model's context: decoding it
    would take minutes and memory for an answer the model cannot condition on."""
    n = context_length(model)
    if n is not None and len(ids) > n:
        raise InvalidInput(f"the prompt is {len(ids)} tokens long; the model reads at most {n}: shorten it")


def template_margins(tokenizer) -> tuple[int, int]:
    """(tokens before, tokens after) the user's text in ``chat_prompt_ids``: the template's own
    tokens, found by templating two one-letter prompts and comparing from either end."""
    x, y = chat_prompt_ids(tokenizer, "a"), chat_prompt_ids(tokenizer, "b")
    pre = next(i for i, (u, v) in enumerate(zip(x, y)) if u != v)
    return pre, next(i for i, (u, v) in enumerate(zip(x[::-1], y[::-1])) if u != v)


def eos_ids(tokenizer, model=None) -> set[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif gen_eos:
        ids.update(gen_eos)
    return ids


def sample_token(logprobs: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    """Greedy, or temperature + nucleus sampling, from a (V,) log-prob vector."""
    if sampling.temperature == 0:
        return int(torch.argmax(logprobs))
    probs = torch.softmax(logprobs.float() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_p, idx = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, -1) - sorted_p < sampling.top_p
        keep[0] = True
        probs = torch.zeros_like(probs).scatter(0, idx[keep], sorted_p[keep])
    return int(torch.multinomial(probs / probs.sum(), 1, generator=generator))


_CACHE_ARG: dict[type, str] = {}


def with_cache(model: torch.nn.Module, cache) -> dict:
    """The KV-cache keyword of ``model``'s forward: ``cache`` (transformers >= 5.24; ``past_key_values``
    is deprecated there and goes in 5.40) or ``past_key_values`` (older releases)."""
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    name = _CACHE_ARG.get(type(inner))
    if name is None:
        params = inspect.signature(type(inner).forward).parameters
        name = _CACHE_ARG[type(inner)] = "cache" if "cache" in params else "past_key_values"
    return {name: cache}


def cache_of(out):
    """The KV cache a forward returned, under either name."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def hf_generate_kwargs(sampling: Sampling, pad: int, eos: set[int]) -> dict:
    """``model.generate`` arguments for ``sampling`` (greedy at temperature 0); seeds torch's global
    generator when sampling with a seed (call it under the model lock, right before generate)."""
    kw = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=pad, eos_token_id=sorted(eos) or None)
    if sampling.temperature == 0:
        return dict(kw, do_sample=False)
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    return dict(kw, do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)


def left_pad(rows: Sequence[Sequence[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (B, L) ids and attention mask, so every row's next token sits in the last column."""
    width = max(map(len, rows))
    ids = torch.tensor([[pad] * (width - len(r)) + list(r) for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return ids, mask


class TextDelta:
    """Incremental detokenization: decode the whole answer, emit what is new and complete."""

    def __init__(self, tokenizer):
        self.tok, self.ids, self.emitted = tokenizer, [], ""

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.tok.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an unfinished multi-byte character: wait for the next token
            return ""
        new, self.emitted = text[len(self.emitted):], text
        return new


def decode(step: StepFn, prompt_ids: Sequence[int], tokenizer, sampling: Sampling,
           stop: threading.Event | None = None, eos: set[int] | None = None) -> Iterator[TokenEvent]:
    """Stream tokens from ``step`` until EOS, ``max_new_tokens``, or ``stop`` is set."""
    eos = eos if eos is not None else eos_ids(tokenizer)
    gen = torch.Generator().manual_seed(sampling.seed) if sampling.seed is not None else None
    detok = TextDelta(tokenizer)
    feed: Sequence[int] = list(prompt_ids)
    for _ in range(sampling.max_new_tokens):
        if stop is not None and stop.is_set():
            return
        logprobs, weights = step(feed)
        token = sample_token(logprobs, sampling, gen)
        if token in eos:
            yield TokenEvent(token, "", weights, finished=True)
            return
        yield TokenEvent(token, detok.push(token), weights)
        feed = [token]


@dataclass
class ModelStep:
    """KV-cached forward of ``model`` over one row per adapter name, all fed the same tokens.

    Returns (n_rows, V) log-probs; with a single row, a (V,) vector. ``adapter_names`` is None
    for a plain transformers model (no peft)."""

    model: torch.nn.Module
    adapter_names: list[str] | None = None
    temperatures: list[float] | None = None     # per-row calibration temperature (logits / T)
    past: object = field(default=None, init=False)

    @property
    def rows(self) -> int:
        return len(self.adapter_names) if self.adapter_names else 1

    @torch.inference_mode()
    def logprobs(self, ids: Sequence[int]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        x = torch.tensor([list(ids)] * self.rows, device=device)
        kwargs = {"adapter_names": self.adapter_names} if self.adapter_names else {}
        with model_lock(self.model):
            out = self.model(input_ids=x, use_cache=True, **with_cache(self.model, self.past), **kwargs)
        self.past = cache_of(out)
        logits = out.logits[:, -1, :].float()
        if self.temperatures is not None:
            logits = logits / torch.tensor(self.temperatures, device=logits.device)[:, None]
        return torch.log_softmax(logits, dim=-1)

    def __call__(self, ids: Sequence[int]):
        lp = self.logprobs(ids)
        return (lp[0] if self.rows == 1 else lp), None
