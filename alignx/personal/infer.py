"""Preference inference at small scale (after AlignXplore): a user's history -> their 90-dim direction.

Features. With h(x, y) the mean-pooled final hidden state of the chat-templated (prompt x,
response y) under the frozen base (``alignx.experts.latent.features``), a user u with history
{(x_j, c_j, r_j)}_{j=1..m} is

    f(u) = (1/m) sum_j [ h(x_j, c_j) - h(x_j, r_j) ]        (R^d)

Probe. Ridge regression from standardized features to the direction, closed form:

    s(f) = (f - mu) / sigma,  Y_c = Y - mean(Y)
    W = argmin ||S W - Y_c||^2 + l2 ||W||^2 = S^T (S S^T + l2 I)^-1 Y_c   (= (S^T S + l2 I)^-1 S^T Y_c)
    v_hat(f) = clip(s(f) W + mean(Y), 0, 1)

``l2`` is picked by k-fold cross-validation (mean squared error of the clipped predictions) on the
training users only, from ``L2_GRID``.

Persona identification: with c = the mean training direction and m_p the mean training direction
of persona p, a user is assigned argmax_p cos(v_hat - c, m_p - c) (nearest centroid by cosine of
the deviations from the training mean, so dimensions every persona shares do not count).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from alignx.errors import InvalidInput, MissingFile

L2_GRID = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)
PROBE_FILE, CARD_FILE = "probe.safetensors", "probe.json"


def pair_features(model, tokenizer, users: Sequence, batch_size: int = 16, max_length: int = 256) -> torch.Tensor:
    """(n_users, d) f(u) = mean_j [h(x_j, c_j) - h(x_j, r_j)]. Every distinct (prompt, response) of
    all users is featurized once (P-Soups histories reuse a small pool of pairs), in batches."""
    from alignx.experts.latent import features

    index: dict[tuple[str, str], int] = {}
    pairs_of = []
    for k, user in enumerate(users):
        if not user.history:
            raise InvalidInput(f"user {k} has no history pairs: nothing to infer a direction from")
        pairs_of.append([(index.setdefault((p.prompt, p.chosen), len(index)),
                          index.setdefault((p.prompt, p.rejected), len(index))) for p in user.history])
    if not index:
        raise InvalidInput("pair_features needs at least one user")
    h = features(model, tokenizer, list(index), batch_size=batch_size, max_length=max_length)[0]
    return torch.stack([torch.stack([h[c] - h[r] for c, r in pairs]).mean(0) for pairs in pairs_of])


def _ridge(s: torch.Tensor, y: torch.Tensor, l2: float) -> torch.Tensor:
    """W = S^T (S S^T + l2 I)^-1 Y when n <= d, else (S^T S + l2 I)^-1 S^T Y (float64)."""
    n, d = s.shape
    if n <= d:
        return s.T @ torch.linalg.solve(s @ s.T + l2 * torch.eye(n, dtype=s.dtype), y)
    return torch.linalg.solve(s.T @ s + l2 * torch.eye(d, dtype=s.dtype), s.T @ y)


def r2_score(pred, target) -> float:
    """R^2 = 1 - sum (y - y_hat)^2 / sum (y - mean_col(y))^2 over every entry."""
    pred, target = torch.as_tensor(pred, dtype=torch.float64), torch.as_tensor(target, dtype=torch.float64)
    ss_tot = ((target - target.mean(0)) ** 2).sum()
    return float(1 - ((target - pred) ** 2).sum() / ss_tot.clamp_min(1e-12))


class DirectionProbe:
    """Ridge probe f(u) -> v_hat(u) in [0, 1]^90 (formulas in the module docstring)."""

    def __init__(self) -> None:
        self.weight: torch.Tensor | None = None      # (d, k)
        self.bias: torch.Tensor | None = None        # (k,) mean training direction
        self.mean: torch.Tensor | None = None        # (d,)
        self.std: torch.Tensor | None = None         # (d,)
        self.l2: float | None = None
        self.cv: dict[str, float] = {}
        self.n_train = 0

    def _solve(self, x: torch.Tensor, y: torch.Tensor, l2: float) -> None:
        self.mean, self.std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
        self.bias = y.mean(0)
        self.weight = _ridge((x - self.mean) / self.std, y - self.bias, l2)

    def fit(self, features, directions, l2: float | None = None, folds: int = 5,
            grid: Sequence[float] = L2_GRID, seed: int = 0) -> DirectionProbe:
        """Fit on the training users; ``l2=None`` picks it by ``folds``-fold CV (MSE) from ``grid``."""
        x = torch.as_tensor(features, dtype=torch.float64)
        y = torch.as_tensor(directions, dtype=torch.float64)
        if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
            raise InvalidInput(f"features (n, d) and directions (n, k) must match: {tuple(x.shape)} vs {tuple(y.shape)}")
        if len(x) < 2:
            raise InvalidInput(f"the probe needs at least 2 users, got {len(x)}")
        if l2 is None:
            self.cv = self.cross_validate(x, y, folds, grid, seed)
            l2 = min(self.cv.items(), key=lambda kv: (kv[1], -float(kv[0])))[0]
        if not float(l2) > 0:
            raise InvalidInput(f"l2 must be > 0, got {l2}")
        self.l2, self.n_train = float(l2), len(x)
        self._solve(x, y, self.l2)
        return self

    @staticmethod
    def cross_validate(x: torch.Tensor, y: torch.Tensor, folds: int = 5, grid: Sequence[float] = L2_GRID,
                       seed: int = 0) -> dict[str, float]:
        """``{str(l2): mean squared error}`` of k-fold CV (a seeded permutation of the users)."""
        k = max(2, min(int(folds), len(x)))
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        parts = [order[i::k] for i in range(k)]
        out = {}
        for l2 in grid:
            err, count = 0.0, 0
            for held in parts:
                mask = torch.ones(len(x), dtype=torch.bool)
                mask[held] = False
                p = DirectionProbe()
                p._solve(x[mask], y[mask], float(l2))
                err += float(((p.predict(x[held]) - y[held]) ** 2).sum())
                count += y[held].numel()
            out[str(float(l2))] = err / count
        return out

    def predict(self, features) -> torch.Tensor:
        """(n, k) v_hat = clip(s(f) W + mean(Y), 0, 1), float64."""
        if self.weight is None:
            raise InvalidInput("the probe is not fitted: call fit() or DirectionProbe.load()")
        x = torch.as_tensor(features, dtype=torch.float64)
        x = x[None] if x.ndim == 1 else x
        return (((x - self.mean) / self.std) @ self.weight + self.bias).clamp(0.0, 1.0)

    def save(self, folder: str | Path, **card) -> Path:
        """``folder/probe.safetensors`` (weight, bias, mean, std) + ``folder/probe.json`` (l2, CV, sizes, ``card``)."""
        from safetensors.torch import save_file

        if self.weight is None:
            raise InvalidInput("cannot save an unfitted probe")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: getattr(self, k).contiguous() for k in ("weight", "bias", "mean", "std")}, str(folder / PROBE_FILE))
        meta = {"kind": "alignx-direction-probe", "model": "ridge", "l2": self.l2, "cv_mse": self.cv,
                "n_train": self.n_train, "d": int(self.weight.shape[0]), "k": int(self.weight.shape[1]),
                "formula": "v_hat = clip(((f - mean) / std) @ weight + bias, 0, 1)", **card}
        (folder / CARD_FILE).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> DirectionProbe:
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / PROBE_FILE).exists() or not (folder / CARD_FILE).exists():
            raise MissingFile(f"no direction probe in {folder} (expected {PROBE_FILE} and {CARD_FILE})")
        t = load_file(str(folder / PROBE_FILE))
        meta = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
        p = cls()
        p.weight, p.bias, p.mean, p.std = (t[k].to(torch.float64) for k in ("weight", "bias", "mean", "std"))
        p.l2, p.cv, p.n_train = meta.get("l2"), meta.get("cv_mse", {}), int(meta.get("n_train", 0))
        return p


def identify_persona(pred_directions, train_directions, train_personas: Sequence[str]) -> list[str]:
    """argmax_p cos(v_hat - c, m_p - c), c = mean training direction, m_p = persona p's mean."""
    pred = torch.as_tensor(pred_directions, dtype=torch.float64)
    train = torch.as_tensor(train_directions, dtype=torch.float64)
    if len(train) != len(train_personas):
        raise InvalidInput(f"{len(train)} training directions for {len(train_personas)} personas")
    names = list(dict.fromkeys(train_personas))
    if not names:
        raise InvalidInput("identify_persona needs training users")
    c = train.mean(0)
    labels = list(train_personas)
    cents = torch.stack([train[[i for i, p in enumerate(labels) if p == n]].mean(0) for n in names]) - c
    sims = torch.nn.functional.normalize(pred.reshape(-1, train.shape[1]) - c, dim=-1) @ \
        torch.nn.functional.normalize(cents, dim=-1).T
    return [names[i] for i in sims.argmax(-1).tolist()]


def persona_accuracy(pred_personas: Sequence[str], true_personas: Sequence[str]) -> float:
    """Share of users whose identified persona equals the true one."""
    if len(pred_personas) != len(true_personas) or not true_personas:
        raise InvalidInput(f"need equally many (>0) predictions and labels: {len(pred_personas)} vs {len(true_personas)}")
    return sum(a == b for a, b in zip(pred_personas, true_personas)) / len(true_personas)


def infer_profile(model, tokenizer, user, probe: DirectionProbe, dims: Sequence[dict]) -> tuple[tuple[float, ...], str]:
    """(v_hat(u), its profile text) for one user, from their history pairs."""
    from alignx.personal.prompts import profile_text

    direction = tuple(float(v) for v in probe.predict(pair_features(model, tokenizer, [user]))[0])
    return direction, profile_text(direction, dims)


def _sign_agreement(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Share of (user, dimension) entries where discretize(v_hat) == discretize(v)."""
    from alignx.personal.prompts import discretize

    a = torch.tensor([discretize(r) for r in pred.tolist()])
    b = torch.tensor([discretize(r) for r in true.tolist()])
    return float((a == b).double().mean())


def run_inference(model, tokenizer, splits: dict, out_dir: str | Path, limit: int | None = None, seed: int = 0,
                  command: str | None = None, data_dir=None, batch_size: int = 16, max_length: int = 256) -> dict:
    """Fit one probe on the training users of every file (l2 by CV on them), score it on each file's
    evaluation users, save it to ``<out_dir>/probe`` (its card holds the report) and return the report.

    Per file: R^2 and MSE of v_hat (and the MSE of predicting the mean training direction), the
    sign agreement of the discretised directions, and persona accuracy of ``identify_persona``
    with the file's training users as centroids, from v_hat and (ceiling) from the true v."""
    import time

    from alignx.personal.prompts import load_dims, profile_text

    t0 = time.time()
    train = {n: list(tr[:limit] if limit else tr) for n, (tr, _) in splits.items()}
    held = {n: list(ev[:limit] if limit else ev) for n, (_, ev) in splits.items()}
    everyone = [ex for part in (train, held) for rows in part.values() for ex in rows]
    missing = [f"{ex.source}:{ex.row}" for ex in everyone if ex.user.direction is None]
    if missing:
        raise InvalidInput(f"{len(missing)} user(s) have no direction to learn from or score against, e.g. {missing[:3]}")
    feats = pair_features(model, tokenizer, [ex.user for ex in everyone], batch_size, max_length)
    dirs = torch.tensor([ex.user.direction for ex in everyone], dtype=torch.float64)
    n_train = sum(map(len, train.values()))
    probe = DirectionProbe().fit(feats[:n_train], dirs[:n_train], seed=seed)
    dims = load_dims(data_dir)
    report: dict = {"kind": "alignx-preference-inference", "features": "mean_j [h(x, chosen) - h(x, rejected)]",
                    "probe": "ridge", "l2": probe.l2, "cv_mse": probe.cv, "n_train_users": n_train, "files": {}}
    start, offset = 0, n_train
    for name in splits:
        k, m = len(train[name]), len(held[name])
        tr_y, personas = dirs[start:start + k], [ex.user.persona or "?" for ex in train[name]]
        y, pred = dirs[offset:offset + m], probe.predict(feats[offset:offset + m])
        truth = [ex.user.persona or "?" for ex in held[name]]
        report["files"][name] = {
            "n_train_users": k, "n_eval_users": m, "r2": r2_score(pred, y),
            "mse": float(((pred - y) ** 2).mean()), "mse_mean_baseline": float(((probe.bias - y) ** 2).mean()),
            "sign_agreement": _sign_agreement(pred, y),
            "persona_accuracy": persona_accuracy(identify_persona(pred, tr_y, personas), truth),
            "persona_accuracy_true_direction": persona_accuracy(identify_persona(y, tr_y, personas), truth),
            "chance": 1 / len(set(personas)),
            "example": {"row": held[name][0].row, "inferred_profile": profile_text(pred[0].tolist(), dims),
                        "true_profile": profile_text(y[0].tolist(), dims)},
        }
        start, offset = start + k, offset + m
    report.update(wall_time_s=round(time.time() - t0, 1), command=command)
    path = probe.save(Path(out_dir) / "probe", report=report,
                      base_model=str(getattr(getattr(model, "config", None), "_name_or_path", "")))
    report["probe_dir"] = str(path)
    return report
