"""plotly figures and HTML for the analyses' JSON results (no gradio: the app and the CLI share them).

- ``heads_figure``: a layers x heads heatmap of one objective's importance (or its difference from
  the base: a diverging scale centred on 0), top-k heads outlined;
- ``attribution_html``: the prompt's features coloured by score (red raises the target's
  log-probability, blue lowers it), escaped; ``attribution_figure``: the same as bars;
- ``forgetting_figure``: modes x metrics of the signed change ("good" > 0 is better), Delta and CI
  as cell text;
- ``blindspots_figure``: the blind-spot prompts on the latent map.
"""
from __future__ import annotations

import html
from typing import Sequence

from alignx.errors import InvalidInput


def heads_figure(report: dict, objective: str, base: dict | None = None, top_k: int = 5):
    import plotly.graph_objects as go

    if objective not in report["objectives"]:
        raise InvalidInput(f"no head map for objective {objective!r}; available: {', '.join(report['objectives'])}")
    entry = report["objectives"][objective]
    z = entry["importance"]
    title = f"{report['mode']}: head importance for {objective} (E|dL/dxi|, {entry['rows']} rows)"
    kw = {"colorscale": "Viridis"}
    if base is not None:
        from alignx.interp.analyses import difference

        diff = difference(report, base)
        if objective not in diff:
            raise InvalidInput(f"the base map has no objective {objective!r}")
        z = diff[objective]
        m = max((abs(v) for row in z for v in row), default=1.0) or 1.0
        kw = {"colorscale": "RdBu", "reversescale": True, "zmid": 0.0, "zmin": -m, "zmax": m}
        title = f"{report['mode']} - {base['mode']}: head importance for {objective}"
    fig = go.Figure(go.Heatmap(z=z, x=list(range(report["heads"])), y=list(range(report["layers"])),
                               hovertemplate="layer %{y}, head %{x}: %{z:.4g}<extra></extra>", **kw))
    for l, h, _ in entry["top"][:top_k]:
        fig.add_shape(type="rect", x0=h - 0.5, x1=h + 0.5, y0=l - 0.5, y1=l + 0.5, line=dict(color="red", width=2))
    fig.update_xaxes(dtick=1 if report["heads"] <= 32 else None)
    fig.update_yaxes(dtick=1 if report["layers"] <= 32 else None)
    fig.update_layout(title=title, xaxis_title="head", yaxis_title="layer", height=520,
                      margin=dict(l=50, r=20, t=50, b=40))
    return fig


def _color(score: float, scale: float) -> str:
    a = min(1.0, abs(score) / scale) if scale else 0.0
    rgb = "220,38,38" if score > 0 else "37,99,235"
    return f"rgba({rgb},{0.85 * a:.3f})"


def attribution_html(report: dict) -> str:
    """The features as coloured spans (hover: the score), then the target and f(x)."""
    scores: Sequence[float] = report["scores"]
    scale = max((abs(s) for s in scores), default=0.0)
    spans = "".join(f'<span title="{s:+.4f}" style="background:{_color(s, scale)};padding:1px 2px;'
                    f'border-radius:3px;white-space:pre-wrap">{html.escape(f)}</span>'
                    for f, s in zip(report["features"], scores))
    what = f"log p<sub>{html.escape(report['mode'])}</sub>(y | x)"
    if report.get("contrast"):
        what += f" &minus; log p<sub>{html.escape(report['contrast'])}</sub>(y | x)"
    extra = ""
    if report.get("convergence_delta") is not None:
        extra = (f" &middot; sum of scores {sum(scores):+.3f} = f(x) &minus; f(baseline) "
                 f"{report['target_logprob'] - report['baseline_logprob']:+.3f}, convergence delta "
                 f"{report['convergence_delta']:.2e}")
    return (f'<div class="attribution"><div style="line-height:2">{spans}</div>'
            f'<div style="margin-top:6px;font-size:90%">target: <i>{html.escape(report["target"][:300])}</i><br>'
            f'{report["method"]}: {what} = {report["target_logprob"]:+.3f}{extra}<br>'
            f'<span style="color:#dc2626">red</span> raises it, <span style="color:#2563eb">blue</span> lowers it</div></div>')


def attribution_figure(report: dict):
    import plotly.graph_objects as go

    labels = [f"{i}:{f.strip()[:14]}" for i, f in enumerate(report["features"])]
    colors = ["#dc2626" if s > 0 else "#2563eb" for s in report["scores"]]
    fig = go.Figure(go.Bar(x=labels, y=report["scores"], marker_color=colors))
    fig.update_layout(title=f"{report['method']} ({report['mode']}{' vs ' + report['contrast'] if report.get('contrast') else ''})",
                      yaxis_title="attribution", height=360, margin=dict(l=50, r=20, t=50, b=80))
    return fig


def forgetting_figure(report: dict):
    import plotly.graph_objects as go

    modes, metrics = report["modes"], report["metrics"]
    z, text = [], []
    for m in modes:
        row, trow = [], []
        for k in metrics:
            e = report["matrix"][m].get(k)
            row.append(None if e is None else e["good"])
            trow.append("" if e is None else f"{e['delta']:+.3f}<br>[{e['ci95'][0]:+.3f}, {e['ci95'][1]:+.3f}]")
        z.append(row)
        text.append(trow)
    m_ = max((abs(v) for r in z for v in r if v is not None), default=1.0) or 1.0
    fig = go.Figure(go.Heatmap(z=z, x=[f"{k} ({report['objectives'][k]})" for k in metrics], y=modes, text=text,
                               texttemplate="%{text}", colorscale="RdBu", zmid=0, zmin=-m_, zmax=m_,
                               hovertemplate="%{y} / %{x}: %{text}<extra></extra>"))
    fig.update_layout(title=f"change against {report['base']} (blue: better, red: worse; cell: Delta [95% CI])",
                      height=120 + 60 * len(modes), margin=dict(l=120, r=20, t=50, b=60))
    return fig


def blindspots_figure(report: dict, latent_map: dict | None = None):
    import plotly.graph_objects as go

    fig = go.Figure()
    if latent_map:
        pts = latent_map.get("points", [])
        fig.add_trace(go.Scatter(x=[p["x"] for p in pts], y=[p["y"] for p in pts], mode="markers", name="held-out",
                                 marker=dict(size=5, color="#cbd5e1"), text=[p.get("prompt", "") for p in pts]))
    for kind, symbol in (("confident_wrong", "x"), ("fused_worse", "triangle-up"), ("all_fail", "star")):
        rows = [e for e in report[kind] if "route_x" in e]
        if rows:
            fig.add_trace(go.Scatter(x=[e["route_x"] for e in rows], y=[e["route_y"] for e in rows], mode="markers",
                                     name=f"{kind} ({len(report[kind])})", marker=dict(size=10, symbol=symbol),
                                     text=[(e.get("prompt") or "")[:120] for e in rows]))
    fig.update_layout(title="blind spots on the latent map", height=480, margin=dict(l=40, r=20, t=50, b=40))
    return fig


def write_html(items, path) -> None:
    """Figures and HTML fragments (one or a list) as one standalone page, plotly.js inlined once
    (the page works offline)."""
    from alignx.atomic import write_text

    parts, js = [], True
    for item in items if isinstance(items, (list, tuple)) else [items]:
        if isinstance(item, str):
            parts.append(item)
        else:
            parts.append(item.to_html(full_html=False, include_plotlyjs=js))
            js = False
    write_text(path, "<!doctype html><meta charset='utf-8'><body>" + "\n".join(parts) + "</body>\n")
