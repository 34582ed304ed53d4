"""``Studio``: one loaded base model, its experts, the MoCaE router, and the objectives they serve.

Modes and policies come from the method families (``alignx.methods``): ``studio.modes()`` and
``studio.policy(mode, **settings)`` are shortcuts for ``methods.modes(studio)`` and
``methods.policy(studio, mode, **settings)``. A new family needs no change here.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from alignx.experts.io import DEFAULT_EXPERTS_DIR, ExpertError, list_experts, load_experts
from alignx.generation import model_lock
from alignx.models import DEFAULT_MODEL, LoadedModel, load_model
from alignx.objectives import Objective, objectives_of
from alignx.policy import Policy

log = logging.getLogger(__name__)


@dataclass
class Studio:
    lm: LoadedModel
    model: object                       # the peft model holding every expert, or the base model
    experts: dict[str, dict] = field(default_factory=dict)   # name -> card
    experts_dir: Path | None = None
    mocae: object | None = None         # alignx.mocae.MoCaE once a router is loaded
    extras: dict = field(default_factory=dict)   # what other method families attach (by family name)

    @classmethod
    def load(cls, model: str = DEFAULT_MODEL, experts_dir: str | os.PathLike | None = DEFAULT_EXPERTS_DIR,
             device=None, dtype=None, with_router: bool = True) -> "Studio":
        lm = load_model(model, device=device, dtype=dtype)
        studio = cls(lm, lm.model)
        if experts_dir is not None and list_experts(experts_dir):
            try:
                studio.model, studio.experts = load_experts(lm, experts_dir)
                studio.experts_dir = Path(experts_dir)
            except ExpertError as exc:
                if Path(experts_dir).resolve() != DEFAULT_EXPERTS_DIR.resolve():
                    raise
                log.warning("shipped experts not loaded: %s", exc)
        if with_router and studio.experts:
            from alignx.mocae import load_mocae_if_present

            studio.mocae = load_mocae_if_present(studio)
        return studio

    @property
    def tokenizer(self):
        return self.lm.tokenizer

    @property
    def lock(self) -> threading.RLock:
        """The model's one lock (``alignx.generation.model_lock``), held around every forward pass."""
        return model_lock(self.model)

    @property
    def objectives(self) -> tuple[Objective, ...]:
        """The objectives the loaded experts serve, in expert order (names from their cards'
        ``axis``), each with a plot colour; without experts, the three default axes."""
        return objectives_of(self.experts)

    def modes(self, include_unlisted: bool = False) -> list[str]:
        from alignx import methods

        return methods.modes(self, include_unlisted)

    def policy(self, mode: str, **settings) -> Policy:
        from alignx import methods

        return methods.policy(self, mode, **settings)

    def add_expert(self, folder: str | os.PathLike, name: str | None = None) -> str:
        """Load an expert folder onto the served model as adapter ``name`` (default: the folder's
        name), checking its card and base model first; returns the name. The MoCaE router keeps the
        experts it was trained for (a new expert is a mode of its own, not a router input)."""
        from alignx.experts.io import add_expert

        with self.lock:
            self.model, name, card = add_expert(self.lm, self.model, Path(folder), name, set(self.experts))
            self.experts[name] = card
        return name
