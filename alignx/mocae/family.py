"""The ``mocae`` family: the Mixture of Calibrated Experts and its fixed-weight baselines.

Modes (listed when a trained router is loaded): ``mocae-logit`` (mixture of the experts'
calibrated next-token distributions), ``mocae-adapter`` (one adapter, sum_i w_i s_i B_i A_i).
Accepted but not listed: ``uniform-logit`` / ``uniform-adapter``, the same fusions at equal fixed
weights 1/n, the baseline a learned router must beat.

Settings: ``calibration`` (a ``Calibration``) and/or its fields ``lambda1``, ``lambda2``,
``temperature``, ``preferences``, ``per_token`` (each overrides the router card's default), and
``fixed_weights`` (n weights on the simplex: no routing).
"""
from __future__ import annotations

from alignx.errors import InvalidInput
from alignx.methods.registry import Family, Mode, register
from alignx.mocae.core import MODES

FUSIONS = dict(zip(MODES, ("logit fusion: the experts' calibrated distributions mixed by the routing weights",
                           "adapter fusion: one adapter sum_i w_i s_i B_i A_i")))
UNIFORM = {"uniform-logit": "mocae-logit", "uniform-adapter": "mocae-adapter"}
CALIBRATION_FIELDS = ("lambda1", "lambda2", "temperature", "preferences", "per_token")
SETTINGS = ("calibration", *CALIBRATION_FIELDS, "fixed_weights")


class MoCaEFamily(Family):
    name = "mocae"
    usage = "mocae-logit | mocae-adapter | uniform-logit | uniform-adapter"
    rank = 10          # the fusion is what the app is for: it opens on it when a router is loaded

    def modes(self, studio) -> list[Mode]:
        if studio.mocae is None:
            return []
        return ([Mode(m, self.name, d, settings=SETTINGS) for m, d in FUSIONS.items()]
                + [Mode(m, self.name, f"{UNIFORM[m]} at equal fixed weights", listed=False) for m in UNIFORM])

    def owns(self, mode: str) -> bool:
        return mode in FUSIONS or mode in UNIFORM

    def policy(self, studio, mode: str, **settings):
        if studio.mocae is None:
            raise InvalidInput(f"mode {mode!r} needs experts and a trained router; none is loaded "
                               f"(train one with `python -m alignx train-router`)")
        mocae = studio.mocae
        if mode in UNIFORM:
            self.no_settings(mode, settings)
            n = len(mocae.experts)
            return mocae.policy(UNIFORM[mode], fixed_weights=[1.0 / n] * n, name=mode)
        self.check_settings(mode, settings, SETTINGS)
        return mocae.policy(mode, calibration=calibration_from(mocae.calibration, settings),
                            fixed_weights=settings.get("fixed_weights"))


def calibration_from(default, settings: dict):
    """``settings['calibration']`` (or the default) with any calibration fields of ``settings`` applied."""
    from alignx.mocae.calibration import Calibration

    base = settings.get("calibration") or default
    if not isinstance(base, Calibration):
        raise InvalidInput(f"calibration must be an alignx.mocae.Calibration, got {type(base).__name__}")
    fields = {k: settings[k] for k in CALIBRATION_FIELDS if settings.get(k) is not None}
    try:
        return base.with_(**fields) if fields else base
    except TypeError as exc:
        raise InvalidInput(f"bad calibration settings {fields}: {exc}") from None


register(MoCaEFamily())
