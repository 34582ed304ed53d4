"""plotly figures and HTML for the MAC analysis (``alignx.interp.mac``), shared by the app and the CLI.

- ``negotiation_figure``: tokens x objectives heatmaps of alpha, one per MAC head and their mean,
  a dashed line where the answer starts;
- ``specialisation_figure``: heads x objectives mean alpha, one panel per prompt category;
- ``interventions_html``: the full model's answer beside each pathway switched off and the circuit off;
- ``trajectories_figure``: each prompt's path through the layers in the shared PCA plane, with the
  circuit (solid) and without (dotted), the fork layer marked;
- ``geometry_figure``: the subspace-overlap and write-direction cosine matrices.
"""
from __future__ import annotations

import html


def negotiation_figure(report: dict):
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    w, objs, tokens = report["weights"], report["objectives"], report["tokens"]
    heads = report["heads"]
    titles = ["mean over heads"] + [f"MAC head {h}" for h in range(heads)]
    fig = make_subplots(rows=heads + 1, cols=1, shared_xaxes=True, subplot_titles=titles, vertical_spacing=0.04)
    x = list(range(len(tokens)))
    text = [t.replace("\n", "↵") for t in tokens]
    panels = [report["mean_over_heads"]] + [[[w[t][h][i] for i in range(len(objs))] for t in x] for h in range(heads)]
    for r, z in enumerate(panels, start=1):
        zt = [[z[t][i] for t in x] for i in range(len(objs))]
        fig.add_trace(go.Heatmap(z=zt, x=x, y=objs, zmin=0, zmax=1, colorscale="Viridis", showscale=r == 1,
                                 customdata=[text] * len(objs),
                                 hovertemplate="%{customdata} (%{x}) · %{y}: %{z:.2f}<extra></extra>"), row=r, col=1)
        fig.add_vline(x=report["response_start"] - 0.5, line=dict(color="white", dash="dash"), row=r, col=1)
    fig.update_xaxes(tickvals=x, ticktext=text, tickangle=-60, row=heads + 1, col=1)
    fig.update_layout(title=f"{report['mode']}: per-token negotiation weights (answer after the dashed line)",
                      height=160 * (heads + 1) + 120, margin=dict(l=80, r=20, t=60, b=90))
    return fig


def specialisation_figure(report: dict):
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    cats = list(report["categories"])
    fig = make_subplots(rows=1, cols=len(cats), subplot_titles=[f"{c} prompts ({report['rows'][c]})" for c in cats],
                        shared_yaxes=True)
    for j, c in enumerate(cats, start=1):
        z = report["categories"][c]
        fig.add_trace(go.Heatmap(z=z, x=report["objectives"], y=[f"head {h}" for h in range(len(z))], zmin=0, zmax=1,
                                 colorscale="Viridis", showscale=j == 1, text=[[f"{v:.2f}" for v in row] for row in z],
                                 texttemplate="%{text}", hovertemplate="%{y} · %{x}: %{z:.3f}<extra></extra>"),
                      row=1, col=j)
    fig.update_layout(title=f"{report['mode']}: MAC head specialisation (mean alpha over response tokens)",
                      height=360, margin=dict(l=70, r=20, t=70, b=40))
    return fig


def interventions_html(report: dict) -> str:
    cols = "".join(f"<div class='mac-col'><h4>{html.escape(k)}</h4><pre>{html.escape(v)}</pre></div>"
                   for k, v in report["answers"].items())
    return (f"<div class='mac-iv'><p><b>{html.escape(report['mode'])}</b> · {html.escape(report['prompt'])}</p>"
            f"<div class='mac-cols' style='display:flex;gap:12px;flex-wrap:wrap'>{cols}</div></div>")


def trajectories_figure(report: dict):
    import plotly.graph_objects as go

    fig = go.Figure()
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#e377c2"]
    fork = report["fork_layer"] + 1                     # hidden_states index of the fork layer's output
    for i, p in enumerate(report["prompts"]):
        c = palette[i % len(palette)]
        for key, dash, name in (("with_mac", "solid", "with MAC"), ("without_mac", "dot", "without")):
            pts = report["points"][key][i]
            fig.add_trace(go.Scatter(x=[q[0] for q in pts], y=[q[1] for q in pts], mode="lines+markers",
                                     line=dict(color=c, dash=dash), marker=dict(size=5), name=f"{p[:40]} · {name}",
                                     text=[f"layer {l}" for l in range(len(pts))],
                                     hovertemplate="%{text}<extra>%{fullData.name}</extra>"))
        w = report["points"]["with_mac"][i]
        if fork < len(w):
            fig.add_trace(go.Scatter(x=[w[fork][0]], y=[w[fork][1]], mode="markers", showlegend=False,
                                     marker=dict(size=12, color=c, symbol="star"), hoverinfo="skip"))
    ev = report["explained_variance"]
    fig.update_layout(title=f"{report['mode']}: last-token trajectories through the layers (star: the fork)",
                      xaxis_title=f"PC1 ({100 * ev[0]:.0f}%)", yaxis_title=f"PC2 ({100 * ev[1]:.0f}%)", height=520,
                      margin=dict(l=60, r=20, t=60, b=50))
    return fig


def geometry_figure(report: dict):
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    objs = report["objectives"]
    fig = make_subplots(rows=1, cols=2, subplot_titles=["subspace overlap ||P_i P_j^T|| (normalised)",
                                                         "cosine of the pathways' write directions"])
    for j, (key, lo) in enumerate((("subspace_overlap", 0.0), ("direction_cosine", -1.0)), start=1):
        z = report[key]
        fig.add_trace(go.Heatmap(z=z, x=objs, y=objs, zmin=lo, zmax=1, colorscale="RdBu", reversescale=True,
                                 showscale=j == 2, text=[[f"{v:.2f}" for v in r] for r in z], texttemplate="%{text}"),
                      row=1, col=j)
    fig.update_layout(title=f"{report['mode']}: geometry of the objective directions", height=380,
                      margin=dict(l=70, r=20, t=70, b=40))
    return fig
