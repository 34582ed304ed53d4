"""``MoCaE``: route a prompt, recalibrate from cached router outputs, and build fused policies."""
from __future__ import annotations

import json
import time
from collections import OrderedDict, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from alignx.experts.latent import LatentSpace
from alignx.mocae.calibration import Calibration, expert_weights
from alignx.generation import hf_generate_kwargs
from alignx.mocae.fusion import (FUSED, AdapterFusionStep, FusedAdapter, LogitFusionStep, mixture_generate,
                                 mixture_token_logprobs)
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
    elapsed_ms: float = 0.0

    def to_dict(self, with_latent: bool = False) -> dict:
        d = asdict(self)
        if not with_latent:
            d.pop("latent")
        return d


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
        self.calibration = calibration or Calibration()
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._last: str | None = None
        self._fused: FusedAdapter | None = None
        self._stacked: StackedLoRA | bool | None = None

    # --- routing ----------------------------------------------------------------------------
    def _encode(self, prompt: str) -> _Cached:
        if prompt in self._cache:
            self._cache.move_to_end(prompt)
            return self._cache[prompt]
        return self._store(prompt, self.space.encode(self.model, self.tokenizer, [prompt])[0])

    def _store(self, prompt: str, z: torch.Tensor) -> _Cached:
        latent = z[: self.space.k]
        hit = _Cached(self.router.logits(z), latent, self.clusters.assign(latent[None])[0])
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
                           cal.to_dict(), round((time.perf_counter() - t0) * 1000, 3))

    def route(self, prompt: str, calibration: Calibration | None = None) -> RouteResult:
        """Run the latent encoders once (cached per prompt) and return the weights."""
        if not prompt or not prompt.strip():
            raise ValueError("prompt is empty")
        t0 = time.perf_counter()
        cal = calibration or self.calibration
        self._last = prompt
        return self._result(prompt, self._encode(prompt), cal, t0)

    def recalibrate(self, lambda1: float | None = None, lambda2: float | None = None,
                    temperature: float | None = None, preferences: dict[str, float] | None = None,
                    prompt: str | None = None) -> RouteResult:
        """New settings for the last routed prompt (or ``prompt`` if cached): no model run."""
        t0 = time.perf_counter()
        cal = self.calibration.with_(lambda1=lambda1, lambda2=lambda2, temperature=temperature,
                                     preferences=preferences)
        target = prompt or self._last
        if target is None or target not in self._cache:
            raise ValueError("no routed prompt to recalibrate: call route(prompt) first")
        self.calibration = cal
        return self._result(target, self._cache[target], cal, t0)

    def weights(self, prompt: str, calibration: Calibration | None = None) -> torch.Tensor:
        r = self.route(prompt, calibration)
        return torch.tensor([r.probabilities[e] for e in self.experts])

    def weights_many(self, prompts: list[str], calibration: Calibration | None = None) -> torch.Tensor:
        """(len(prompts), n_experts) weights; the prompts not cached are encoded in batches."""
        for p in prompts:
            if not p or not p.strip():
                raise ValueError("prompt is empty")
        todo = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        if todo:
            for p, z in zip(todo, self.space.encode(self.model, self.tokenizer, todo)):
                self._store(p, z)
        cal = calibration or self.calibration
        # _encode: a cache hit, or a re-encode if more than 512 prompts evicted this one already
        return torch.stack([self._weights(self._encode(p), cal)[0] for p in prompts]).float()

    def weights_from_features(self, feats: torch.Tensor, cluster: int, cal: Calibration) -> torch.Tensor:
        """Per-token re-routing: (1 + n, d) mean hidden states in LatentSpace order -> weights."""
        z = self.space.project(feats[:, None, :]).reshape(-1)
        w, _, _ = expert_weights(self.router.logits(z), self.clusters.prior(cluster, len(self.experts)), cal,
                                 self.experts)
        return w

    # --- policies ---------------------------------------------------------------------------
    @property
    def fused(self) -> FusedAdapter:
        if self._fused is None:
            self._fused = FusedAdapter(self.model, self.experts)
        return self._fused

    @property
    def stacked(self) -> StackedLoRA | None:
        """The experts' LoRA as one batched matmul per layer (None, so peft's mixed batches, if not stackable)."""
        if self._stacked is None:
            try:
                self._stacked = StackedLoRA(self.model, self.experts)
            except ValueError:
                self._stacked = False
        return self._stacked or None

    def policy(self, mode: str, calibration: Calibration | None = None,
               fixed_weights: list[float] | None = None) -> "MoCaEPolicy":
        if mode not in MODES:
            raise ValueError(f"unknown MoCaE mode {mode!r}; choose from {list(MODES)}")
        return MoCaEPolicy(self, mode, calibration or self.calibration, fixed_weights)

    # --- persistence ------------------------------------------------------------------------
    @classmethod
    def load(cls, model, tokenizer, experts_dir: str | Path) -> "MoCaE":
        from safetensors.torch import load_file

        root = Path(experts_dir)
        card = json.loads((root / "router" / "card.json").read_text())
        space = LatentSpace.load(root)
        if space.experts != card["experts"]:
            raise ValueError(f"router in {root / 'router'} was trained for experts {card['experts']}, "
                             f"the latent space has {space.experts}: retrain the router")
        t = load_file(root / "router" / "router.safetensors")
        clusters = Clusters(t["cluster_centers"], t["cluster_center_labels"], t["cluster_priors"], card["eps"])
        defaults = Calibration(**card.get("calibration", {}))
        return cls(model, tokenizer, space, Router(t["weight"], t["bias"]), clusters, card["temperatures"], card,
                   defaults)

    def save(self, experts_dir: str | Path, card: dict) -> None:
        from safetensors.torch import save_file

        from alignx.experts.io import write_json_atomic

        folder = Path(experts_dir) / "router"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / ".router.safetensors.tmp"
        save_file({"weight": self.router.weight.contiguous(), "bias": self.router.bias.contiguous(),
                   "cluster_centers": self.clusters.centers.contiguous(),
                   "cluster_center_labels": self.clusters.center_labels.contiguous(),
                   "cluster_priors": self.clusters.priors.contiguous()}, tmp)
        tmp.replace(folder / "router.safetensors")
        write_json_atomic(folder / "card.json", dict(card, experts=self.experts, eps=self.clusters.eps,
                                                     temperatures=dict(zip(self.experts, self.temperatures)),
                                                     calibration=self.calibration.to_dict()))


class MoCaEPolicy(Policy):
    """A fused policy: weights per prompt from ``route`` (or fixed), logit or adapter fusion."""

    def __init__(self, mocae: MoCaE, mode: str, calibration: Calibration, fixed_weights: list[float] | None = None):
        super().__init__(mocae.model, mocae.tokenizer)
        self.mocae, self.mode, self.calibration, self.name = mocae, mode, calibration, mode
        if fixed_weights is not None:
            w = torch.tensor(fixed_weights, dtype=torch.float32)
            if w.shape != (len(mocae.experts),) or (w < 0).any() or abs(float(w.sum()) - 1) > 1e-4:
                raise ValueError(f"fixed_weights must be {len(mocae.experts)} non-negative numbers summing to 1")
            self.fixed = w
            self.name = f"{mode}[fixed]"
        else:
            self.fixed = None
        self._w: torch.Tensor | None = None

    def weights_for(self, prompt: str) -> torch.Tensor:
        return self.fixed if self.fixed is not None else self.mocae.weights(prompt, self.calibration)

    def make_step(self, prompt: str):
        w = self.weights_for(prompt)
        if self.mode == "mocae-adapter":
            return AdapterFusionStep(self.mocae.fused, w)
        reroute = None
        if self.calibration.per_token and self.fixed is None:
            cluster = self.mocae.route(prompt, self.calibration).cluster
            reroute = lambda h: self.mocae.weights_from_features(h, cluster, self.calibration)  # noqa: E731
        return LogitFusionStep(self.model, self.mocae.experts, self.mocae.temperatures, w, reroute, self.mocae.stacked)

    @torch.inference_mode()
    def generate(self, prompts, sampling=None, batch_size=8, on_done=None):
        """Batches of prompts, each under its own weights (``mixture_generate`` / ``FusedAdapter.per_row``);
        per-token re-routing streams one prompt at a time."""
        if self.calibration.per_token and self.fixed is None and self.mode == "mocae-logit":
            return super().generate(prompts, sampling, batch_size, on_done)

        def rows(chunk, ids, mask, sampling, pad):
            w = (self.fixed.expand(len(chunk), -1) if self.fixed is not None
                 else self.mocae.weights_many(chunk, self.calibration))
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

    def logprob(self, prompts, continuations, batch_size: int = 8) -> list[float]:
        """Per prompt, the mixture log-prob under that prompt's weights."""
        groups: dict[str, list[int]] = defaultdict(list)
        for i, p in enumerate(prompts):
            groups[p].append(i)
        out = [0.0] * len(prompts)
        for prompt, idx in groups.items():
            self._w = self.weights_for(prompt)
            scores = super().logprob([prompt] * len(idx), [continuations[i] for i in idx], batch_size)
            for i, s in zip(idx, scores):
                out[i] = s
        return out

    def token_logprobs(self, input_ids, attention_mask, first: int = 0):
        if self.mode == "mocae-logit":
            return mixture_token_logprobs(self.model, self.mocae.experts, self.mocae.temperatures, self._w,
                                          input_ids, attention_mask, first, self.mocae.stacked)
        self.mocae.fused.set_weights(self._w.tolist())          # Policy.logprob holds the model lock
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=input_ids.shape[1] - first,
                            adapter_names=[FUSED] * len(input_ids)).logits[:, :-1].float()
        return torch.log_softmax(logits, -1).gather(-1, input_ids[:, first + 1:, None]).squeeze(-1)
