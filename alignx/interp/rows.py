"""Held-out rows per objective, the data every interpretability analysis scores.

A ``Row`` is a prompt with the objective's target ``response`` (and, for a preference row, a
``rejected`` answer). ``objective_rows`` takes, for each of the studio's objectives that names a
built-in axis, the rows the experts held out of training (``alignx.experts.sft.axis_data(...).heldout``:
Alpaca answers for helpful, safety-tuned-llamas refusals for harmless, TruthfulQA training-half
correct answers for honest). An objective without a built-in source needs rows from the caller.
``harmful_prompts`` are held-out harmful requests (never trained on) for refusal-rate checks.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Mapping, Sequence

from alignx.errors import InvalidInput, unknown


@dataclass(frozen=True)
class Row:
    prompt: str
    response: str
    rejected: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise InvalidInput("an interpretability row needs a non-empty prompt")
        if not isinstance(self.response, str) or not self.response.strip():
            raise InvalidInput(f"row {self.prompt[:60]!r}: empty response")
        if self.rejected is not None and not self.rejected.strip():
            raise InvalidInput(f"row {self.prompt[:60]!r}: empty rejected answer")


def objective_rows(studio, n: int = 32, seed: int = 0, data_dir=None,
                   objectives: Sequence[str] | None = None) -> dict[str, list[Row]]:
    """``{objective: n held-out rows}`` for the studio's objectives (or ``objectives``) that are
    built-in axes, sampled with ``seed``; an unknown objective name is an error."""
    from alignx.data import AXES
    from alignx.experts.config import preset
    from alignx.experts.sft import axis_data

    objs = {o.name: o for o in studio.objectives}
    names = list(objs)
    wanted = list(objectives) if objectives else [n_ for n_ in names if n_ in AXES]
    out: dict[str, list[Row]] = {}
    for name in wanted:
        if name not in names:
            raise unknown("objective", name, names)
        if name not in AXES:
            raise InvalidInput(f"objective {name!r} has no built-in held-out rows; pass rows for it "
                               f"(built-in: {', '.join(AXES)})")
        hp = studio.experts.get(objs[name].expert, {}).get("hyperparameters", {})   # the expert's own held-out rows
        cfg = preset("cpu", seed=hp.get("seed"), heldout_rows=hp.get("heldout_rows"))
        held = list(axis_data(name, cfg, data_dir).heldout)
        random.Random(seed).shuffle(held)
        out[name] = [Row(p, r) for p, r in held[:n]]
    return out


def harmful_prompts(n: int = 40, seed: int = 0, data_dir=None) -> list[str]:
    """``n`` held-out harmful prompts (the harmless axis of ``experts.latent.heldout_prompts``)."""
    from alignx.experts.latent import heldout_prompts

    prompts, labels = heldout_prompts(data_dir, per_axis=min(200, max(n, 1)), seed=seed)
    return [p for p, a in zip(prompts, labels) if a == "harmless"][:n]


def as_rows(value: Mapping[str, Sequence] ) -> dict[str, list[Row]]:
    """``{objective: [Row | (prompt, response) | (prompt, chosen, rejected) | dict]}`` -> Rows,
    naming the objective and row of anything malformed."""
    out: dict[str, list[Row]] = {}
    for name, rows in value.items():
        parsed = []
        for i, r in enumerate(rows):
            try:
                if isinstance(r, Row):
                    parsed.append(r)
                elif isinstance(r, Mapping):
                    parsed.append(Row(r["prompt"], r.get("response", r.get("chosen")), r.get("rejected")))
                else:
                    parsed.append(Row(*r))
            except (KeyError, TypeError, InvalidInput) as exc:
                raise InvalidInput(f"objective {name!r}, row {i}: {exc}") from None
        if not parsed:
            raise InvalidInput(f"objective {name!r}: no rows")
        out[name] = parsed
    return out
