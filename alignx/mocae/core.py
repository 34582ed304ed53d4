"""``MoCaE``: route a prompt, recalibrate a route, and build fused policies.

Routing and calibration are values: ``route(prompt, calibration)`` returns a ``RouteResult``
(the router's logits and the cluster prior included, cached per prompt), ``recalibrate(route,
calibration)`` is a pure function of the two (no model run, nothing stored), and a policy
receives its weights as arguments (``MoCaEPolicy.prepare`` -> ``forward_logits(weights=...)``).
The router card's default calibration is read-only (``MoCaE.calibration``).
"""
from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from alignx.errors import InvalidInput
from alignx.experts.latent import LatentSpace
from alignx.generation import hf_generate_kwargs, model_lock
from alignx.mocae.calibration import Calibration, expert_weights
from alignx.mocae.fusion import (FUSED, AdapterFusionStep, FusedAdapter, LogitFusionStep, expert_logprobs,
                                 mixture_generate, mixture_logits, mixture_token_logprobs)
from alignx.mocae.router import Clusters, Router
from alignx.mocae.stacked import StackedLoRA
from alignx.policy import Policy

MODES = ("mocae-logit", "mocae-adapter")


@dataclass
class RouteResult:
    prompt: str
    probabilities: dict[str, float]          # final expert weights w (after calibration)
    router_probabilities: dict[str, float]   # p = softmax(W_r z / T)
    calibration_term: dict[str, float]       # q = (cluster prior + preferences) / 2
    cluster: int                             # -1 = novel (no training cluster within eps)
    cluster_prior: dict[str, float]
    latent: list[float] = field(repr=False)  # the base-head latent (k values)
    settings: dict = field(default_factory=dict)
    elapsed_ms: float = field(default=0.0, compare=False)   # timing, not part of the value
    router_logits: list[float] = field(default_factory=list, repr=False)   # W_r z + b, per expert

    def to_dict(self, with_latent: bool = False) -> dict:
        d = asdict(self)
        if not with_latent:
            d.pop("latent")
        return d


def recalibrate(route: RouteResult, calibration: Calibration) -> RouteResult:
    """``route`` under another calibration: a pure function of the route's router logits and
    cluster prior (no model run, no state). Experts keep the route's order."""
    t0 = time.perf_counter()
    experts = list(route.probabilities)
    if len(route.router_logits) != len(experts):
        raise InvalidInput("this route carries no router logits (made by an older MoCaE): route the prompt again")
    prior = torch.tensor([route.cluster_prior[e] for e in experts])
    w, p, q = expert_weights(torch.tensor(route.router_logits), prior, calibration, experts)
    named = lambda t: {e: float(v) for e, v in zip(experts, t)}  # noqa: E731
    return replace(route, probabilities=named(w), router_probabilities=named(p), calibration_term=named(q),
                   settings=calibration.to_dict(), elapsed_ms=round((time.perf_counter() - t0) * 1000, 3))


@dataclass
class _Cached:
    logits: torch.Tensor      # router logits (n_experts,)
    latent: torch.Tensor      # base latent (k,)
    cluster: int


class MoCaE:
    def __init__(self, model, tokenizer, space: LatentSpace, router: Router, clusters: Clusters,
                 temperatures: dict[str, float], card: dict | None = None, calibration: Calibration | None = None):
        self.model, self.tokenizer, self.space = model, tokenizer, space
        self.router, self.clusters, self.card = router, clusters, card or {}
        self.experts = list(space.experts)
        self.temperatures = [float(temperatures.get(e, 1.0)) for e in self.experts]
        self._calibration = calibration or Calibration()
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._cache_lock = threading.Lock()      # the cache and the lazily built fused paths
        self._fused: FusedAdapter | None = None
        self._stacked: StackedLoRA | bool | None = None

    @property
    def calibration(self) -> Calibration:
        """The router card's default calibration (read-only: pass another one to ``route``/``policy``)."""
        return self._calibration

    # --- routing ----------------------------------------------------------------------------
    def _lookup(self, prompt: str) -> _Cached | None:
        with self._cache_lock:
            hit = self._cache.get(prompt)
            if hit is not None:
                self._cache.move_to_end(prompt)
            return hit

    def _encode(self, prompt: str) -> _Cached:
        hit = self._lookup(prompt)
        if hit is not None:
            return hit
        return self._store(prompt, self.space.encode(self.model, self.tokenizer, [prompt])[0])

    def _store(self, prompt: str, z: torch.Tensor) -> _Cached:
        latent = z[: self.space.k]
        hit = _Cached(self.router.logits(z), latent, self.clusters.assign(latent[None])[0])
        with self._cache_lock:
            self._cache[prompt] = hit
            while len(self._cache) > 512:
                self._cache.popitem(last=False)
        return hit

    def _weights(self, hit: _Cached, cal: Calibration) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(w, p, q, cluster prior) of a cached prompt under ``cal``."""
        prior = self.clusters.prior(hit.cluster, len(self.experts))
        return (*expert_weights(hit.logits, prior, cal, self.experts), prior)

    def _result(self, prompt: str, hit: _Cached, cal: Calibration, t0: float) -> RouteResult:
        w, p, q, prior = self._weights(hit, cal)
        named = lambda t: {e: float(v) for e, v in zip(self.experts, t)}  # noqa: E731
        return RouteResult(prompt, named(w), named(p), named(q), hit.cluster, named(prior), hit.latent.tolist(),
                           cal.to_dict(), round((time.perf_counter() - t0) * 1000, 3), hit.logits.tolist())

    def route(self, prompt: str, calibration: Calibration | None = None) -> RouteResult:
        """Run the latent encoders once (cached per prompt) and return the weights."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidInput("prompt is empty")
        t0 = time.perf_counter()
        return self._result(prompt, self._encode(prompt), calibration or self.calibration, t0)

    @staticmethod
    def recalibrate(route: RouteResult, calibration: Calibration) -> RouteResult:
        """``alignx.mocae.recalibrate``: the route under another calibration, no model run."""
        return recalibrate(route, calibration)

    def weights(self, prompt: str, calibration: Calibration | None = None) -> torch.Tensor:
        r = self.route(prompt, calibration)
        return torch.tensor([r.probabilities[e] for e in self.experts])

    def weights_many(self, prompts: list[str], calibration: Calibration | None = None) -> torch.Tensor:
        """(len(prompts), n_experts) weights; the prompts not cached are encoded in batches."""
        for p in prompts:
            if not isinstance(p, str) or not p.strip():
                raise InvalidInput("prompt is empty")
        todo = [p for p in dict.fromkeys(prompts) if self._lookup(p) is None]
        if todo:
            for p, z in zip(todo, self.space.encode(self.model, self.tokenizer, todo)):
                self._store(p, z)
        cal = calibration or self.calibration
        # _encode: a cache hit, or a re-encode if more than 512 prompts evicted this one already
        return torch.stack([self._weights(self._encode(p), cal)[0] for p in prompts]).float()

    def route_many(self, prompts: list[str], calibration: Calibration | None = None, batch_size: int = 16,
                   on_batch=None) -> list[RouteResult]:
        """``route`` for many prompts: the latent encoders run in batches of ``batch_size`` (one
        batched forward per batch, not one per prompt) and the per-prompt cache is left alone, so a
        file of thousands of prompts neither evicts the app's routes nor grows memory. Equal to
        ``[route(p, calibration) for p in prompts]`` up to batched-forward rounding (tested).
        ``on_batch(n_done)`` is called after each batch (progress bars)."""
        if batch_size < 1:
            raise InvalidInput(f"batch_size must be >= 1, got {batch_size}")
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p.strip():
                raise InvalidInput(f"prompt {i + 1} is empty")
        cal, out = calibration or self.calibration, []
        for s in range(0, len(prompts), batch_size):
            t0 = time.perf_counter()
            chunk = prompts[s:s + batch_size]
            hits = self._hits(self.space.encode(self.model, self.tokenizer, chunk))
            out.extend(self._result(p, hit, cal, t0) for p, hit in zip(chunk, hits))
            if on_batch is not None:
                on_batch(len(out))
        return out

    def _hits(self, z: torch.Tensor) -> list[_Cached]:
        """Router logits, base latent and cluster of each row of router inputs ``z`` (n, D)."""
        k = self.space.k
        return [_Cached(self.router.logits(zi), zi[:k], c) for zi, c in zip(z, self.clusters.assign(z[:, :k]))]

    def weights_from_latents(self, z: torch.Tensor, calibration: Calibration | None = None) -> torch.Tensor:
        """(n, n_experts) final weights of router inputs ``z`` (n, D) already encoded (e.g. cached
        features): the arithmetic of ``route``, without the encoders."""
        cal = calibration or self.calibration
        return torch.stack([self._weights(hit, cal)[0] for hit in self._hits(z)]).float()

    def weights_from_features(self, feats: torch.Tensor, cluster: int, cal: Calibration) -> torch.Tensor:
        """Per-token re-routing: (1 + n, d) mean hidden states in LatentSpace order -> weights."""
        z = self.space.project(feats[:, None, :]).reshape(-1)
        w, _, _ = expert_weights(self.router.logits(z), self.clusters.prior(cluster, len(self.experts)), cal,
                                 self.experts)
        return w

    # --- policies ---------------------------------------------------------------------------
    @property
    def fused(self) -> FusedAdapter:
        with self._cache_lock:
            if self._fused is None:
                self._fused = FusedAdapter(self.model, self.experts)
            return self._fused

    @property
    def stacked(self) -> StackedLoRA | None:
        """The experts' LoRA as one batched matmul per layer (None, so peft's mixed batches, if not stackable)."""
        with self._cache_lock:
            if self._stacked is None:
                try:
                    self._stacked = StackedLoRA(self.model, self.experts)
                except ValueError:
                    self._stacked = False
            return self._stacked or None

    def policy(self, mode: str, calibration: Calibration | None = None,
               fixed_weights: list[float] | None = None, name: str | None = None) -> "MoCaEPolicy":
        if mode not in MODES:
            raise InvalidInput(f"unknown MoCaE mode {mode!r}; available: {', '.join(MODES)}")
        return MoCaEPolicy(self, mode, calibration or self.calibration, fixed_weights, name)

    # --- persistence ------------------------------------------------------------------------
    @classmethod
    def load(cls, model, tokenizer, experts_dir: str | Path, router_dir: str | Path | None = None) -> "MoCaE":
        """The experts' latent space from ``experts_dir``; the router from ``router_dir``
        (default ``experts_dir/router``: another folder lets a candidate router be evaluated)."""
        from safetensors.torch import load_file

        root = Path(experts_dir)
        folder = Path(router_dir) if router_dir is not None else root / "router"
        card = json.loads((folder / "card.json").read_text())
        space = LatentSpace.load(root)
        if space.experts != card["experts"]:
            raise InvalidInput(f"router in {folder} was trained for experts {card['experts']}, "
                             f"the latent space has {space.experts}: retrain the router")
        t = load_file(folder / "router.safetensors")
        clusters = Clusters(t["cluster_centers"], t["cluster_center_labels"], t["cluster_priors"], card["eps"])
        defaults = Calibration(**card.get("calibration", {}))
        return cls(model, tokenizer, space, Router(t["weight"], t["bias"]), clusters, card["temperatures"], card,
                   defaults)

    def save(self, experts_dir: str | Path, card: dict, router_dir: str | Path | None = None) -> None:
        """``router/router.safetensors`` (W_r, b, clusters) then ``router/card.json``, each atomically
        (in ``router_dir`` instead of ``experts_dir/router`` when given)."""
        from alignx import atomic

        folder = Path(router_dir) if router_dir is not None else Path(experts_dir) / "router"
        atomic.save_safetensors(folder / "router.safetensors", {
            "weight": self.router.weight.contiguous(), "bias": self.router.bias.contiguous(),
            "cluster_centers": self.clusters.centers.contiguous(),
            "cluster_center_labels": self.clusters.center_labels.contiguous(),
            "cluster_priors": self.clusters.priors.contiguous()})
        atomic.write_json(folder / "card.json", dict(card, experts=self.experts, eps=self.clusters.eps,
                                                     temperatures=dict(zip(self.experts, self.temperatures)),
                                                     calibration=self.calibration.to_dict()))


class MoCaEPolicy(Policy):
    """A fused policy: weights per prompt from ``route`` (or fixed), logit or adapter fusion.

    Holds no per-call state: weights reach ``forward_logits`` / ``token_logprobs`` as arguments
    (``prepare(prompts)`` computes them), so concurrent calls on one policy do not clash."""

    def __init__(self, mocae: MoCaE, mode: str, calibration: Calibration, fixed_weights: list[float] | None = None,
                 name: str | None = None):
        super().__init__(mocae.model, mocae.tokenizer)
        self.mocae, self.mode, self.calibration = mocae, mode, calibration
        if fixed_weights is not None:
            w = torch.tensor(fixed_weights, dtype=torch.float32)
            if w.shape != (len(mocae.experts),) or (w < 0).any() or abs(float(w.sum()) - 1) > 1e-4:
                raise InvalidInput(f"fixed_weights must be {len(mocae.experts)} non-negative numbers summing to 1")
            self.fixed = w
        else:
            self.fixed = None
        self.name = name or (f"{mode}[fixed]" if self.fixed is not None else mode)

    def weights_for(self, prompt: str) -> torch.Tensor:
        return self.fixed if self.fixed is not None else self.mocae.weights(prompt, self.calibration)

    def weights_many(self, prompts: list[str]) -> torch.Tensor:
        """(len(prompts), n_experts) weights of these prompts (fixed, or routed in batches)."""
        if self.fixed is not None:
            return self.fixed.expand(len(prompts), -1)
        return self.mocae.weights_many(list(prompts), self.calibration)

    def prepare(self, prompts):
        return {"weights": self.weights_many(list(prompts))}

    def make_step(self, prompt: str):
        w = self.weights_for(prompt)
        if self.mode == "mocae-adapter":
            return AdapterFusionStep(self.mocae.fused, w)
        reroute = None
        if self.calibration.per_token and self.fixed is None:
            cluster = self.mocae.route(prompt, self.calibration).cluster
            reroute = lambda h: self.mocae.weights_from_features(h, cluster, self.calibration)  # noqa: E731
        return LogitFusionStep(self.model, self.mocae.experts, self.mocae.temperatures, w, reroute, self.mocae.stacked)

    def _weights(self, weights: torch.Tensor | None, rows: int) -> torch.Tensor:
        if weights is None:
            if self.fixed is None:
                raise InvalidInput(f"{self.name}: forward_logits needs each row's routing weights: pass "
                                   f"**policy.prepare(prompts) (or weights=(B, {len(self.mocae.experts)}))")
            weights = self.fixed
        weights = torch.as_tensor(weights, dtype=torch.float32)
        return weights.expand(rows, -1) if weights.dim() == 1 else weights

    def forward_logits(self, input_ids=None, attention_mask=None, inputs_embeds=None, *, logits_to_keep: int = 0,
                       weights: torch.Tensor | None = None, **context):
        """Logit fusion: log p_mix (B, L, V); adapter fusion: the logits through the fused adapter,
        row b under weights[b] (``FusedAdapter.per_row``)."""
        rows = len(input_ids if input_ids is not None else inputs_embeds)
        w = self._weights(weights, rows)
        if self.mode == "mocae-logit":
            lp = expert_logprobs(self.model, self.mocae.experts, self.mocae.temperatures, input_ids, attention_mask,
                                 inputs_embeds, logits_to_keep, self.mocae.stacked)
            return mixture_logits(lp, w)
        with model_lock(self.model), self.mocae.fused.per_row(w):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                              logits_to_keep=logits_to_keep, adapter_names=[FUSED] * rows).logits

    def token_logprobs(self, input_ids, attention_mask, first: int = 0, weights=None, **context):
        if self.mode == "mocae-logit":        # the same value as gathering forward_logits, n x less memory
            return mixture_token_logprobs(self.model, self.mocae.experts, self.mocae.temperatures,
                                          self._weights(weights, len(input_ids)), input_ids, attention_mask, first,
                                          self.mocae.stacked)
        return super().token_logprobs(input_ids, attention_mask, first, weights=weights)

    @torch.inference_mode()
    def generate(self, prompts, sampling=None, batch_size=8, on_done=None):
        """Batches of prompts, each under its own weights (``mixture_generate`` / ``FusedAdapter.per_row``);
        per-token re-routing streams one prompt at a time."""
        if self.calibration.per_token and self.fixed is None and self.mode == "mocae-logit":
            return super().generate(prompts, sampling, batch_size, on_done)

        def rows(chunk, ids, mask, sampling, pad):
            w = self.weights_many(chunk)
            if self.mode == "mocae-logit":
                return mixture_generate(self.model, self.mocae.experts, self.mocae.temperatures, w, ids, mask,
                                        sampling, self.eos, pad, self.mocae.stacked)
            return self._adapter_generate(w, ids, mask, sampling, pad)

        return self._batched(prompts, sampling, batch_size, on_done, rows)

    def _adapter_generate(self, w, ids, mask, sampling, pad) -> list[list[int]]:
        kw = hf_generate_kwargs(sampling, pad, self.eos)
        with self.mocae.fused.per_row(w):
            gen = self.model.generate(input_ids=ids, attention_mask=mask, adapter_names=[FUSED] * len(ids), **kw)
        rows = []
        for row in gen[:, ids.shape[1]:].tolist():
            cut = next((i for i, t in enumerate(row) if t in self.eos), len(row))
            rows.append(row[:cut])
        return rows
