"""Objectives are data: the names, order and colours of what the loaded experts optimise.

``objectives_of(experts)`` reads them from the experts' cards (``axis``; the expert's name when
a card has none), one per distinct name: the three standard axes first, in their usual order
(helpful, harmless, honest), then any other objective in expert order; a Studio without experts
has the three standard axes. Every consumer (sliders, router training, reports, votes, plots) iterates over
these, so a Studio with 2 or 4 experts works the same as one with 3.
"""
from __future__ import annotations

from dataclasses import dataclass

from alignx.data.records import AXES

COLORS = {"helpful": "#2563eb", "harmless": "#16a34a", "honest": "#d97706"}
PALETTE = ("#7c3aed", "#db2777", "#0891b2", "#65a30d", "#475569", "#b45309", "#be123c", "#0f766e")


@dataclass(frozen=True)
class Objective:
    name: str                  # e.g. "harmless" (the card's axis)
    expert: str | None         # the expert serving it (None: no expert loaded)
    color: str


def color_map(names) -> dict[str, str]:
    """A stable colour per name: the axis colour when the name contains a known axis, else the
    palette in order."""
    out, spare = {}, iter(PALETTE * 8)
    for name in names:
        axis = next((a for a in COLORS if a in str(name)), None)
        out[name] = COLORS[axis] if axis else next(spare)
    return out


def objectives_of(experts: dict[str, dict]) -> tuple[Objective, ...]:
    if not experts:
        colors = color_map(AXES)
        return tuple(Objective(a, None, colors[a]) for a in AXES)
    serving: dict[str, str] = {}
    for expert, card in experts.items():
        serving.setdefault(str((card or {}).get("axis") or expert), expert)
    names = [a for a in AXES if a in serving] + [n for n in serving if n not in AXES]
    colors = color_map(names)
    return tuple(Objective(n, serving[n], colors[n]) for n in names)
