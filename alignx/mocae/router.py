"""The MoCaE router W_r (n_experts x D) over the latent features, and eps-clusters of prompts.

Router: logits = W_r z + b, z = [z_base; z_expert_1; ...] in R^{(1 + n) k}; probabilities
softmax(logits / T). Trained with cross-entropy on the axis of mixed training prompts (AdamW).

Clusters (granularity eps = 0.05): DBSCAN on the base-head latents of the training prompts
with cosine distance 1 - cos(z_a, z_b), radius eps, min_samples core points. A new prompt
joins the cluster of its nearest core point if that point is within eps, else it is novel
(cluster -1). Each cluster carries a prior pi_c over experts: its prompts' axis counts + 1
(Laplace), normalized; novel prompts get the uniform prior.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from alignx import probes

EPS = 0.05
MIN_SAMPLES = 3


@dataclass
class Router:
    weight: torch.Tensor          # (n_experts, D)
    bias: torch.Tensor            # (n_experts,)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.weight.T + self.bias

    @classmethod
    def fit(cls, z: torch.Tensor, y: torch.Tensor, n_experts: int, steps: int = 300, lr: float = 1e-2,
            weight_decay: float = 0.01, seed: int = 0, balanced: bool = False) -> tuple["Router", float]:
        """Full-batch AdamW on cross-entropy; ``balanced`` weights each axis by n / (n_experts * n_axis),
        so an axis with fewer prompts (honest) is not out-voted.

        W ~ 0.01 N(0, 1) from a generator seeded with ``seed``, b = 0;
        L = CE(z W^T + b, y; balance), ``probes.fit_linear``."""
        g = torch.Generator().manual_seed(seed)
        counts = torch.bincount(y, minlength=n_experts).float()
        balance = len(y) / (n_experts * counts.clamp(min=1)) if balanced else None
        fit = probes.fit_linear(z, y, n_experts, init=lambda shape: torch.randn(*shape, generator=g) * 0.01,
                                class_weight=balance, optimizer="adamw", steps=steps, lr=lr,
                                weight_decay=weight_decay)
        return cls(fit.weight, fit.bias), fit.loss

    @classmethod
    def fit_cv(cls, z: torch.Tensor, y: torch.Tensor, n_experts: int, weight_decays=(0.01, 0.1, 1.0),
               folds: int = 5, seed: int = 0, **kw) -> tuple["Router", float, dict]:
        """``fit`` with the AdamW weight decay chosen by ``folds``-fold cross-validated accuracy on
        the training prompts only (pooled over folds; ties -> the larger decay); returns (router
        refit on all of them, its loss, CV accuracies)."""
        def correct(wd, train, test) -> int:
            r, _ = cls.fit(z[train], y[train], n_experts, weight_decay=wd, seed=seed, **kw)
            return int((r.logits(z[test]).argmax(-1) == y[test]).sum())

        scores = probes.cross_validate(weight_decays, probes.kfold(len(y), folds, seed), correct,
                                       lambda counts: sum(counts) / len(y))
        best = probes.best(scores, tiebreak=lambda wd: wd)
        router, loss = cls.fit(z, y, n_experts, weight_decay=best, seed=seed, **kw)
        return router, loss, {"weight_decay": best, "cv_accuracy": scores}


def dbscan_cosine(z: torch.Tensor, eps: float = EPS, min_samples: int = MIN_SAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels (n,) with -1 for noise, and the core mask, for unit vectors ``z`` under cosine distance."""
    z = F.normalize(z.float(), dim=-1)
    near = (1 - z @ z.T) <= eps
    core = near.sum(1) >= min_samples
    labels = torch.full((len(z),), -1, dtype=torch.long)
    cluster = 0
    for i in range(len(z)):
        if not core[i] or labels[i] >= 0:
            continue
        labels[i] = cluster
        frontier = [i]
        while frontier:
            j = frontier.pop()
            for n in torch.nonzero(near[j]).flatten().tolist():
                if labels[n] < 0:
                    labels[n] = cluster
                    if core[n]:
                        frontier.append(n)
        cluster += 1
    return labels, core


@dataclass
class Clusters:
    centers: torch.Tensor         # (m, k) unit latents of the core training points
    center_labels: torch.Tensor   # (m,) cluster id of each core point
    priors: torch.Tensor          # (n_clusters, n_experts)
    eps: float = EPS

    @classmethod
    def fit(cls, z: torch.Tensor, axis_index: torch.Tensor, n_experts: int, eps: float = EPS,
            min_samples: int = MIN_SAMPLES) -> "Clusters":
        labels, core = dbscan_cosine(z, eps, min_samples)
        n_clusters = int(labels.max()) + 1 if (labels >= 0).any() else 0
        priors = torch.ones(n_clusters, n_experts)
        for c, a in zip(labels.tolist(), axis_index.tolist()):
            if c >= 0:
                priors[c, a] += 1
        priors = priors / priors.sum(1, keepdim=True) if n_clusters else priors
        return cls(F.normalize(z[core].float(), dim=-1), labels[core], priors, eps)

    @property
    def n_clusters(self) -> int:
        return int(self.priors.shape[0])

    def assign(self, z: torch.Tensor) -> list[int]:
        """Cluster of each unit latent in ``z`` (n, k); -1 = novel."""
        if len(self.centers) == 0:
            return [-1] * len(z)
        dist = 1 - F.normalize(z.float(), dim=-1) @ self.centers.T
        best, idx = dist.min(1)
        return [int(self.center_labels[i]) if d <= self.eps else -1 for d, i in zip(best.tolist(), idx.tolist())]

    def prior(self, cluster: int, n_experts: int) -> torch.Tensor:
        return self.priors[cluster] if cluster >= 0 else torch.full((n_experts,), 1.0 / n_experts)


@dataclass
class MLPRouter:
    """A small MLP router over the same latent features: logits = W_2 relu(W_1 z + b_1) + b_2.

    Same contract as ``Router`` (``logits(z)``); fitted full-batch with AdamW on cross-entropy
    (W_1 ~ N(0, 1/D), W_2 ~ N(0, 1/H) from a generator seeded with ``seed``, biases 0)."""

    w1: torch.Tensor              # (hidden, D)
    b1: torch.Tensor              # (hidden,)
    w2: torch.Tensor              # (n_experts, hidden)
    b2: torch.Tensor              # (n_experts,)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return F.relu(z @ self.w1.T + self.b1) @ self.w2.T + self.b2

    @classmethod
    def fit(cls, z: torch.Tensor, y: torch.Tensor, n_experts: int, hidden: int = 64, steps: int = 300,
            lr: float = 1e-2, weight_decay: float = 0.01, seed: int = 0) -> tuple["MLPRouter", float]:
        g = torch.Generator().manual_seed(seed)
        d = z.shape[1]
        params = [t.requires_grad_() for t in (torch.randn(hidden, d, generator=g) / d ** 0.5, torch.zeros(hidden),
                                                torch.randn(n_experts, hidden, generator=g) / hidden ** 0.5,
                                                torch.zeros(n_experts))]
        z = z.float()
        with torch.enable_grad():
            loss = probes.minimize(params, lambda: F.cross_entropy(cls(*params).logits(z), y), optimizer="adamw",
                                   steps=steps, lr=lr, weight_decay=weight_decay)
        return cls(*(p.detach().clone() for p in params)), loss

    @classmethod
    def fit_cv(cls, z: torch.Tensor, y: torch.Tensor, n_experts: int, hiddens=(32, 128),
               weight_decays=(0.01, 1.0), folds: int = 5, seed: int = 0, **kw) -> tuple["MLPRouter", float, dict]:
        """``fit`` with (hidden size, weight decay) chosen by ``folds``-fold CV accuracy on the
        training prompts only (the folds of ``Router.fit_cv``); ties -> smaller hidden, larger decay."""
        grid = [(h, wd) for h in hiddens for wd in weight_decays]

        def correct(hw, train, test) -> int:
            r, _ = cls.fit(z[train], y[train], n_experts, hidden=hw[0], weight_decay=hw[1], seed=seed, **kw)
            return int((r.logits(z[test]).argmax(-1) == y[test]).sum())

        scores = probes.cross_validate(grid, probes.kfold(len(y), folds, seed), correct, lambda c: sum(c) / len(y))
        best = probes.best(scores, tiebreak=lambda hw: (-hw[0], hw[1]))
        router, loss = cls.fit(z, y, n_experts, hidden=best[0], weight_decay=best[1], seed=seed, **kw)
        return router, loss, {"hidden": best[0], "weight_decay": best[1],
                              "cv_accuracy": {f"h{h}_wd{wd}": v for (h, wd), v in scores.items()}}
