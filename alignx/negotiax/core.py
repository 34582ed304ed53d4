"""A NegotiaX model: one base model, a trained ``Circuit`` at its fork layer, and its policies.

The circuit is put in the forward pass only while a NegotiaX policy runs (``NegotiaX.active``: a
forward hook through ``alignx.hooks.module_hook`` on the fork layer's ``self_attn``, adding
MAC(a) to its output, under the model's lock), so the base and the experts served by the same
model never see it. KV-cached decoding stays exact: the circuit acts per token on the attention
output, so a cached step computes the same as the full forward (tested). Hook points:
``mac.weights`` (B, T, H, N), ``mac.pathways`` (B, T, N, r) and ``mac.out`` (B, T, d), fired
while the circuit is active.
"""
from __future__ import annotations

import hashlib
import json
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import torch

from alignx.errors import InvalidInput, MissingFile
from alignx.negotiax.circuit import Circuit
from alignx.negotiax.config import NegotiaXConfig

KIND = "alignx-negotiax"
_BY_MODEL: "weakref.WeakKeyDictionary[torch.nn.Module, NegotiaX]" = weakref.WeakKeyDictionary()


def _root(model):
    from alignx.hooks import _unwrap

    return _unwrap(model)


class NegotiaX:
    def __init__(self, model, tokenizer, circuit: Circuit, fork: int, cfg: NegotiaXConfig, card: dict | None = None):
        from alignx.hooks import backbone

        body = backbone(model)
        n_layers, hidden = len(body.layers), int(body.config.hidden_size)
        cfg.check(hidden, n_layers)
        if not 0 <= fork < n_layers:
            raise InvalidInput(f"fork layer {fork} out of range: the model has layers 0..{n_layers - 1}")
        self.model, self.tokenizer, self.circuit, self.fork, self.cfg = model, tokenizer, circuit, fork, cfg
        self.card = card or {}
        self.source: dict | None = None      # set by load(): its folder and weights hash (eval's run record)
        p = next(model.parameters())
        circuit.to(p.device)
        _BY_MODEL[_root(model)] = self
        register_points()                       # idempotent: the mac.* points resolve for this model

    @classmethod
    def fresh(cls, model, tokenizer, objectives: Sequence[str], cfg: NegotiaXConfig) -> "NegotiaX":
        """An untrained NegotiaX (W_o = 0, b_o = 0: exactly the base)."""
        from alignx.hooks import backbone

        body = backbone(model)
        hidden, n_layers = int(body.config.hidden_size), len(body.layers)
        cfg.check(hidden, n_layers)
        fork = cfg.fork(n_layers)
        return cls(model, tokenizer, Circuit(hidden, objectives, cfg, _shapes(model, fork, cfg)), fork, cfg)

    @property
    def objectives(self) -> tuple[str, ...]:
        return self.circuit.objectives

    @contextmanager
    def active(self, variant: str = "full", leave_out: Sequence[str] | None = None, force: str | None = None,
               record: list | None = None) -> Iterator[None]:
        """The circuit in the fork layer's attention output for the block; ``record`` collects each
        pass's last-token fusion weights averaged over heads, (B, N)."""
        from alignx.generation import model_lock
        from alignx.hooks import backbone, module_hook

        self.circuit.index(leave_out)
        if force is not None:
            self.circuit.index([force])
        attn = backbone(self.model).layers[self.fork].self_attn

        def fn(module, args, output):
            a = output[0] if isinstance(output, tuple) else output
            res = self.circuit(a, variant, leave_out, force)
            if record is not None:
                record.append(res.weights[:, -1].mean(1).detach().float().cpu())
            new = a + res.delta
            return (new, *output[1:]) if isinstance(output, tuple) else new

        if self.cfg.depth > 0:
            from alignx.negotiax.pathways import forked

            with model_lock(self.model), forked(self, variant, leave_out, force, record):
                yield
            return
        with model_lock(self.model), module_hook(attn, fn):
            yield

    # --- files -----------------------------------------------------------------------------
    def save(self, folder: str | Path, extra: dict | None = None) -> Path:
        from alignx.atomic import replace_dir, save_safetensors, write_json

        folder = Path(folder)
        card = {"kind": KIND, "objectives": list(self.objectives), "fork_layer": self.fork,
                "config": self.cfg.to_dict(), "parameters": self.circuit.n_parameters(), **(extra or {})}
        with replace_dir(folder) as tmp:
            save_safetensors(tmp / "circuit.safetensors", {k: v.detach().cpu().contiguous()
                                                           for k, v in self.circuit.state_dict().items()})
            write_json(tmp / "card.json", card)
        self.card = card
        return folder

    @classmethod
    def load(cls, folder: str | Path, model, tokenizer, base_model: str | None = None) -> "NegotiaX":
        from safetensors.torch import load as safetensors_load

        folder = Path(folder)
        card_path, weights = folder / "card.json", folder / "circuit.safetensors"
        if not card_path.is_file() or not weights.is_file():
            raise MissingFile(f"{folder}: not a NegotiaX folder (needs card.json and circuit.safetensors)")
        try:
            card = json.loads(card_path.read_text())
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{card_path}: not valid JSON ({exc})") from None
        if card.get("kind") != KIND:
            raise InvalidInput(f"{card_path}: kind {card.get('kind')!r}, expected {KIND!r}")
        if base_model and card.get("base_model") and card["base_model"] != base_model:
            raise InvalidInput(f"{folder}: trained for {card['base_model']!r}, not {base_model!r}")
        cfg = NegotiaXConfig(**card["config"])
        from alignx.hooks import backbone

        body = backbone(model)
        hidden = int(body.config.hidden_size)
        fork = int(card["fork_layer"])
        cfg.check(hidden, len(body.layers))
        circuit = Circuit(hidden, card["objectives"], cfg, _shapes(model, fork, cfg))
        raw = weights.read_bytes()                     # read once: the tensors and their hash
        try:
            circuit.load_state_dict(safetensors_load(raw))
        except RuntimeError as exc:
            raise InvalidInput(f"{weights}: does not fit this model ({str(exc).splitlines()[0]})") from None
        nx = cls(model, tokenizer, circuit, fork, cfg, card)
        nx.source = {"circuit": str(folder), "circuit_sha256": hashlib.sha256(raw).hexdigest()[:16]}
        return nx


def _shapes(model, fork: int, cfg: NegotiaXConfig) -> dict | None:
    from alignx.negotiax.pathways import pathway_shapes

    return pathway_shapes(model, fork, cfg.depth) if cfg.depth > 0 else None


def attached(model) -> "NegotiaX | None":
    """The NegotiaX built on ``model`` (peft wrapper or not), if any (for the ``mac.*`` points)."""
    return _BY_MODEL.get(_root(model))


def _resolve(model, name: str):
    from alignx.hooks import Point

    nx = attached(model)
    taps = {"mac.weights": "tap_weights", "mac.pathways": "tap_pathways", "mac.out": "tap_out"}
    if nx is None or name not in taps:
        return None
    return Point(getattr(nx.circuit, taps[name]))


def _names(model) -> list[str]:
    return ["mac.weights", "mac.pathways", "mac.out"] if attached(model) is not None else []


def register_points() -> None:
    from alignx.hooks import register_points as reg

    reg("mac", _resolve, _names, replace=True)
