"""``alignx.atomic`` and ``alignx.probes`` against verbatim copies of the code they replaced.

The ``_old_*`` functions below are the implementations as they were before the shared helpers
(copied unchanged, only renamed): the new code must give the same bytes on disk and the same
fitted numbers (same RNG draws, same init, same optimizer and parameter order, same loss).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F


# ---------------------------------------------------------------------------------------------
# Old atomic writers (alignx/experts/io.py, alignx/cli/generate.py, alignx/eval/report.py)
# ---------------------------------------------------------------------------------------------
def _old_write_json_atomic(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False, default=str)
        f.write("\n")
    os.replace(tmp, path)


def _old_write_jsonl_atomic(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _old_write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _old_api_cache_write(path: Path, payload: dict, content: str) -> None:   # ApiJudge.complete
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"request": payload, "content": content}, f, ensure_ascii=False)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Old fitters
# ---------------------------------------------------------------------------------------------
def _old_fit_head(h, y, prototypes, k=256, steps=300, lr=1e-2, seed=0):   # alignx/experts/latent.py
    from alignx.experts.latent import CLASSES, TAU, Head

    g = torch.Generator().manual_seed(seed)
    mean, std = h.mean(0), h.std(0).clamp_min(1e-4)
    x = (h - mean) / std
    lin = torch.nn.Linear(h.shape[1], k)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(k, h.shape[1], generator=g) / h.shape[1] ** 0.5)
        lin.bias.zero_()
    learn_protos = prototypes is None
    protos = torch.nn.Parameter(torch.randn(len(CLASSES), k, generator=g)) if learn_protos else prototypes.detach()
    params = list(lin.parameters()) + ([protos] if learn_protos else [])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    for _ in range(steps):
        z = F.normalize(lin(x), dim=-1)
        loss = F.cross_entropy(z @ F.normalize(protos, dim=-1).T / TAU, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    head = Head(lin.weight.detach().clone(), lin.bias.detach().clone(), mean, std)
    return head, F.normalize(protos.detach(), dim=-1), float(loss.detach())


def _old_router_fit(z, y, n_experts, steps=300, lr=1e-2, weight_decay=0.01, seed=0, balanced=False):
    from alignx.mocae.router import Router                                 # alignx/mocae/router.py

    g = torch.Generator().manual_seed(seed)
    w = torch.nn.Parameter(torch.randn(n_experts, z.shape[1], generator=g) * 0.01)
    b = torch.nn.Parameter(torch.zeros(n_experts))
    opt = torch.optim.AdamW([w, b], lr=lr, weight_decay=weight_decay)
    counts = torch.bincount(y, minlength=n_experts).float()
    balance = len(y) / (n_experts * counts.clamp(min=1)) if balanced else None
    for _ in range(steps):
        loss = F.cross_entropy(z @ w.T + b, y, weight=balance)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return Router(w.detach().clone(), b.detach().clone()), float(loss.detach())


def _old_router_fit_cv(z, y, n_experts, weight_decays=(0.01, 0.1, 1.0), folds=5, seed=0, **kw):
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    scores = {}
    for wd in weight_decays:
        correct = 0
        for f in range(folds):
            test = order[f::folds]
            train = torch.cat([order[g::folds] for g in range(folds) if g != f])
            r, _ = _old_router_fit(z[train], y[train], n_experts, weight_decay=wd, seed=seed, **kw)
            correct += int((r.logits(z[test]).argmax(-1) == y[test]).sum())
        scores[wd] = correct / len(y)
    best = max(weight_decays, key=lambda wd: (scores[wd], wd))
    router, loss = _old_router_fit(z, y, n_experts, weight_decay=best, seed=seed, **kw)
    return router, loss, {"weight_decay": best, "cv_accuracy": scores}


# alignx/eval/heads.py
L2_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def _old_standardizer(x):
    return x.mean(0), x.std(0).clamp_min(1e-6)


def _old_lbfgs(params, loss_fn, steps=200):
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)


def _old_train_classifier(x, y, n_classes, l2, class_weight):
    from alignx.eval.heads import LinearHead

    mean, std = _old_standardizer(x)
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

    _old_lbfgs([w, b], loss_fn)
    return LinearHead(mean, std, w.detach(), b.detach())


def _old_predict_classes(head, x):
    logits = head.logits(x)
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)


def _old_balanced_weights(y, n_classes):
    counts = torch.bincount(y, minlength=n_classes).float().clamp_min(1)
    return counts.sum() / (n_classes * counts)


def _old_balanced_accuracy(pred, y, n_classes):
    recalls = [float((pred[y == c] == c).float().mean()) for c in range(n_classes) if (y == c).any()]
    return sum(recalls) / len(recalls)


def _old_with_columns(head, cols, in_dim):
    head.columns, head.in_dim = cols, in_dim
    return head


def _old_fit_classifier(x, y, fold, n_classes, subsets=None, balance=True, grid=L2_GRID):
    subsets = subsets or {"all": None}
    scores = {}
    for name, cols in subsets.items():
        xs = x if cols is None else x[:, cols]
        for l2 in grid:
            accs = []
            for k in fold.unique().tolist():
                part = fold == k
                cw = _old_balanced_weights(y[~part], n_classes) if balance else None
                head = _old_train_classifier(xs[~part], y[~part], n_classes, l2, cw)
                accs.append(_old_balanced_accuracy(_old_predict_classes(head, xs[part]), y[part], n_classes))
            scores[f"{name}|{l2}"] = round(sum(accs) / len(accs), 4)
    best = max(scores, key=lambda k: (scores[k], float(k.split("|")[1])))   # ties -> stronger penalty
    name, l2 = best.split("|")
    cols = subsets[name]
    xs = x if cols is None else x[:, cols]
    head = _old_train_classifier(xs, y, n_classes, float(l2), _old_balanced_weights(y, n_classes) if balance else None)
    return _old_with_columns(head, cols, x.shape[1]), {"features": name, "l2": float(l2),
                                                       "cv_balanced_accuracy": scores,
                                                       "folds": int(fold.unique().numel())}


def _old_train_bt(xa, xb, l2):
    from alignx.eval.heads import LinearHead

    mean, std = _old_standardizer(torch.cat([xa, xb]))
    diff = ((xa - mean) / std) - ((xb - mean) / std)
    w = torch.zeros(1, xa.shape[1], requires_grad=True)

    def loss_fn():
        return torch.nn.functional.softplus(-(diff @ w.T)[:, 0]).mean() + l2 * (w ** 2).sum()

    _old_lbfgs([w], loss_fn)
    return LinearHead(mean, std, w.detach(), torch.zeros(1))


def _old_pair_accuracy(head, xa, xb):
    return float((head.logits(xa)[:, 0] > head.logits(xb)[:, 0]).float().mean())


def _old_fit_bradley_terry(xa, xb, fold, subsets=None, grid=L2_GRID):
    subsets = subsets or {"all": None}
    scores = {}
    for name, cols in subsets.items():
        a, b = (xa, xb) if cols is None else (xa[:, cols], xb[:, cols])
        for l2 in grid:
            accs = [_old_pair_accuracy(_old_train_bt(a[fold != k], b[fold != k], l2), a[fold == k], b[fold == k])
                    for k in fold.unique().tolist()]
            scores[f"{name}|{l2}"] = round(sum(accs) / len(accs), 4)
    best = max(scores, key=lambda k: (scores[k], float(k.split("|")[1])))
    name, l2 = best.split("|")
    cols = subsets[name]
    a, b = (xa, xb) if cols is None else (xa[:, cols], xb[:, cols])
    head = _old_with_columns(_old_train_bt(a, b, float(l2)), cols, xa.shape[1])
    return head, {"features": name, "l2": float(l2), "cv_pair_accuracy": scores, "folds": int(fold.unique().numel())}


def _old_fit_stacker(x, extra, y, fold, l2, cols=None, stack_l2=1e-3):
    oof = torch.zeros(len(y))
    x = x if cols is None else x[:, cols]
    for k in fold.unique().tolist():
        part = fold == k
        h = _old_train_classifier(x[~part], y[~part], 2, l2, _old_balanced_weights(y[~part], 2))
        oof[part] = h.logits(x[part])[:, 0]
    z = torch.cat([oof[:, None], extra], 1)
    head = _old_train_classifier(z, y, 2, stack_l2, _old_balanced_weights(y, 2))
    return head, {"inputs": ["neural_logit", "ref_f1_correct", "ref_f1_incorrect", "ref_f1_diff"],
                  "l2": stack_l2, "folds": int(fold.unique().numel())}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    assert torch.equal(a, b), f"max |diff| = {float((a - b).abs().max())}"


def _same_head(a, b) -> None:
    for k in ("mean", "std", "weight", "bias"):
        _same(getattr(a, k), getattr(b, k))
    assert (a.columns is None) == (b.columns is None)
    if a.columns is not None:
        _same(a.columns, b.columns)
    assert a.in_dim == b.in_dim


def _data(n=40, d=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, d, generator=g) + 1.5 * F.one_hot(y, d).float()
    return x, y


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _plain_mode(folder: bool = False) -> int:
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if folder else 0o666) & ~mask


# ---------------------------------------------------------------------------------------------
# alignx.atomic
# ---------------------------------------------------------------------------------------------
DOCS = [
    {"a": 1, "b": [1.5, 2e-9, float("inf"), None, True], "ünï": "çödé ✓ 日本", "nested": {"x": {"y": []}}},
    [1, "two", {"three": 3.0}],
    {"path": Path("/tmp/x"), "when": dt.datetime(2024, 1, 2, 3, 4, 5), "t": (1, 2), "big": 10 ** 30},
    "just a string",
    {},
]


@pytest.mark.parametrize("doc", DOCS)
def test_write_json_is_byte_identical_to_the_old_writer(tmp_path, doc):
    from alignx import atomic
    from alignx.experts.io import write_json_atomic

    _old_write_json_atomic(tmp_path / "old" / "card.json", doc)
    atomic.write_json(tmp_path / "new" / "card.json", doc)
    write_json_atomic(tmp_path / "reexport" / "card.json", doc)
    old = (tmp_path / "old" / "card.json").read_bytes()
    assert (tmp_path / "new" / "card.json").read_bytes() == old
    assert (tmp_path / "reexport" / "card.json").read_bytes() == old
    assert old.endswith(b"\n") and old == (json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n").encode()
    assert _listing(tmp_path / "new") == ["card.json"]                 # no temp file left


def test_write_json_compact_matches_the_old_api_judge_cache(tmp_path):
    from alignx import atomic

    payload = {"model": "gpt-4", "messages": [{"role": "user", "content": "Ünïcode ✓"}], "temperature": 0}
    _old_api_cache_write(tmp_path / "old.json", payload, "A")
    atomic.write_json(tmp_path / "new.json", {"request": payload, "content": "A"}, indent=None, default=None,
                      newline=False)
    assert (tmp_path / "new.json").read_bytes() == (tmp_path / "old.json").read_bytes()


def test_write_jsonl_and_text_are_byte_identical(tmp_path):
    from alignx import atomic
    from alignx.cli.generate import write_jsonl_atomic
    from alignx.eval.report import write_atomic

    rows = [{"prompt": "héllo ✓", "output": "a\nb", "mode": "base"}, {"prompt": "", "output": "", "n": 1.25}]
    _old_write_jsonl_atomic(tmp_path / "old.jsonl", rows)
    atomic.write_jsonl(tmp_path / "new.jsonl", rows)
    atomic.write_jsonl(tmp_path / "gen.jsonl", (r for r in rows))     # any iterable
    write_jsonl_atomic(tmp_path / "reexport.jsonl", rows)
    for name in ("new.jsonl", "gen.jsonl", "reexport.jsonl"):
        assert (tmp_path / name).read_bytes() == (tmp_path / "old.jsonl").read_bytes()
    text = "line one ✓\r\nline two\n\n"
    _old_write_atomic(tmp_path / "old.txt", text)
    atomic.write_text(tmp_path / "new.txt", text)
    write_atomic(tmp_path / "reexport.txt", text)
    assert (tmp_path / "new.txt").read_bytes() == (tmp_path / "old.txt").read_bytes()
    assert (tmp_path / "reexport.txt").read_bytes() == (tmp_path / "old.txt").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_reexports_are_the_shared_functions():
    from alignx import atomic
    from alignx.cli.generate import write_jsonl_atomic
    from alignx.eval.report import write_atomic
    from alignx.experts.io import write_json_atomic

    assert write_json_atomic is atomic.write_json
    assert write_jsonl_atomic is atomic.write_jsonl
    assert write_atomic is atomic.write_text


def test_written_files_get_the_mode_of_a_plain_open(tmp_path):
    from alignx import atomic

    atomic.write_text(tmp_path / "a.txt", "x")
    atomic.save_safetensors(tmp_path / "t.safetensors", {"w": torch.ones(2)})
    with atomic.replace_dir(tmp_path / "d") as d:
        (d / "f").write_text("x")
    for name in ("a.txt", "t.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == _plain_mode()
    assert (tmp_path / "d").stat().st_mode & 0o777 == _plain_mode(folder=True)


class _Unprintable:
    def __str__(self):
        raise RuntimeError("no str")


def _rows_then_boom():
    yield {"ok": 1}
    yield {"ok": 2}
    raise RuntimeError("generator failed")


@pytest.mark.parametrize("case", ["json-key", "json-default-none", "json-default-raises", "jsonl-generator",
                                  "jsonl-unencodable", "text-surrogate", "safetensors-noncontiguous"])
def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, case):
    from alignx import atomic

    target = tmp_path / "out.file"
    target.write_bytes(b"old contents\n")
    big = {f"k{i}": "x" * 100 for i in range(2000)}                      # flushed to disk before it fails
    with pytest.raises((TypeError, ValueError, RuntimeError, UnicodeEncodeError)):
        if case == "json-key":
            atomic.write_json(target, dict(big, **{"z": {(1, 2): 3}}))     # tuple key: TypeError mid-way
        elif case == "json-default-none":
            atomic.write_json(target, dict(big, z=object()), default=None)
        elif case == "json-default-raises":
            atomic.write_json(target, dict(big, z=_Unprintable()))
        elif case == "jsonl-generator":
            atomic.write_jsonl(target, _rows_then_boom())
        elif case == "jsonl-unencodable":
            atomic.write_jsonl(target, [{"a": 1}, {"b": {1, 2}}])
        elif case == "text-surrogate":
            atomic.write_text(target, "x" * 100_000 + "\ud800")
        else:
            atomic.save_safetensors(target, {"w": torch.ones(4, 4).T})
    assert target.read_bytes() == b"old contents\n"
    assert _listing(tmp_path) == ["out.file"]


def test_save_safetensors_is_byte_identical_and_keeps_metadata(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from alignx import atomic

    t = {"b": torch.arange(6, dtype=torch.float32).view(2, 3), "a": torch.ones(3, dtype=torch.float16)}
    save_file(t, tmp_path / "old.safetensors", metadata={"format": "pt"})
    atomic.save_safetensors(tmp_path / "sub" / "new.safetensors", t, metadata={"format": "pt"})
    assert (tmp_path / "sub" / "new.safetensors").read_bytes() == (tmp_path / "old.safetensors").read_bytes()
    with safe_open(tmp_path / "sub" / "new.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt"}
    assert all(torch.equal(v, load_file(tmp_path / "sub" / "new.safetensors")[k]) for k, v in t.items())
    assert _listing(tmp_path / "sub") == ["new.safetensors"]


def test_replace_dir_swaps_in_the_new_folder_or_keeps_the_old_one(tmp_path):
    from alignx import atomic

    final = tmp_path / "expert"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.replace_dir(final) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("killed mid-way")
    assert _listing(final) == ["old.txt"] and _listing(tmp_path) == ["expert"]
    with atomic.replace_dir(final) as tmp:
        assert tmp.parent == tmp_path and tmp != final
        (tmp / "new.txt").write_text("new")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x.bin").write_bytes(b"\0")
    assert _listing(final) == ["new.txt", "sub"] and _listing(tmp_path) == ["expert"]
    with atomic.replace_dir(tmp_path / "fresh" / "one") as tmp:       # missing parents are made
        (tmp / "f").write_text("f")
    assert _listing(tmp_path / "fresh") == ["one"]


def test_export_experts_through_replace_dir(tmp_path):
    from safetensors.torch import load_file, save_file

    from alignx.experts.io import export_experts, write_json_atomic

    src = tmp_path / "src"
    for name in ("helpful", "honest"):
        (src / name).mkdir(parents=True)
        (src / name / "adapter_config.json").write_text("{}")
        save_file({"w": torch.randn(3, 2)}, src / name / "adapter_model.safetensors")
        write_json_atomic(src / name / "card.json", {"axis": name})
    dst = tmp_path / "dst"
    (dst / "helpful").mkdir(parents=True)
    (dst / "helpful" / "stale.txt").write_text("stale")
    out = export_experts(src, dst)
    assert out == [dst / "helpful", dst / "honest"] and _listing(dst) == ["helpful", "honest"]
    assert _listing(dst / "helpful") == ["README.md", "adapter_config.json", "adapter_model.safetensors", "card.json"]
    assert load_file(dst / "helpful" / "adapter_model.safetensors")["w"].dtype == torch.float16
    assert json.loads((dst / "honest" / "card.json").read_text()) == {"axis": "honest", "shipped_dtype": "float16"}


# ---------------------------------------------------------------------------------------------
# alignx.probes: the same numbers as the old fitters
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("learn", [True, False])
def test_fit_head_matches_the_old_fitter(learn):
    from alignx.experts.latent import CLASSES, fit_head

    g = torch.Generator().manual_seed(1)
    h = torch.randn(48, 20, generator=g) * 3 + 1
    y = torch.arange(48) % len(CLASSES)
    protos = None if learn else F.normalize(torch.randn(len(CLASSES), 16, generator=g), dim=-1)
    old_head, old_protos, old_loss = _old_fit_head(h, y, protos, k=16, steps=40, seed=3)
    new_head, new_protos, new_loss = fit_head(h, y, protos, k=16, steps=40, seed=3)
    for k in ("weight", "bias", "mean", "std"):
        _same(getattr(new_head, k), getattr(old_head, k))
    _same(new_protos, old_protos)
    assert new_loss == old_loss


@pytest.mark.parametrize("balanced", [False, True])
def test_router_fit_matches_the_old_fitter(balanced):
    from alignx.mocae.router import Router

    g = torch.Generator().manual_seed(2)
    y = torch.tensor([0] * 30 + [1] * 12 + [2] * 6)
    z = torch.randn(48, 12, generator=g) + F.one_hot(y, 12).float()
    old, old_loss = _old_router_fit(z, y, 3, steps=60, lr=2e-2, weight_decay=0.1, seed=5, balanced=balanced)
    new, new_loss = Router.fit(z, y, 3, steps=60, lr=2e-2, weight_decay=0.1, seed=5, balanced=balanced)
    _same(new.weight, old.weight)
    _same(new.bias, old.bias)
    assert new_loss == old_loss


def test_router_fit_cv_matches_the_old_fitter():
    from alignx.mocae.router import Router

    x, y = _data(n=45, d=8, classes=3, seed=4)
    old, old_loss, old_sel = _old_router_fit_cv(x, y, 3, steps=30, folds=4, seed=1, balanced=True)
    new, new_loss, new_sel = Router.fit_cv(x, y, 3, steps=30, folds=4, seed=1, balanced=True)
    _same(new.weight, old.weight)
    _same(new.bias, old.bias)
    assert new_loss == old_loss and new_sel == old_sel


@pytest.mark.parametrize("n_classes,balance", [(2, True), (2, False), (3, True)])
def test_fit_classifier_matches_the_old_fitter(n_classes, balance):
    from alignx.eval.heads import fit_classifier

    x, y = _data(n=36, d=6, classes=n_classes, seed=n_classes)
    y = torch.where(torch.arange(36) < 6, torch.zeros_like(y), y)      # unbalanced
    fold = torch.arange(36) % 3
    subsets = {"all": None, "first": torch.tensor([0, 1, 2])}
    grid = (1e-2, 1.0)
    old, old_sel = _old_fit_classifier(x, y, fold, n_classes, subsets, balance, grid)
    new, new_sel = fit_classifier(x, y, fold, n_classes, subsets, balance, grid)
    _same_head(new, old)
    assert new_sel == old_sel


def test_fit_bradley_terry_matches_the_old_fitter():
    from alignx.eval.heads import fit_bradley_terry

    g = torch.Generator().manual_seed(6)
    xa = torch.randn(30, 5, generator=g) + torch.tensor([1.0, 0, 0, 0, 0])
    xb = torch.randn(30, 5, generator=g)
    fold = torch.arange(30) % 3
    subsets = {"all": None, "two": torch.tensor([0, 3])}
    old, old_sel = _old_fit_bradley_terry(xa, xb, fold, subsets, (1e-2, 1.0))
    new, new_sel = fit_bradley_terry(xa, xb, fold, subsets, (1e-2, 1.0))
    _same_head(new, old)
    assert new_sel == old_sel


def test_fit_stacker_matches_the_old_fitter():
    from alignx.eval.heads import fit_stacker

    x, y = _data(n=30, d=5, classes=2, seed=7)
    extra = torch.randn(30, 3, generator=torch.Generator().manual_seed(8))
    fold = torch.arange(30) % 3
    old, old_info = _old_fit_stacker(x, extra, y, fold, 0.1, torch.tensor([0, 2, 4]))
    new, new_info = fit_stacker(x, extra, y, fold, 0.1, torch.tensor([0, 2, 4]))
    _same_head(new, old)
    assert new_info == old_info


def test_minimize_runs_one_loop_for_both_optimizers():
    from alignx import probes
    from alignx.errors import InvalidInput

    x, y = _data(n=30, d=4, classes=3, seed=9)
    fit = probes.fit_linear(x, y, 3, steps=100, lr=5e-2)
    assert fit.weight.shape == (3, 4) and fit.bias.shape == (3,) and fit.extra == []
    assert (probes.linear_logits(x, fit.weight, fit.bias).argmax(1) == y).float().mean() > 0.8
    lb = probes.fit_linear(x, y, 3, optimizer="lbfgs", steps=50, lr=1.0, l2=1e-3)
    assert lb.loss < fit.loss + 0.5
    with pytest.raises(InvalidInput, match="optimizer"):
        probes.fit_linear(x, y, 3, optimizer="sgd", steps=1, lr=1.0)
    with pytest.raises(InvalidInput, match="steps"):
        probes.fit_linear(x, y, 3, steps=0, lr=1.0)


def test_cv_splits_cover_every_row_once():
    from alignx import probes

    splits = probes.kfold(23, 5, seed=3)
    tests = torch.cat([te for _, te in splits])
    assert sorted(tests.tolist()) == list(range(23))
    for tr, te in splits:
        assert not set(tr.tolist()) & set(te.tolist()) and len(tr) + len(te) == 23
    fold = torch.tensor([2, 0, 2, 1, 0])
    masks = probes.group_kfold(fold)
    assert [te.tolist() for _, te in masks] == [[False, True, False, False, True], [False, False, False, True, False],
                                                [True, False, True, False, False]]
    assert all(torch.equal(tr, ~te) for tr, te in masks)
    scores = probes.cross_validate(["a", "b"], masks, lambda c, tr, te: float(te.sum()) * (c == "b"),
                                   lambda xs: sum(xs))
    assert scores == {"a": 0.0, "b": 5.0} and probes.best(scores, tiebreak=len) == "b"
