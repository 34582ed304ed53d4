"""NegotiaX (in progress): N objective pathways (Module I) fused per token by the Mechanistic
Alignment Circuit (Module II) at one fork layer of the base model.

- ``config``: ``NegotiaXConfig``, presets ``tiny`` / ``cpu`` / ``paper``, ``HELP``, ``VARIANTS``;
- ``circuit``: ``Circuit`` (the formulas), ``CircuitOutput``;
- ``core``: ``NegotiaX`` (active / save / load), the ``mac.*`` hook points;
- ``policy``: ``NegotiaXPolicy`` (KV-cached decode, per-token fusion weights).

Not yet here: Train_MAC, the shipped circuit, the method family and its ablation modes.
"""
from __future__ import annotations

from alignx.negotiax.config import HELP, PRESETS, VARIANTS, NegotiaXConfig, preset  # noqa: F401

__all__ = ["HELP", "PRESETS", "VARIANTS", "NegotiaXConfig", "preset"]
