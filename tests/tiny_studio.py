"""Deterministic tiny studios for tests: N random LoRA experts and a synthetic MoCaE router.

``make_random_experts(folder, names)`` writes N tiny experts (random, non-zero LoRA) in the
expert-folder layout; ``make_synthetic_router(folder, names)`` writes a latent space (k = 16)
and a router with random, seeded weights, so a Studio loads every mode without reading any data
or training anything: the tests of the core (modes, calibration, forward passes, the app) stay
fast and independent of ../shared/data.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

THREE = ("harmless", "helpful", "honest")


def make_random_experts(folder: Path, names: Sequence[str] = THREE, seed: int = 0,
                        layers: Sequence[int] | None = None) -> None:
    from peft import LoraConfig, get_peft_model

    from alignx.experts.io import write_json_atomic
    from alignx.models import load_model

    for i, name in enumerate(names):
        lm = load_model("tiny-random")
        torch.manual_seed(seed + i)
        cfg = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, task_type="CAUSAL_LM",
                         target_modules=["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"],
                         layers_to_transform=list(layers) if layers is not None else None)
        model = get_peft_model(lm.model, cfg)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.mul_(5.0)   # make the experts clearly different from each other
        model.save_pretrained(Path(folder) / name)
        write_json_atomic(Path(folder) / name / "card.json",
                          {"axis": name, "base_model": "tiny-random", "base_source": "tiny-random",
                           "hyperparameters": {"max_length": 64, "heldout_rows": 8}})


def make_synthetic_router(folder: Path, names: Sequence[str] = THREE, k: int = 16, d: int = 64,
                          seed: int = 0) -> None:
    """A latent space and router with seeded random weights (not trained: routing is arbitrary
    but deterministic, which is all the core's tests need)."""
    from alignx.experts.latent import CLASSES, Head, LatentSpace
    from alignx.generation import BASE
    from alignx.mocae.calibration import Calibration
    from alignx.mocae.core import MoCaE
    from alignx.mocae.router import Clusters, Router

    g = torch.Generator().manual_seed(seed)
    heads = {a: Head(torch.randn(k, d, generator=g) / d ** 0.5, torch.zeros(k), torch.zeros(d), torch.ones(d))
             for a in (BASE, *names)}
    protos = torch.nn.functional.normalize(torch.randn(len(CLASSES), k, generator=g), dim=-1)
    space = LatentSpace(heads, protos, list(names), {"synthetic": True})
    space.save(folder)
    n = len(names)
    router = Router(torch.randn(n, (1 + n) * k, generator=g) * 2.0, torch.zeros(n))
    centers = torch.nn.functional.normalize(torch.randn(4, k, generator=g), dim=-1)
    clusters = Clusters(centers, torch.tensor([0, 0, 1, 1]), torch.softmax(torch.randn(2, n, generator=g), -1), 0.9)
    temps = {e: 1.0 + 0.1 * i for i, e in enumerate(names)}
    MoCaE(None, None, space, router, clusters, temps, {}, Calibration()).save(folder, {"synthetic": True})


def build(folder: Path, names: Sequence[str] = THREE, router: bool = True) -> Path:
    make_random_experts(folder, names)
    if router:
        make_synthetic_router(folder, names)
    return folder
