"""Pareto front over (helpful, harmless, honest) and its plotly figure.

Objectives, all maximized and in [0, 1]: helpful = win rate, harmless = 1 - safety score,
honest = TI. A point dominates another when it is >= on every objective and > on at least one.
"""
from __future__ import annotations

from typing import Sequence

OBJECTIVES = ("helpful", "harmless", "honest")
ANCHOR_STYLE = {            # kind -> (marker symbol, color, legend name)
    "mocae": ("circle", "#1f77b4", "MoCaE setting"),
    "base": ("diamond", "#000000", "base"),
    "expert": ("square", "#d62728", "single expert"),
    "uniform-merge": ("cross", "#2ca02c", "uniform merge"),
}


def objectives_from_report(report: dict) -> dict[str, float | None]:
    s = report["safety_score"]["value"]
    return {"helpful": report["win_rate"]["value"], "harmless": None if s is None else 1.0 - s,
            "honest": report["ti"]["value"]}


def dominates(a: dict, b: dict, keys: Sequence[str] = OBJECTIVES) -> bool:
    return all(a[k] >= b[k] for k in keys) and any(a[k] > b[k] for k in keys)


def pareto_front(points: Sequence[dict], keys: Sequence[str] = OBJECTIVES) -> list[int]:
    """Indices of the non-dominated points (points with a missing objective are left out);
    duplicates of a front point are all on the front."""
    ok = [i for i, p in enumerate(points) if all(p.get(k) is not None for k in keys)]
    return [i for i in ok if not any(dominates(points[j], points[i], keys) for j in ok if j != i)]


def pareto_figure(points: Sequence[dict], front: Sequence[int], title: str = "MoCaE calibration sweep"):
    """3-D scatter: every point by kind (MoCaE settings, base, experts, uniform merge), front points
    drawn larger and ringed, hover text with each point's label and settings."""
    import plotly.graph_objects as go

    fig = go.Figure()
    front_set = set(front)
    for kind, (symbol, color, name) in ANCHOR_STYLE.items():
        idx = [i for i, p in enumerate(points) if p.get("kind") == kind and
               all(p.get(k) is not None for k in OBJECTIVES)]
        if not idx:
            continue
        fig.add_trace(go.Scatter3d(
            x=[points[i]["helpful"] for i in idx], y=[points[i]["harmless"] for i in idx],
            z=[points[i]["honest"] for i in idx], mode="markers", name=name,
            text=[f"{points[i]['label']}{' (Pareto)' if i in front_set else ''}<br>{points[i].get('settings') or ''}"
                  for i in idx],
            hoverinfo="text+x+y+z",
            marker=dict(symbol=symbol, color=color, size=[9 if i in front_set else 5 for i in idx])))
    if front:
        fig.add_trace(go.Scatter3d(x=[points[i]["helpful"] for i in front], y=[points[i]["harmless"] for i in front],
                                   z=[points[i]["honest"] for i in front], mode="markers", name="Pareto front",
                                   marker=dict(size=13, color="rgba(0,0,0,0)", line=dict(width=2, color="#ff7f0e")),
                                   hoverinfo="skip"))
    fig.update_layout(title=title, scene=dict(xaxis_title="helpful (win rate)", yaxis_title="harmless (1 - safety)",
                                              zaxis_title="honest (TI)"), legend=dict(itemsizing="constant"))
    return fig
