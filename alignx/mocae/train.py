"""Train stage 2 for the experts of a Studio: router, clusters, expert temperatures; save a card."""
from __future__ import annotations

from alignx.errors import InvalidInput

import time
from dataclasses import fields
from typing import Callable

import torch

from alignx.experts.config import ExpertConfig
from alignx.experts.latent import LatentSpace, heldout_prompts, router_prompts, rows_per_source
from alignx.experts.sft import axis_data, tokenize_pair
from alignx.mocae.calibration import ece, fit_temperature
from alignx.mocae.core import MoCaE
from alignx.mocae.router import EPS, MIN_SAMPLES, Clusters, Router


def _axis_index(studio, experts: list[str], known: set[str]) -> dict[str, int]:
    """objective -> the router class (expert index) its prompts are labelled with: one class per
    objective of the experts' cards (the expert named like its axis when several serve one). Every
    objective needs routing prompts: the built-in sources (``known``) or ``extra_prompts``."""
    out = {}
    for i, name in enumerate(experts):
        axis = studio.experts[name].get("axis", name)
        if axis not in out or name == axis:
            out[axis] = i
    missing = sorted(set(out) - known)
    if missing:
        raise InvalidInput(f"no routing prompts for objective(s) {missing}: the built-in sources cover "
                           f"{sorted(known)}; pass extra_prompts={{objective: (train prompts, held-out prompts)}}")
    if len(out) < 2:
        raise InvalidInput(f"the router needs experts for at least two objectives, these serve {sorted(out)}")
    return out


def _prompts(rows: tuple[list[str], list[str]], index: dict[str, int], extra: dict[str, list[str]]):
    """Keep the prompts of the objectives the experts serve, then add ``extra``'s."""
    prompts, labels = [p for p, a in zip(*rows) if a in index], [a for a in rows[1] if a in index]
    for axis, rows_ in extra.items():
        prompts += list(rows_)
        labels += [axis] * len(rows_)
    return prompts, labels


@torch.inference_mode()
def _heldout_logits(studio, name: str, rows: int, data_dir=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Response-token logits of the expert on its axis's held-out rows (the rows of its card)."""
    card = studio.experts[name]
    hp = {k: v for k, v in card.get("hyperparameters", {}).items() if k in {f.name for f in fields(ExpertConfig)}}
    if "target_modules" in hp:
        hp["target_modules"] = tuple(hp["target_modules"])
    cfg = ExpertConfig(**hp)
    pairs = axis_data(card.get("axis", name), cfg, data_dir).heldout[:rows] if card.get("axis", name) in \
        ("helpful", "harmless", "honest") else []
    if not pairs:       # an objective without built-in data: no temperature fit (T = 1)
        return torch.zeros(0, 1), torch.zeros(0, dtype=torch.long)
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
                progress: Callable[[str], None] = lambda m: None,
                extra_prompts: dict[str, tuple[list[str], list[str]]] | None = None, sources: str = "v1",
                feature_cache: bool = False, router_dir=None, routing_eval_per_source: int = 0) -> MoCaE:
    """Fit the router, clusters and expert temperatures for the experts of ``studio`` (any number
    of objectives, two at least). ``extra_prompts`` gives (train, held-out) routing prompts for
    objectives without a built-in source (the built-in ones: helpful, harmless, honest).
    ``sources``: the prompt sources of ``alignx.experts.latent.router_prompts`` (v1 | v2);
    ``feature_cache``: encode through ``alignx.mocae.feature_cache.CachedFeatures``;
    ``router_dir``: save there instead of EXPERTS_DIR/router; ``routing_eval_per_source`` > 0:
    the card also holds ``alignx.mocae.routing_eval`` on every held-out routing set."""
    if studio.experts_dir is None or not studio.experts:
        raise InvalidInput("the Studio has no experts loaded: train experts first")
    t0 = time.time()
    extra = dict(extra_prompts or {})
    space = LatentSpace.load(studio.experts_dir)
    experts = space.experts
    index = _axis_index(studio, experts, {"helpful", "harmless", "honest"} | set(extra))
    from alignx.data.decontam import EvalIndex

    removed: dict[str, int] = {}
    eval_index = EvalIndex.build(data_dir)
    extra_train = {}
    for a, (tr, _) in extra.items():
        if a in index:
            extra_train[a], report = eval_index.filter(list(tr), f"extra:{a}")
            removed[report.source] = report.removed
    prompts, labels = _prompts(router_prompts(data_dir, per_axis, seed, removed, sources), index, extra_train)
    progress(f"encoding {len(prompts)} training prompts with {len(experts) + 1} adapters")
    cached = None
    if feature_cache:
        from alignx.mocae.feature_cache import CachedFeatures

        cached = CachedFeatures.for_space(studio, space)
    encode = (lambda ps: cached.latents(space, ps)) if cached is not None else \
        (lambda ps: space.encode(studio.model, studio.tokenizer, ps))
    z = encode(prompts)
    y = torch.tensor([index[a] for a in labels])
    router, loss, selection = Router.fit_cv(z, y, len(experts), steps=router_steps, seed=seed,
                                             balanced=balanced)
    test_prompts, test_labels = _prompts(heldout_prompts(data_dir, heldout_per_axis, seed), index,
                                         {a: list(te) for a, (_, te) in extra.items() if a in index})
    progress(f"encoding {len(test_prompts)} held-out prompts")
    z_test = encode(test_prompts)
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
        if len(targets) < 2:
            temperatures[name] = 1.0
            calibration_report[name] = {"temperature": 1.0, "note": "no held-out rows for this objective"}
            continue
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
                 "train_sources": f"alignx.experts.latent.router_prompts(sources={sources!r}): the half of each "
                                  "axis's sources the latent heads were not fitted on",
                 "rows_per_source": rows_per_source(prompts, data_dir, seed, sources),
                 "eval_prompts_removed": removed,
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
    if routing_eval_per_source > 0:
        from alignx.mocae import routing_eval as R

        progress("held-out routing evaluation per source")
        sets = R.routing_sets(data_dir, routing_eval_per_source, heldout_per_axis, seed)
        report = R.evaluate(R.mocae_weights_fn(mocae, cached), experts, sets,
                            lambda e: studio.experts[e].get("axis", e))
        card["routing_eval"] = {k: report[k] for k in ("overall", "macro_accuracy_over_sources", "per_source")}
        card["routing_eval"]["per_source_sample"] = routing_eval_per_source
    card["wall_time_s"] = round(time.time() - t0, 1)
    mocae.card = card
    mocae.save(studio.experts_dir, card, router_dir)
    return mocae
