"""Pure helpers of the Playground's routing panel (no gradio, no model): the routing chart,
the latent-map figure, the per-token routing weights as HTML, and JSON views of a route.

A *route* is what ``MoCaE.route`` / ``MoCaE.recalibrate`` return (``RouteResult``): calibrated
``probabilities`` (expert -> p), the router's own ``router_probabilities``, the prompt's
``cluster``, its ``latent`` vector and the ``settings`` used. These functions only read those
attributes, so tests can pass any object that has them.
"""
from __future__ import annotations

import html
import math
from dataclasses import asdict, is_dataclass
from typing import Any, Sequence

from alignx.objectives import COLORS, color_map

AXIS_COLORS = COLORS           # one colour per objective, shared with the library's own plots
expert_colors = color_map      # a stable colour per expert: the axis colour when the name contains an axis


def jsonable(value: Any) -> Any:
    """Plain JSON types for the API (dataclasses, tensors and numpy values included)."""
    if is_dataclass(value) and not isinstance(value, type):
        return jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def route_summary(route, prompt: str = "", server_ms: float | None = None) -> dict:
    """The JSON answer of ``/route`` and ``/recalibrate``."""
    out = {"prompt": prompt,
           "probabilities": {k: round(float(v), 6) for k, v in route.probabilities.items()},
           "router_probabilities": {k: round(float(v), 6) for k, v in route.router_probabilities.items()},
           "cluster": jsonable(route.cluster),
           "settings": jsonable(route.settings)}
    for extra in ("calibration_term", "cluster_prior"):
        if getattr(route, extra, None) is not None:
            out[extra] = {k: round(float(v), 6) for k, v in getattr(route, extra).items()}
    if server_ms is not None:
        out["server_ms"] = round(server_ms, 3)
    return out


def probability_figure(route, title: str = "Routing probabilities"):
    """Grouped bars per expert: the router's softmax and the calibrated mixture weights."""
    import plotly.graph_objects as go

    names = list(route.probabilities)
    colors = expert_colors(names)
    raw = [float(route.router_probabilities.get(n, 0.0)) for n in names]
    cal = [float(route.probabilities[n]) for n in names]
    bars = [go.Bar(name="router p", x=names, y=raw, text=[f"{v:.2f}" for v in raw], textposition="outside",
                   marker=dict(color=[colors[n] for n in names], opacity=0.45, pattern=dict(shape="/", fgcolor="white")),
                   hovertemplate="%{x}: %{y:.3f}<extra>router p = softmax(W z / T)</extra>")]
    term = getattr(route, "calibration_term", None)
    if term:
        q = [float(term.get(n, 0.0)) for n in names]
        bars.append(go.Bar(name="calibration q", x=names, y=q, text=[f"{v:.2f}" for v in q], textposition="outside",
                           marker=dict(color=[colors[n] for n in names], opacity=0.45, pattern=dict(shape=".")),
                           hovertemplate="%{x}: %{y:.3f}<extra>q = (cluster prior + preferences) / 2</extra>"))
    bars.append(go.Bar(name="weight w", x=names, y=cal, text=[f"{v:.2f}" for v in cal], textposition="outside",
                       marker=dict(color=[colors[n] for n in names]),
                       hovertemplate="%{x}: %{y:.3f}<extra>calibrated weight w</extra>"))
    fig = go.Figure(bars)
    fig.update_layout(title=dict(text=title, x=0.02, font=dict(size=14)), barmode="group", height=300,
                      yaxis=dict(range=[0, 1.12], title="p", gridcolor="#e2e8f0"), bargap=0.25,
                      margin=dict(l=40, r=10, t=40, b=30), plot_bgcolor="white", paper_bgcolor="white",
                      legend=dict(orientation="h", y=1.12, x=1, xanchor="right"), transition=dict(duration=0))
    return fig


def empty_figure(message: str, height: int = 300):
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font=dict(size=13, color="#64748b"))
    fig.update_layout(height=height, xaxis=dict(visible=False), yaxis=dict(visible=False), plot_bgcolor="white",
                      paper_bgcolor="white", margin=dict(l=10, r=10, t=10, b=10))
    return fig


def map_point(latent_map: dict, latent) -> tuple[float, float] | None:
    """The 2-D map position of a prompt's latent (the base head's part of a concatenated latent)."""
    import torch

    if latent is None:
        return None
    z = torch.as_tensor(latent, dtype=torch.float32).flatten()
    k = len(latent_map["mean"])
    if z.numel() < k:
        return None
    from alignx.experts.latent_map import project_2d

    return project_2d(latent_map, z[:k][None])[0]


def latent_map_figure(latent_map: dict, route=None, prompt: str = ""):
    """The held-out prompts colored by axis; the routed prompt as a star, labeled with its cluster."""
    from alignx.experts.latent_map import pca_figure

    highlight = []
    point = map_point(latent_map, getattr(route, "latent", None)) if route is not None else None
    if point is not None:
        cluster = getattr(route, "cluster", None)
        label = ("this prompt (novel: no cluster)" if cluster == -1 else
                 f"this prompt (cluster {cluster})" if cluster is not None else "this prompt")
        highlight.append((label, point[0], point[1]))
    fig = pca_figure(latent_map, highlight)
    # the star's label is in the legend; text beside a star near the edge would be clipped
    fig.update_traces(mode="markers", selector=dict(mode="markers+text"))
    fig.update_layout(title=dict(text="Latent space: held-out prompts by axis", x=0.02, font=dict(size=14)),
                      height=360, plot_bgcolor="white", paper_bgcolor="white",
                      margin=dict(l=40, r=10, t=40, b=30), legend=dict(orientation="h", y=-0.18))
    return fig


def token_weights_html(tokens: Sequence[tuple[str, dict[str, float]]], limit: int = 1024) -> str:
    """The generated text, token by token, each with a stacked bar of its routing weights below."""
    if not tokens:
        return ""
    names = list(dict.fromkeys(n for _, w in tokens for n in w))
    colors = expert_colors(names)
    legend = "".join(f'<span class="tw-key"><i style="background:{colors[n]}"></i>{html.escape(n)}</span>'
                     for n in names)
    cells = []
    for text, weights in tokens[:limit]:
        total = sum(max(0.0, float(v)) for v in weights.values()) or 1.0
        bars = "".join(f'<i style="width:{100 * max(0.0, float(weights.get(n, 0))) / total:.1f}%;'
                       f'background:{colors[n]}"></i>' for n in names)
        tip = " · ".join(f"{n} {float(weights.get(n, 0)):.2f}" for n in names)
        shown = html.escape(text).replace("\n", "↵") or "·"
        cells.append(f'<span class="tw-tok" title="{html.escape(tip)}"><span class="tw-text">{shown}</span>'
                     f'<span class="tw-bar">{bars}</span></span>')
    more = f'<span class="tw-more">… {len(tokens) - limit} more tokens</span>' if len(tokens) > limit else ""
    return f'<div class="tw"><div class="tw-legend">{legend}</div><div class="tw-body">{"".join(cells)}{more}</div></div>'
