"""Stage 2: Mixture of Calibrated Experts (router, calibration, clusters, fused decoding).

``MoCaE.route(prompt, calibration)`` -> ``RouteResult``; ``recalibrate(route, calibration)``, a pure
function of a route (no model run);
``policy("mocae-logit" | "mocae-adapter")``; ``train_mocae(studio)`` fits and saves the router.
"""
from __future__ import annotations

import logging

from alignx.mocae.calibration import Calibration, ece, expert_weights, fit_temperature
from alignx.mocae.core import MODES, MoCaE, MoCaEPolicy, RouteResult, recalibrate
from alignx.mocae.fusion import FUSED, FusedAdapter
from alignx.mocae.router import EPS, Clusters, Router

log = logging.getLogger(__name__)

__all__ = ["Calibration", "Clusters", "EPS", "FUSED", "FusedAdapter", "MODES", "MoCaE", "MoCaEPolicy", "Router",
           "RouteResult", "ece", "recalibrate", "expert_weights", "fit_temperature", "load_mocae_if_present"]


def load_mocae_if_present(studio) -> MoCaE | None:
    """The MoCaE of ``studio``'s experts folder when a trained router is saved there, else None."""
    if studio.experts_dir is None or not (studio.experts_dir / "router" / "card.json").exists():
        return None
    try:
        return MoCaE.load(studio.model, studio.tokenizer, studio.experts_dir)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        log.warning("router in %s not loaded: %s", studio.experts_dir / "router", exc)
        return None
