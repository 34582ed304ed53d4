"""``Studio``: one loaded base model, its experts, and the policies (modes) built on them.

Modes: ``base``, ``expert:NAME``, ``mocae-logit``, ``mocae-adapter`` (the last two need a
trained router, see ``alignx.mocae``). The CLI, the app and the evaluation harness all get
their policies here.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from alignx.experts.io import DEFAULT_EXPERTS_DIR, ExpertError, list_experts, load_experts
from alignx.models import DEFAULT_MODEL, LoadedModel, load_model
from alignx.policy import Policy, SinglePolicy

log = logging.getLogger(__name__)
FUSION_MODES = ("mocae-logit", "mocae-adapter")


@dataclass
class Studio:
    lm: LoadedModel
    model: object                       # the peft model holding every expert, or the base model
    experts: dict[str, dict] = field(default_factory=dict)   # name -> card
    experts_dir: Path | None = None
    mocae: object | None = None         # alignx.mocae.MoCaE once a router is loaded

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

    def modes(self) -> list[str]:
        out = ["base"] + [f"expert:{n}" for n in self.experts]
        return out + list(FUSION_MODES) if self.mocae is not None else out

    def policy(self, mode: str) -> Policy:
        if mode == "base":
            return SinglePolicy(self.model, self.tokenizer)
        if mode.startswith("expert:"):
            name = mode.split(":", 1)[1]
            if name not in self.experts:
                raise ValueError(f"unknown expert {name!r}; loaded experts: {sorted(self.experts) or 'none'}")
            return SinglePolicy(self.model, self.tokenizer, name)
        if mode in FUSION_MODES:
            if self.mocae is None:
                raise ValueError(f"mode {mode!r} needs experts and a trained router; none is loaded "
                                 f"(train one with `python -m alignx train-router`)")
            return self.mocae.policy(mode)
        raise ValueError(f"unknown mode {mode!r}; choose from {self.modes()}")
