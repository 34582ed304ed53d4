"""Fit the latent alignment space on the experts of a folder, evaluate it, save it."""
from __future__ import annotations

from alignx.errors import InvalidInput

import logging
import time
from pathlib import Path

import torch

from alignx.experts.io import list_experts, load_experts
from alignx.experts.latent import (CLASSES, NEGATIVE, LatentSpace, features, fit_head, heldout_prompts,
                                   nearest_centroid_accuracy, rows_per_source, train_items)
from alignx.experts.latent_map import pca_map
from alignx.generation import BASE

log = logging.getLogger(__name__)


SOURCES_TEXT = {
    "v1": "alignx.experts.latent.train_items: half of each axis's prompt sources "
          "(Alpaca + HH-RLHF helpful-base first turns; "
          "safety-tuned-llamas + BeaverTails train half; TruthfulQA train half), ",
    "v2": "alignx.experts.latent.train_items(sources='v2'): part 0 of each axis's v2 prompt sources "
          "(alignx.experts.latent.V2_SOURCES, round-robin; the held-out reserve skipped), ",
}


def _features(model, tokenizer, items, adapters, cached=None) -> torch.Tensor:
    """``features`` of ``items``; with ``cached`` (an ``alignx.mocae.feature_cache.CachedFeatures``,
    shared with routing-eval and train-router) the prompt-only items are read / written there, the
    (prompt, answer) items are encoded each time."""
    if cached is None:
        return features(model, tokenizer, items, adapters)
    items = [(x, None) if isinstance(x, str) else x for x in items]
    bare = [i for i, (_, answer) in enumerate(items) if not answer]
    rest = [i for i, (_, answer) in enumerate(items) if answer]
    parts = [(bare, cached([items[i][0] for i in bare]) if bare else None),
             (rest, features(model, tokenizer, [items[i] for i in rest], adapters) if rest else None)]
    d = next(h.shape[-1] for _, h in parts if h is not None)
    out = torch.empty(len(adapters), len(items), d)
    for rows, h in parts:
        if rows:
            out[:, rows] = h
    return out


def fit_latent_space(lm, experts_dir: str | Path, data_dir=None, seed: int = 0, per_axis: int = 150,
                     heldout_per_axis: int = 100, steps: int = 300, command: str | None = None,
                     sources: str = "v1", feature_cache: bool = False) -> dict:
    """Load every expert of ``experts_dir`` onto ``lm``, fit the heads, save, and return the report.

    ``sources``: the heads' prompt sources (``alignx.experts.latent.train_items``: v1 | v2);
    ``feature_cache``: read / write the prompts' features through the on-disk feature cache."""
    t0 = time.time()
    names = list(list_experts(experts_dir))
    if names:
        model, _ = load_experts(lm, experts_dir, names)
    else:
        raise InvalidInput(f"no experts in {experts_dir}: train them first")
    adapters = [BASE, *names]
    removed: dict[str, int] = {}
    items, labels = train_items(data_dir, per_axis, seed, removed, sources)
    test_prompts, test_labels = heldout_prompts(data_dir, heldout_per_axis, seed)
    log.info("latent features: %d train items, %d held-out prompts, %d adapters", len(items),
             len(test_prompts), len(adapters))
    cached = None
    if feature_cache:
        from alignx.mocae.feature_cache import CachedFeatures

        cached = CachedFeatures(model, lm.tokenizer, adapters, lm.name, experts_dir)
    h_train = _features(model, lm.tokenizer, items, adapters, cached)
    h_test = _features(model, lm.tokenizer, test_prompts, adapters, cached)
    y = torch.tensor([CLASSES.index(lab) for lab in labels])
    heads, report = {}, {"per_head": {}}
    base_head, protos, loss = fit_head(h_train[0], y, None, steps=steps, seed=seed)
    heads[BASE] = base_head
    report["per_head"][BASE] = {"train_loss": loss}
    for i, name in enumerate(names, start=1):
        heads[name], _, loss = fit_head(h_train[i], y, protos, steps=steps, seed=seed + i)
        report["per_head"][name] = {"train_loss": loss}
    space = LatentSpace(heads, protos, names)
    axis_rows = [i for i, lab in enumerate(labels) if lab != NEGATIVE]
    z_train = space.project(h_train[:, axis_rows])
    z_test = space.project(h_test)
    y_train = [labels[i] for i in axis_rows]
    for a, name in enumerate(adapters):
        report["per_head"][name]["heldout_nearest_centroid_accuracy"] = nearest_centroid_accuracy(
            z_train[a], y_train, z_test[a], test_labels)
        report["per_head"][name]["heldout_prototype_accuracy"] = sum(
            p == t for p, t in zip(space.classify(z_test[a]), test_labels)) / len(test_labels)
    concat_train = z_train.permute(1, 0, 2).reshape(len(axis_rows), -1)
    concat_test = z_test.permute(1, 0, 2).reshape(len(test_prompts), -1)
    report["heldout_nearest_centroid_accuracy"] = nearest_centroid_accuracy(concat_train, y_train, concat_test,
                                                                           test_labels)
    neg_rows = [i for i, lab in enumerate(labels) if lab == NEGATIVE]
    z_neg = space.project(h_train[:1, neg_rows])[0]
    report["train_negatives_nearest_prototype_misaligned"] = sum(
        c == NEGATIVE for c in space.classify(z_neg)) / max(len(neg_rows), 1)
    space.card = {
        "kind": "alignx-latent-space", "base_model": lm.name, "base_source": lm.source, "k": space.k,
        "loss": "cross-entropy over cosine similarity to shared prototypes / tau (see docs/METHOD.md)",
        "data": {"train_items": len(items), "train_per_axis": per_axis, "train_negatives": len(neg_rows),
                 "sources": sources,
                 "rows_per_source": rows_per_source([items[i][0] for i in axis_rows], data_dir, seed, sources),
                 "train_sources": SOURCES_TEXT[sources] + "negatives = BeaverTails train-half unsafe answers + TruthfulQA incorrect answers",
                 "eval_prompts_removed": removed,
                 "heldout_prompts": len(test_prompts), "heldout_per_axis": heldout_per_axis,
                 "heldout_sources": "AlpacaEval instructions; I-CoNa, I-Controversial, I-PhysicalSafetyUnsafe "
                                    "+ held-out BeaverTails half; TruthfulQA test half"},
        "steps": steps, "seed": seed, "report": report, "wall_time_s": round(time.time() - t0, 1),
        "command": command,
    }
    space.save(experts_dir)
    pca_map(z_test[0], test_labels, test_prompts, Path(experts_dir) / "latent" / "heldout_map.json")
    model.unload()
    return report
