"""Shared by the app tests (no tests here): tiny experts on disk and an in-process server.

The experts are random LoRA adapters of the ``tiny-random`` model, one per axis, saved in
the standard layout (peft adapter + ``card.json``), so the app shows four columns without
any training. Their weights are random: they only make the modes differ.

``FakeMoCaE`` stands in for ``alignx.mocae.MoCaE`` (same public face: ``route``,
``recalibrate``, ``policy``) so the routing panel and its endpoints are tested end to end on
the tiny model; its numbers are made up from the prompt's hash and mean nothing.
"""
from __future__ import annotations

import json
import math
import random
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

AXES = ("helpful", "harmless", "honest")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CountingLock:
    """Stands in for the app's model lock (``AppContext.model_lock``), taken once per forward
    pass: counts the passes, and can slow each one down so a generation outlasts a click."""

    def __init__(self, delay: float = 0.0):
        self.lock, self.passes, self.delay = threading.Lock(), 0, delay

    def __enter__(self):
        self.lock.acquire()
        self.passes += 1
        if self.delay:
            time.sleep(self.delay)

    def __exit__(self, *exc):
        self.lock.release()


def make_tiny_experts(root: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model

    from alignx.tiny import tiny_model

    for i, axis in enumerate(AXES):
        model, _ = tiny_model()
        torch.manual_seed(i)
        peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                      init_lora_weights=False))
        folder = root / axis
        peft_model.save_pretrained(folder)
        (folder / "card.json").write_text(json.dumps({"axis": axis, "base_model": "tiny-random",
                                                      "base_source": "tiny-random"}))
    return root


K_FAKE = 8    # latent size of the fake map and routes


@dataclass
class FakeRoute:
    probabilities: dict
    router_probabilities: dict
    cluster: int
    latent: list
    settings: dict


class FakeMoCaE:
    """route: softmax of hash-derived logits; recalibrate: w = l1 * softmax(logits / T) + l2 * prefs
    (normalized), from the cached logits only; policy: an expert's answer with per-token weights."""

    def __init__(self, studio):
        self.studio, self.names = studio, list(studio.experts)
        self.logits, self.latent, self.routes = None, None, 0

    def route(self, prompt: str) -> FakeRoute:
        self.routes += 1
        rng = random.Random(prompt)
        self.logits = [rng.uniform(-2, 2) for _ in self.names]
        self.latent = [rng.uniform(-1, 1) for _ in range(3 * K_FAKE)]
        return self.recalibrate(0.6, 0.4, 1.0, {n: 1 / 3 for n in self.names})

    def recalibrate(self, lambda1, lambda2, temperature, preferences) -> FakeRoute:
        if self.logits is None:
            raise RuntimeError("route first")
        exps = [math.exp(v / temperature) for v in self.logits]
        router = {n: e / sum(exps) for n, e in zip(self.names, exps)}
        total = sum(preferences.values()) or 1.0
        mix = {n: lambda1 * router[n] + lambda2 * preferences.get(n, 0) / total for n in self.names}
        norm = sum(mix.values()) or 1.0
        return FakeRoute({n: v / norm for n, v in mix.items()}, router, int(self.logits[0] > 0),
                         list(self.latent), {"lambda1": lambda1, "lambda2": lambda2, "temperature": temperature,
                                             "preferences": dict(preferences)})

    def policy(self, mode, calibration=None):
        from alignx.policy import SinglePolicy

        names = self.names

        class Routed(SinglePolicy):
            def stream(self, prompt, sampling=None, stop=None):
                for i, ev in enumerate(super().stream(prompt, sampling, stop)):
                    w = [1.0 + ((i + j) % 3) for j in range(len(names))]
                    ev.weights = {n: x / sum(w) for n, x in zip(names, w)}
                    yield ev

        policy = Routed(self.studio.model, self.studio.tokenizer, names[0])
        policy.name = mode
        return policy


def write_fake_map(experts: Path) -> None:
    rng = random.Random(0)
    points = [{"x": rng.gauss(i, 0.5), "y": rng.gauss(-i, 0.5), "axis": a, "prompt": f"{a} prompt {j}"}
              for i, a in enumerate(AXES) for j in range(12)]
    (experts / "latent").mkdir(exist_ok=True)
    (experts / "latent" / "heldout_map.json").write_text(json.dumps({
        "mean": [0.0] * K_FAKE, "components": [[1.0] + [0.0] * (K_FAKE - 1), [0.0, 1.0] + [0.0] * (K_FAKE - 2)],
        "explained_variance": [0.4, 0.2], "points": points}))


@pytest.fixture(scope="session")
def tiny_experts(tmp_path_factory) -> Path:
    root = make_tiny_experts(tmp_path_factory.mktemp("experts"))
    write_fake_map(root)
    return root


@pytest.fixture(scope="session")
def tiny_app(tiny_experts, tmp_path_factory):
    """The app on tiny-random + three tiny experts, served in this process. Yields its URL and context."""
    from alignx.arena import VoteStore
    from alignx.studio import Studio
    from app.context import AppContext
    from app.ui import build_demo, launch

    studio = Studio.load("tiny-random", tiny_experts, device="cpu")
    studio.mocae = FakeMoCaE(studio)
    ctx = AppContext(studio, VoteStore(tmp_path_factory.mktemp("votes") / "votes.sqlite"),
                     runs_dir=tmp_path_factory.mktemp("runs"))
    demo = build_demo(ctx)
    _, url, _ = launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                       quiet=True, share=False)
    yield url, ctx
    demo.close()
