"""Train stage 2 for the experts of a Studio: router, clusters, expert temperatures; save a card."""
from __future__ import annotations

import time
from dataclasses import fields
from typing import Callable

import torch

from alignx.experts.config import ExpertConfig
from alignx.experts.latent import LatentSpace, heldout_prompts, router_prompts
from alignx.experts.sft import axis_data, tokenize_pair
from alignx.mocae.calibration import ece, fit_temperature
from alignx.mocae.core import MoCaE
from alignx.mocae.router import EPS, MIN_SAMPLES, Clusters, Router


def _axis_index(studio, experts: list[str]) -> dict[str, int]:
    out = {}
    for i, name in enumerate(experts):
        axis = studio.experts[name].get("axis", name)
        if axis not in out or name == axis:
            out[axis] = i
    missing = [a for a in ("helpful", "harmless", "honest") if a not in out]
    if missing:
        raise ValueError(f"no expert for axis {missing}: the router needs one expert per axis")
    return out


@torch.inference_mode()
def _heldout_logits(studio, name: str, rows: int, data_dir=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Response-token logits of the expert on its axis's held-out rows (the rows of its card)."""
    card = studio.experts[name]
    hp = {k: v for k, v in card.get("hyperparameters", {}).items() if k in {f.name for f in fields(ExpertConfig)}}
    if "target_modules" in hp:
        hp["target_modules"] = tuple(hp["target_modules"])
    cfg = ExpertConfig(**hp)
    pairs = axis_data(card.get("axis", name), cfg, data_dir).heldout[:rows]
    logits, targets = [], []
    for prompt, response in pairs:
        ex = tokenize_pair(studio.tokenizer, prompt, response, cfg.max_length)
        ids = torch.tensor([ex["input_ids"]], device=studio.lm.device)
        out = studio.model(input_ids=ids, adapter_names=[name]).logits[0, :-1].float().cpu()
        labels = torch.tensor(ex["labels"][1:])
        keep = labels != -100
        logits.append(out[keep])
        targets.append(labels[keep])
    return torch.cat(logits), torch.cat(targets)


def train_mocae(studio, data_dir=None, per_axis: int = 250, heldout_per_axis: int = 100, router_steps: int = 300,
                temperature_rows: int = 24, eps: float = EPS, min_samples: int = MIN_SAMPLES, seed: int = 0,
                balanced: bool = False, command: str | None = None,
                progress: Callable[[str], None] = lambda m: None) -> MoCaE:
    if studio.experts_dir is None or not studio.experts:
        raise ValueError("the Studio has no experts loaded: train experts first")
    t0 = time.time()
    space = LatentSpace.load(studio.experts_dir)
    experts = space.experts
    index = _axis_index(studio, experts)
    prompts, labels = router_prompts(data_dir, per_axis, seed)
    progress(f"encoding {len(prompts)} training prompts with {len(experts) + 1} adapters")
    z = space.encode(studio.model, studio.tokenizer, prompts)
    y = torch.tensor([index[a] for a in labels])
    router, loss, selection = Router.fit_cv(z, y, len(experts), steps=router_steps, seed=seed,
                                             balanced=balanced)
    progress(f"encoding {3 * heldout_per_axis} held-out prompts")
    test_prompts, test_labels = heldout_prompts(data_dir, heldout_per_axis, seed)
    z_test = space.encode(studio.model, studio.tokenizer, test_prompts)
    y_test = torch.tensor([index[a] for a in test_labels])
    pred = router.logits(z_test).argmax(-1)
    confusion = torch.zeros(len(experts), len(experts), dtype=torch.long)
    for t, p in zip(y_test.tolist(), pred.tolist()):
        confusion[t, p] += 1
    k = space.k
    clusters = Clusters.fit(z[:, :k], y, len(experts), eps, min_samples)
    test_clusters = clusters.assign(z_test[:, :k])
    contents = {}
    for c in sorted(set(test_clusters)):
        members = [i for i, tc in enumerate(test_clusters) if tc == c]
        contents[str(c)] = {"size": len(members),
                            "axes": {a: sum(test_labels[i] == a for i in members) for a in index},
                            "examples": [test_prompts[i][:120] for i in members[:3]]}
    temperatures, calibration_report = {}, {}
    for name in experts:
        progress(f"temperature scaling of {name}")
        logits, targets = _heldout_logits(studio, name, temperature_rows, data_dir)
        half = len(targets) // 2
        temp = fit_temperature(logits[:half], targets[:half])
        temperatures[name] = temp
        calibration_report[name] = {"temperature": temp, "fit_tokens": half, "eval_tokens": len(targets) - half,
                                    "ece_before": ece(logits[half:], targets[half:]),
                                    "ece_after": ece(logits[half:], targets[half:], temp)}
    mocae = MoCaE(studio.model, studio.tokenizer, space, router, clusters, temperatures)
    card = {
        "kind": "alignx-mocae-router", "base_model": studio.lm.name, "router_shape": list(router.weight.shape),
        "router_train_loss": loss, "router_selection": selection, "min_samples": min_samples,
        "data": {"train_prompts": len(prompts), "train_per_axis": {a: labels.count(a) for a in index},
                 "train_sources": "alignx.experts.latent.router_prompts: the half of each axis's sources the "
                                  "latent heads were not fitted on",
                 "heldout_prompts": len(test_prompts), "per_axis": per_axis, "class_balanced": balanced,
                 "heldout_per_axis": heldout_per_axis},
        "heldout": {"routing_accuracy": float((pred == y_test).float().mean()),
                    "confusion_matrix": {"rows_true_cols_pred": experts, "counts": confusion.tolist()},
                    "clusters_train": clusters.n_clusters,
                    "clusters_hit_by_heldout": len({c for c in test_clusters if c >= 0}),
                    "heldout_novel_share": sum(c < 0 for c in test_clusters) / len(test_clusters),
                    "cluster_contents": contents},
        "calibration": mocae.calibration.to_dict(), "expert_calibration": calibration_report,
        "wall_time_s": round(time.time() - t0, 1), "command": command,
    }
    mocae.card = card
    mocae.save(studio.experts_dir, card)
    return mocae
