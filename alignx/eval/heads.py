"""Small judge heads on frozen features, in plain torch (no scikit-learn).

* ``LinearHead``: standardized features -> logits. One output = logistic regression
  (P = sigmoid), several = softmax regression, and the same head used as a reward r(x, y) gives a
  Bradley-Terry preference P(a > b) = sigmoid(r(a) - r(b)).
* ``fit_classifier`` / ``fit_bradley_terry``: full-batch L-BFGS with an L2 penalty; the penalty and
  the feature subset (which pooled layers) are chosen by cross-validation over folds the caller
  supplies (grouped by question, prompt or instruction, so no group is on both sides of a fold).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

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
            raise ValueError(f"features have {feats.shape[-1]} dims, the head expects {expected}")
        if self.columns is not None:
            feats = feats[:, self.columns]
        return ((feats.float() - self.mean) / self.std) @ self.weight.T + self.bias

    def save(self, path: str | os.PathLike) -> None:
        from safetensors.torch import save_file

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        t = {"mean": self.mean, "std": self.std, "weight": self.weight, "bias": self.bias}
        if self.columns is not None:
            t["columns"] = self.columns
        t["in_dim"] = torch.tensor([self.in_dim if self.in_dim is not None else self.mean.shape[0]])
        save_file({k: v.contiguous() for k, v in t.items()}, str(path))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LinearHead":
        from safetensors.torch import load_file

        t = load_file(str(path))
        missing = {"mean", "std", "weight", "bias"} - t.keys()
        if missing:
            raise ValueError(f"{path}: not a judge head (missing tensors {sorted(missing)})")
        in_dim = int(t["in_dim"][0]) if "in_dim" in t else None
        return cls(t["mean"], t["std"], t["weight"], t["bias"], t.get("columns"), in_dim)


def _standardizer(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean(0), x.std(0).clamp_min(1e-6)


def _lbfgs(params: list[torch.Tensor], loss_fn, steps: int = 200) -> None:
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)


def _train_classifier(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float,
                      class_weight: torch.Tensor | None) -> LinearHead:
    mean, std = _standardizer(x)
    z = (x - mean) / std
    k = 1 if n_classes == 2 else n_classes
    w = torch.zeros(k, x.shape[1], requires_grad=True)
    b = torch.zeros(k, requires_grad=True)

    def loss_fn():
        logits = z @ w.T + b
        if k == 1:
            sw = class_weight[y] if class_weight is not None else None
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y.float(), weight=sw)
        else:
            loss = torch.nn.functional.cross_entropy(logits, y, weight=class_weight)
        return loss + l2 * (w ** 2).sum()

    _lbfgs([w, b], loss_fn)
    return LinearHead(mean, std, w.detach(), b.detach())


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


def fit_classifier(x: torch.Tensor, y: torch.Tensor, fold: torch.Tensor, n_classes: int,
                   subsets: dict[str, torch.Tensor | None] | None = None, balance: bool = True,
                   grid: Sequence[float] = L2_GRID) -> tuple[LinearHead, dict]:
    """Choose (feature subset, L2) by grouped cross-validation over ``fold`` (balanced accuracy),
    then refit on all rows with the choice."""
    subsets = subsets or {"all": None}
    scores: dict[str, float] = {}
    for name, cols in subsets.items():
        xs = x if cols is None else x[:, cols]
        for l2 in grid:
            accs = []
            for k in fold.unique().tolist():
                part = fold == k
                cw = balanced_weights(y[~part], n_classes) if balance else None
                head = _train_classifier(xs[~part], y[~part], n_classes, l2, cw)
                accs.append(balanced_accuracy(predict_classes(head, xs[part]), y[part], n_classes))
            scores[f"{name}|{l2}"] = round(sum(accs) / len(accs), 4)
    best = max(scores, key=lambda k: (scores[k], float(k.split("|")[1])))   # ties -> stronger penalty
    name, l2 = best.split("|")
    cols = subsets[name]
    xs = x if cols is None else x[:, cols]
    head = _train_classifier(xs, y, n_classes, float(l2), balanced_weights(y, n_classes) if balance else None)
    return _with_columns(head, cols, x.shape[1]), {"features": name, "l2": float(l2),
                                                   "cv_balanced_accuracy": scores, "folds": int(fold.unique().numel())}


def _train_bt(xa: torch.Tensor, xb: torch.Tensor, l2: float) -> LinearHead:
    """Bradley-Terry: rows of ``xa`` (chosen) preferred over rows of ``xb`` (rejected)."""
    mean, std = _standardizer(torch.cat([xa, xb]))
    diff = ((xa - mean) / std) - ((xb - mean) / std)
    w = torch.zeros(1, xa.shape[1], requires_grad=True)

    def loss_fn():
        return torch.nn.functional.softplus(-(diff @ w.T)[:, 0]).mean() + l2 * (w ** 2).sum()

    _lbfgs([w], loss_fn)
    return LinearHead(mean, std, w.detach(), torch.zeros(1))


def pair_accuracy(head: LinearHead, xa: torch.Tensor, xb: torch.Tensor) -> float:
    return float((head.logits(xa)[:, 0] > head.logits(xb)[:, 0]).float().mean())


def fit_bradley_terry(xa: torch.Tensor, xb: torch.Tensor, fold: torch.Tensor,
                      subsets: dict[str, torch.Tensor | None] | None = None,
                      grid: Sequence[float] = L2_GRID) -> tuple[LinearHead, dict]:
    """Bradley-Terry head; (feature subset, L2) chosen by grouped cross-validation pair accuracy."""
    subsets = subsets or {"all": None}
    scores: dict[str, float] = {}
    for name, cols in subsets.items():
        a, b = (xa, xb) if cols is None else (xa[:, cols], xb[:, cols])
        for l2 in grid:
            accs = [pair_accuracy(_train_bt(a[fold != k], b[fold != k], l2), a[fold == k], b[fold == k])
                    for k in fold.unique().tolist()]
            scores[f"{name}|{l2}"] = round(sum(accs) / len(accs), 4)
    best = max(scores, key=lambda k: (scores[k], float(k.split("|")[1])))
    name, l2 = best.split("|")
    cols = subsets[name]
    a, b = (xa, xb) if cols is None else (xa[:, cols], xb[:, cols])
    head = _with_columns(_train_bt(a, b, float(l2)), cols, xa.shape[1])
    return head, {"features": name, "l2": float(l2), "cv_pair_accuracy": scores, "folds": int(fold.unique().numel())}


def fit_stacker(x: torch.Tensor, extra: torch.Tensor, y: torch.Tensor, fold: torch.Tensor, l2: float,
                cols: torch.Tensor | None = None, stack_l2: float = 1e-3) -> tuple[LinearHead, dict]:
    """A logistic regression on [neural-head logit, extra features]. The neural logits it is fit on
    are out-of-fold (cross-fitted over ``fold``), so the stacker never sees a logit of a row the
    neural head was trained on. At inference use the neural head fit on all rows."""
    oof = torch.zeros(len(y))
    x = x if cols is None else x[:, cols]
    for k in fold.unique().tolist():
        part = fold == k
        h = _train_classifier(x[~part], y[~part], 2, l2, balanced_weights(y[~part], 2))
        oof[part] = h.logits(x[part])[:, 0]
    z = torch.cat([oof[:, None], extra], 1)
    head = _train_classifier(z, y, 2, stack_l2, balanced_weights(y, 2))
    return head, {"inputs": ["neural_logit", "ref_f1_correct", "ref_f1_incorrect", "ref_f1_diff"],
                  "l2": stack_l2, "folds": int(fold.unique().numel())}
