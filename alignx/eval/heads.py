"""Small judge heads on frozen features, in plain torch (no scikit-learn).

* ``LinearHead``: standardized features -> logits. One output = logistic regression
  (P = sigmoid), several = softmax regression, and the same head used as a reward r(x, y) gives a
  Bradley-Terry preference P(a > b) = sigmoid(r(a) - r(b)).
* ``fit_classifier`` / ``fit_bradley_terry``: full-batch L-BFGS with an L2 penalty; the penalty and
  the feature subset (which pooled layers) are chosen by cross-validation over folds the caller
  supplies (grouped by question, prompt or instruction, so no group is on both sides of a fold).

On standardized features x = (f - mean) / std (std clamped at 1e-6), ``alignx.probes.fit_linear``:

  binary:        L = BCE(w x + b, y; row weight cw[y]) + l2 ||w||^2
  n classes:     L = CE(W x + b, y; class weights cw) + l2 ||W||^2,  cw_c = n / (n_classes n_c)
  Bradley-Terry: L = mean softplus(-w (x_a - x_b)) + l2 ||w||^2      (no bias)

CV score: the mean over folds of balanced accuracy (pair accuracy for Bradley-Terry), rounded
to 4 places; ties go to the stronger penalty.
"""
from __future__ import annotations

from alignx.errors import InvalidInput

import os
from dataclasses import dataclass
from typing import Sequence

import torch

from alignx import atomic, probes

L2_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


@dataclass
class LinearHead:
    mean: torch.Tensor      # (d,)
    std: torch.Tensor       # (d,)
    weight: torch.Tensor    # (k, d)
    bias: torch.Tensor      # (k,)
    columns: torch.Tensor | None = None   # feature columns the head reads (None = all)
    in_dim: int | None = None             # width of the full feature vector it expects

    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        expected = self.in_dim if self.in_dim is not None else self.mean.shape[0]
        if feats.shape[-1] != expected:
            raise InvalidInput(f"features have {feats.shape[-1]} dims, the head expects {expected}")
        if self.columns is not None:
            feats = feats[:, self.columns]
        return ((feats.float() - self.mean) / self.std) @ self.weight.T + self.bias

    def save(self, path: str | os.PathLike) -> None:
        t = {"mean": self.mean, "std": self.std, "weight": self.weight, "bias": self.bias}
        if self.columns is not None:
            t["columns"] = self.columns
        t["in_dim"] = torch.tensor([self.in_dim if self.in_dim is not None else self.mean.shape[0]])
        atomic.save_safetensors(path, {k: v.contiguous() for k, v in t.items()})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LinearHead":
        from safetensors.torch import load_file

        t = load_file(str(path))
        missing = {"mean", "std", "weight", "bias"} - t.keys()
        if missing:
            raise InvalidInput(f"{path}: not a judge head (missing tensors {sorted(missing)})")
        in_dim = int(t["in_dim"][0]) if "in_dim" in t else None
        return cls(t["mean"], t["std"], t["weight"], t["bias"], t.get("columns"), in_dim)


def _standardizer(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean(0), x.std(0).clamp_min(1e-6)


LBFGS_STEPS = 200


def _train_classifier(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float,
                      class_weight: torch.Tensor | None) -> LinearHead:
    mean, std = _standardizer(x)
    k = 1 if n_classes == 2 else n_classes
    fit = probes.fit_linear((x - mean) / std, y, k, loss_fn=probes.binary_ce if k == 1 else probes.softmax_ce,
                            class_weight=class_weight, l2=l2, optimizer="lbfgs", steps=LBFGS_STEPS, lr=1.0)
    return LinearHead(mean, std, fit.weight, fit.bias)


def predict_classes(head: LinearHead, x: torch.Tensor) -> torch.Tensor:
    logits = head.logits(x)
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)


def class_probs(head: LinearHead, x: torch.Tensor) -> torch.Tensor:
    """(n, n_classes) probabilities; a one-logit head gives [1 - p, p]."""
    logits = head.logits(x)
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - p, p], 1)
    return torch.softmax(logits, 1)


def balanced_weights(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    counts = torch.bincount(y, minlength=n_classes).float().clamp_min(1)
    return counts.sum() / (n_classes * counts)


def balanced_accuracy(pred: torch.Tensor, y: torch.Tensor, n_classes: int) -> float:
    recalls = [float((pred[y == c] == c).float().mean()) for c in range(n_classes) if (y == c).any()]
    return sum(recalls) / len(recalls)


def _with_columns(head: LinearHead, cols: torch.Tensor | None, in_dim: int) -> LinearHead:
    head.columns, head.in_dim = cols, in_dim
    return head


def _cv_mean(scores: list[float]) -> float:
    return round(sum(scores) / len(scores), 4)


def _l2_of(key: str) -> float:
    return float(key.split("|")[1])


def fit_classifier(x: torch.Tensor, y: torch.Tensor, fold: torch.Tensor, n_classes: int,
                   subsets: dict[str, torch.Tensor | None] | None = None, balance: bool = True,
                   grid: Sequence[float] = L2_GRID) -> tuple[LinearHead, dict]:
    """Choose (feature subset, L2) by grouped cross-validation over ``fold`` (balanced accuracy),
    then refit on all rows with the choice."""
    subsets = subsets or {"all": None}
    views = {name: x if cols is None else x[:, cols] for name, cols in subsets.items()}
    candidates = {f"{name}|{l2}": (name, l2) for name in subsets for l2 in grid}

    def score(key: str, train: torch.Tensor, test: torch.Tensor) -> float:
        name, l2 = candidates[key]
        xs = views[name]
        cw = balanced_weights(y[train], n_classes) if balance else None
        head = _train_classifier(xs[train], y[train], n_classes, l2, cw)
        return balanced_accuracy(predict_classes(head, xs[test]), y[test], n_classes)

    scores = probes.cross_validate(candidates, probes.group_kfold(fold), score, _cv_mean)
    best = probes.best(scores, tiebreak=_l2_of)                          # ties -> stronger penalty
    name, l2 = best.split("|")
    cols = subsets[name]
    head = _train_classifier(views[name], y, n_classes, float(l2), balanced_weights(y, n_classes) if balance else None)
    return _with_columns(head, cols, x.shape[1]), {"features": name, "l2": float(l2),
                                                   "cv_balanced_accuracy": scores, "folds": int(fold.unique().numel())}


def _train_bt(xa: torch.Tensor, xb: torch.Tensor, l2: float) -> LinearHead:
    """Bradley-Terry: rows of ``xa`` (chosen) preferred over rows of ``xb`` (rejected)."""
    mean, std = _standardizer(torch.cat([xa, xb]))
    diff = ((xa - mean) / std) - ((xb - mean) / std)
    fit = probes.fit_linear(diff, None, 1, bias=False, loss_fn=probes.bradley_terry, l2=l2, optimizer="lbfgs",
                            steps=LBFGS_STEPS, lr=1.0)
    return LinearHead(mean, std, fit.weight, torch.zeros(1))


def pair_accuracy(head: LinearHead, xa: torch.Tensor, xb: torch.Tensor) -> float:
    return float((head.logits(xa)[:, 0] > head.logits(xb)[:, 0]).float().mean())


def fit_bradley_terry(xa: torch.Tensor, xb: torch.Tensor, fold: torch.Tensor,
                      subsets: dict[str, torch.Tensor | None] | None = None,
                      grid: Sequence[float] = L2_GRID) -> tuple[LinearHead, dict]:
    """Bradley-Terry head; (feature subset, L2) chosen by grouped cross-validation pair accuracy."""
    subsets = subsets or {"all": None}
    views = {name: (xa, xb) if cols is None else (xa[:, cols], xb[:, cols]) for name, cols in subsets.items()}
    candidates = {f"{name}|{l2}": (name, l2) for name in subsets for l2 in grid}

    def score(key: str, train: torch.Tensor, test: torch.Tensor) -> float:
        name, l2 = candidates[key]
        a, b = views[name]
        return pair_accuracy(_train_bt(a[train], b[train], l2), a[test], b[test])

    scores = probes.cross_validate(candidates, probes.group_kfold(fold), score, _cv_mean)
    best = probes.best(scores, tiebreak=_l2_of)
    name, l2 = best.split("|")
    cols = subsets[name]
    head = _with_columns(_train_bt(*views[name], float(l2)), cols, xa.shape[1])
    return head, {"features": name, "l2": float(l2), "cv_pair_accuracy": scores, "folds": int(fold.unique().numel())}


def fit_stacker(x: torch.Tensor, extra: torch.Tensor, y: torch.Tensor, fold: torch.Tensor, l2: float,
                cols: torch.Tensor | None = None, stack_l2: float = 1e-3) -> tuple[LinearHead, dict]:
    """A logistic regression on [neural-head logit, extra features]. The neural logits it is fit on
    are out-of-fold (cross-fitted over ``fold``), so the stacker never sees a logit of a row the
    neural head was trained on. At inference use the neural head fit on all rows."""
    oof = torch.zeros(len(y))
    x = x if cols is None else x[:, cols]
    for train, test in probes.group_kfold(fold):
        h = _train_classifier(x[train], y[train], 2, l2, balanced_weights(y[train], 2))
        oof[test] = h.logits(x[test])[:, 0]
    z = torch.cat([oof[:, None], extra], 1)
    head = _train_classifier(z, y, 2, stack_l2, balanced_weights(y, 2))
    return head, {"inputs": ["neural_logit", "ref_f1_correct", "ref_f1_incorrect", "ref_f1_diff"],
                  "l2": stack_l2, "folds": int(fold.unique().numel())}
