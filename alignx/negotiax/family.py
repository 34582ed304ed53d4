"""The ``negotiax`` method family: one mode per trained circuit for the served base model.

Circuits live in ``assets/negotiax/<name>/`` (``studio.extras["negotiax_dir"]`` overrides): the
full model is mode ``negotiax`` (folder ``full``), every other folder (an ablation: ``module1``,
``module2``, ``frozen``, ``loo-<objective>``) is mode ``negotiax:<name>``, and the full circuit also
serves ``negotiax:without-<objective>``: the same weights with that pathway removed from the
negotiation at inference (its alpha exactly 0, the others renormalised). Only circuits whose card
names the served base model are listed. A circuit is loaded on first use and kept in
``studio.extras["negotiax"]``; its ``mac.*`` hook points exist from then on.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

from alignx.atomic import is_temporary
from alignx.errors import unknown
from alignx.methods.registry import Family, Mode, register

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "negotiax"
FULL = "full"
WITHOUT = "without-"
_LOCK = threading.Lock()


def circuits_dir(studio) -> Path:
    return Path(studio.extras.get("negotiax_dir") or ASSETS)


def mode_name(folder: str) -> str:
    return "negotiax" if folder == FULL else f"negotiax:{folder}"


def available(studio) -> dict[str, Path]:
    """``{mode: folder}`` of the trained circuits for this Studio's base model (not loaded)."""
    root, out = circuits_dir(studio), {}
    folders = sorted(root.iterdir(), key=lambda f: (f.name != FULL, f.name)) if root.is_dir() else ()
    for folder in folders:                                          # the full model first
        if is_temporary(folder):                                    # a killed save's temp folder, .work
            continue
        try:
            card = json.loads((folder / "card.json").read_text())
        except (OSError, ValueError):
            continue
        if (folder / "circuit.safetensors").is_file() and card.get("base_model") == studio.lm.name:
            out[mode_name(folder.name)] = folder
            if folder.name == FULL:
                for o in card.get("objectives") or ():
                    out[f"negotiax:{WITHOUT}{o}"] = folder
    return out


def load(studio, folder: Path):
    from alignx.negotiax.core import NegotiaX, register_points

    with _LOCK, studio.lock:
        cache = studio.extras.setdefault("negotiax", {})
        if str(folder) not in cache:
            register_points()
            cache[str(folder)] = NegotiaX.load(folder, studio.model, studio.tokenizer, studio.lm.name)
        return cache[str(folder)]


class NegotiaXFamily(Family):
    name = "negotiax"
    usage = "negotiax | negotiax:<ablation>"
    rank = 5

    def modes(self, studio) -> list[Mode]:
        def about(m: str) -> str:
            if m == "negotiax":
                return "NegotiaX: objective pathways negotiated per token"
            tail = m.split(":", 1)[1]
            if tail.startswith(WITHOUT):
                return f"NegotiaX without the {tail[len(WITHOUT):]} pathway (left out at inference)"
            return f"NegotiaX ablation {tail}"

        return [Mode(m, self.name, about(m), ablation=m != "negotiax") for m in available(studio)]

    def owns(self, mode: str) -> bool:
        return mode == "negotiax" or mode.startswith("negotiax:")

    def policy(self, studio, mode: str, **settings):
        from alignx.negotiax.policy import NegotiaXPolicy

        self.no_settings(mode, settings)
        found = available(studio)
        if mode not in found:
            raise unknown("NegotiaX mode", mode, found or [
                f"(none trained for this base model in {circuits_dir(studio)}: python -m alignx train-mac)"])
        nx = load(studio, found[mode])
        variant = "module1" if nx.card.get("variant") == "module1" else "full"   # the others differ only in training
        leave_out = list(nx.card.get("leave_out") or ())
        tail = mode.split(":", 1)[1] if ":" in mode else ""
        if tail.startswith(WITHOUT):
            leave_out.append(tail[len(WITHOUT):])
        policy = NegotiaXPolicy(nx, variant, leave_out, mode)
        policy.source = dict(nx.source)              # folder + weights hash, taken when the circuit was loaded
        return policy


register(NegotiaXFamily())
