"""Shared by the app tests (no tests here): tiny experts on disk and an in-process server.

The experts are random LoRA adapters of the ``tiny-random`` model, one per axis, saved in
the standard layout (peft adapter + ``card.json``), so the app shows four columns without
any training. Their weights are random: they only make the modes differ.
``fit_tiny_router`` adds the latent space and a MoCaE router fitted on a few rows with the
real stage-1/2 code (about 15 s), so the routing panel, the fused modes and their endpoints are
tested end to end on the tiny model; its routing quality means nothing.
"""
from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

AXES = ("helpful", "harmless", "honest")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ForwardCounter:
    """Counts the served model's forward passes (a pre-hook on the base model, installed through
    ``alignx.hooks``) and can slow each one down so a generation outlasts a click. Use it as a
    context manager, or ``start()`` / ``close()`` (idempotent)."""

    def __init__(self, model, delay: float = 0.0):
        from contextlib import ExitStack

        self.model = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.passes, self.delay, self._stack = 0, delay, ExitStack()

    def _pre(self, module, args):
        self.passes += 1
        if self.delay:
            time.sleep(self.delay)

    def start(self) -> "ForwardCounter":
        from alignx.hooks import module_hook

        self._stack.enter_context(module_hook(self.model, self._pre, kind="pre"))
        return self

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> "ForwardCounter":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


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


def fit_tiny_router(root: Path) -> Path:
    """The latent space (with its held-out map) and a MoCaE router for the tiny experts in ``root``,
    fitted on a few rows per axis with the real stage-1/2 code (``alignx.experts``, ``alignx.mocae``)."""
    from alignx.experts.latent_fit import fit_latent_space
    from alignx.mocae.train import train_mocae
    from alignx.models import load_model
    from alignx.studio import Studio

    fit_latent_space(load_model("tiny-random"), root, per_axis=10, heldout_per_axis=5, steps=40)
    studio = Studio.load("tiny-random", root, with_router=False)
    train_mocae(studio, None, per_axis=10, heldout_per_axis=5, router_steps=60, temperature_rows=4)
    return root


@pytest.fixture(scope="session")
def tiny_experts(tmp_path_factory) -> Path:
    return fit_tiny_router(make_tiny_experts(tmp_path_factory.mktemp("experts")))


def make_tiny_circuit(studio, root: Path) -> Path:
    """A NegotiaX circuit for the tiny model, trained 2 steps (mode ``negotiax``), in ``root/full``."""
    from alignx.negotiax import preset
    from alignx.negotiax.core import NegotiaX
    from alignx.negotiax.train import train_mac, train_preset

    data = {a: [(f"Question {i} about {a}?", f"An answer about {a}, number {i}.") for i in range(4)] for a in AXES}
    nx = NegotiaX.fresh(studio.model, studio.tokenizer, AXES, preset("tiny"))
    train_mac(nx, data, nx.cfg, train_preset("tiny", steps=2), root, name="full", base_model=studio.lm.name)
    return root


@pytest.fixture(scope="session")
def tiny_app(tiny_experts, tmp_path_factory):
    """The app on tiny-random + three tiny experts, served in this process. Yields its URL and context."""
    from alignx.arena import VoteStore
    from alignx.studio import Studio
    from app.context import AppContext
    from app.ui import build_demo, launch

    studio = Studio.load("tiny-random", tiny_experts, device="cpu")
    assert studio.mocae is not None, "the tiny router was not loaded"
    studio.extras["negotiax_dir"] = make_tiny_circuit(studio, tmp_path_factory.mktemp("negotiax"))
    ctx = AppContext(studio, VoteStore(tmp_path_factory.mktemp("votes") / "votes.sqlite"),
                     runs_dir=tmp_path_factory.mktemp("runs"))
    demo = build_demo(ctx)
    _, url, _ = launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                       quiet=True, share=False)
    yield url, ctx
    demo.close()
