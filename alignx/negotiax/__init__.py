"""NegotiaX: N objective pathways (Module I, depth m >= 0) fused per token by the Mechanistic
Alignment Circuit (Module II) at one fork layer of the base model.

- ``config``: ``NegotiaXConfig``, presets ``tiny`` / ``cpu`` / ``paper``, ``HELP``, ``VARIANTS``;
- ``circuit``: ``Circuit`` (the formulas), ``CircuitOutput``;
- ``pathways``: pathways of depth m > 0 (their own low-rank updates above the fork);
- ``core``: ``NegotiaX`` (active / save / load), the ``mac.*`` hook points;
- ``policy``: ``NegotiaXPolicy`` (KV-cached and batched decoding, per-token fusion weights);
- ``train``: Train_MAC; ``ablate``: the ablation table; ``family``: the ``negotiax`` modes.
"""
from __future__ import annotations

from alignx.negotiax.config import HELP, PRESETS, VARIANTS, NegotiaXConfig, preset  # noqa: F401

__all__ = ["HELP", "PRESETS", "VARIANTS", "NegotiaXConfig", "preset"]
