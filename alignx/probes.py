"""Linear probes on frozen features: the one training loop and the one cross-validation helper.

Every linear read-out of the library is fitted by ``fit_linear`` (which calls ``minimize``):

* latent heads (``alignx.experts.latent.fit_head``): z = normalize(W x + b),
  logits_j = cos(z, c_j) / tau, L = CE(logits, y); AdamW, prototypes c learned or frozen;
* the MoCaE router (``alignx.mocae.router.Router.fit``): logits = W z + b,
  L = CE(logits, y; class weights n / (n_classes n_c) when balanced); AdamW;
* the offline judges' heads (``alignx.eval.heads``): logistic regression
  L = BCE(w x + b, y; per-row class weights) + l2 ||W||^2, softmax regression
  L = CE(W x + b, y; class weights) + l2 ||W||^2, and Bradley-Terry
  L = mean softplus(-w (x_a - x_b)) + l2 ||w||^2 (no bias); full-batch L-BFGS.

Model selection: ``kfold`` (a seeded permutation dealt round-robin into folds, the router) and
``group_kfold`` (one fold per value of a caller-given fold id, the judges' grouped folds) make
(train, test) splits; ``cross_validate`` scores each candidate on every split and aggregates;
``best`` picks the highest score, ties broken by a caller key (e.g. the stronger penalty).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterable, Sequence

import torch
import torch.nn.functional as F

from alignx.errors import InvalidInput

OPTIMIZERS = ("adamw", "lbfgs")
Split = tuple[torch.Tensor, torch.Tensor]            # (train rows, test rows): index or boolean tensors


# --- the training loop ---------------------------------------------------------------------------
def minimize(params: list[torch.Tensor], loss_fn: Callable[[], torch.Tensor], *, optimizer: str = "adamw",
             steps: int = 300, lr: float = 1e-2, weight_decay: float = 0.0) -> float:
    """Minimize ``loss_fn()`` over ``params`` full-batch; returns the last loss evaluated.

    ``adamw``: ``steps`` iterations of (loss, zero_grad, backward, AdamW step(lr, weight_decay));
    the loss returned is the one of the last iteration, before its update.
    ``lbfgs``: one ``LBFGS(lr, max_iter=steps, line_search_fn="strong_wolfe")`` step with the usual
    closure (weight decay belongs in the loss, as an ``l2`` term)."""
    if optimizer not in OPTIMIZERS:
        raise InvalidInput(f"unknown optimizer {optimizer!r}; available: {', '.join(OPTIMIZERS)}")
    if steps < 1:
        raise InvalidInput(f"steps must be >= 1, got {steps}")
    if optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        for _ in range(steps):
            loss = loss_fn()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return float(loss.detach())
    if weight_decay:
        raise InvalidInput("lbfgs takes no weight_decay: pass l2 (a penalty in the loss) instead")
    lbfgs = torch.optim.LBFGS(params, lr=lr, max_iter=steps, line_search_fn="strong_wolfe")
    last: list[torch.Tensor] = []

    def closure():
        lbfgs.zero_grad()
        loss = loss_fn()
        loss.backward()
        last[:] = [loss.detach()]
        return loss

    lbfgs.step(closure)
    return float(last[0])


# --- losses and logits -----------------------------------------------------------------------------
def linear_logits(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *extra) -> torch.Tensor:
    """x W^T (+ b)."""
    return x @ weight.T if bias is None else x @ weight.T + bias


def softmax_ce(logits: torch.Tensor, y: torch.Tensor, class_weight: torch.Tensor | None) -> torch.Tensor:
    """CE(logits, y) with optional per-class weights."""
    return F.cross_entropy(logits, y, weight=class_weight)


def binary_ce(logits: torch.Tensor, y: torch.Tensor, class_weight: torch.Tensor | None) -> torch.Tensor:
    """BCE-with-logits on the one logit column; row i weighted by class_weight[y_i]."""
    sw = class_weight[y] if class_weight is not None else None
    return F.binary_cross_entropy_with_logits(logits[:, 0], y.float(), weight=sw)


def bradley_terry(logits: torch.Tensor, y: torch.Tensor | None, class_weight: torch.Tensor | None) -> torch.Tensor:
    """mean softplus(-r), r = the one logit of (x_chosen - x_rejected): -log P(chosen > rejected)."""
    return F.softplus(-logits[:, 0]).mean()


@dataclass
class LinearFit:
    weight: torch.Tensor                 # (out_features, d)
    bias: torch.Tensor | None            # (out_features,), None when fitted without
    extra: list[torch.Tensor] = field(default_factory=list)   # the extra parameters, fitted
    loss: float = float("nan")           # the last loss ``minimize`` evaluated


def fit_linear(x: torch.Tensor, y: torch.Tensor | None, out_features: int, *,
               init: Callable[[tuple[int, int]], torch.Tensor] | None = None, bias: bool = True,
               extra: Callable[[], Sequence[torch.Tensor]] | None = None,
               logits_fn: Callable[..., torch.Tensor] = linear_logits,
               loss_fn: Callable[..., torch.Tensor] = softmax_ce, class_weight: torch.Tensor | None = None,
               l2: float | None = None, optimizer: str = "adamw", steps: int = 300, lr: float = 1e-2,
               weight_decay: float = 0.0) -> LinearFit:
    """Fit W (out_features x d), b and ``extra`` parameters on features ``x`` (n, d) and targets ``y``.

    W = ``init((out_features, d))`` (zeros when None), b = 0; then ``extra()`` makes the extra
    trainable tensors (so a shared generator draws them after W). The loss is

        L = loss_fn(logits_fn(x, W, b, *extra), y, class_weight)  [+ l2 * sum(W ** 2)]

    minimized by ``minimize`` over [W, b, *extra] in that order."""
    w = (init((out_features, x.shape[1])) if init is not None else torch.zeros(out_features, x.shape[1]))
    w = w.detach().requires_grad_()
    b = torch.zeros(out_features, requires_grad=True) if bias else None
    more = list(extra()) if extra is not None else []
    params = [w, *([b] if b is not None else []), *more]

    def objective() -> torch.Tensor:
        loss = loss_fn(logits_fn(x, w, b, *more), y, class_weight)
        return loss + l2 * (w ** 2).sum() if l2 is not None else loss

    loss = minimize(params, objective, optimizer=optimizer, steps=steps, lr=lr, weight_decay=weight_decay)
    return LinearFit(w.detach().clone(), b.detach().clone() if b is not None else None,
                     [p.detach().clone() for p in more], loss)


# --- cross-validation ---------------------------------------------------------------------------
def kfold(n: int, folds: int, seed: int = 0) -> list[Split]:
    """(train, test) index tensors: test f = order[f::folds] of a seeded permutation of range(n)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return [(torch.cat([order[g::folds] for g in range(folds) if g != f]), order[f::folds]) for f in range(folds)]


def group_kfold(fold: torch.Tensor) -> list[Split]:
    """(train mask, test mask) per distinct value of ``fold`` (sorted): test = rows with that value."""
    return [(fold != k, fold == k) for k in fold.unique().tolist()]


def cross_validate(candidates: Iterable[Hashable], splits: Sequence[Split],
                   fit_score: Callable[[Hashable, torch.Tensor, torch.Tensor], float],
                   aggregate: Callable[[list[float]], float]) -> dict:
    """{candidate: aggregate([fit_score(candidate, train, test) for each split])}, in order."""
    return {c: aggregate([fit_score(c, train, test) for train, test in splits]) for c in candidates}


def best(scores: dict, tiebreak: Callable[[Hashable], float]) -> Hashable:
    """The candidate with the highest score; among equal scores the highest ``tiebreak(candidate)``."""
    return max(scores, key=lambda c: (scores[c], tiebreak(c)))
