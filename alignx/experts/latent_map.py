"""A 2-D PCA map of the latent space: held-out prompts colored by axis, plus new prompts."""
from __future__ import annotations

from alignx.errors import MissingFile

import json
from pathlib import Path

import torch

from alignx.objectives import COLORS

from alignx.experts.io import write_json_atomic



def pca_map(z: torch.Tensor, labels: list[str], prompts: list[str], path: Path) -> dict:
    """Fit a 2-D PCA on base latents ``z`` (n, k) and save the basis and the points as JSON."""
    mean = z.mean(0)
    _, s, v = torch.linalg.svd(z - mean, full_matrices=False)
    comps = v[:2]
    xy = ((z - mean) @ comps.T).tolist()
    explained = (s[:2] ** 2 / (s ** 2).sum()).tolist()
    data = {"mean": mean.tolist(), "components": comps.tolist(), "explained_variance": explained,
            "points": [{"x": p[0], "y": p[1], "axis": a, "prompt": t[:160]} for p, a, t in zip(xy, labels, prompts)]}
    write_json_atomic(Path(path), data)
    return data


def load_map(experts_dir: str | Path) -> dict:
    path = Path(experts_dir) / "latent" / "heldout_map.json"
    if not path.exists():
        raise MissingFile(f"{path} is missing: fit the latent space first")
    return json.loads(path.read_text())


def project_2d(latent_map: dict, z: torch.Tensor) -> list[tuple[float, float]]:
    mean = torch.tensor(latent_map["mean"])
    comps = torch.tensor(latent_map["components"])
    return [tuple(p) for p in ((z - mean) @ comps.T).tolist()]


def pca_figure(latent_map: dict, highlight: list[tuple[str, float, float]] | None = None):
    """plotly scatter of the held-out prompts by axis; ``highlight`` = [(label, x, y)] drawn as stars."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for axis, color in COLORS.items():
        pts = [p for p in latent_map["points"] if p["axis"] == axis]
        fig.add_trace(go.Scatter(x=[p["x"] for p in pts], y=[p["y"] for p in pts], mode="markers", name=axis,
                                 marker=dict(color=color, size=7, opacity=0.6), text=[p["prompt"] for p in pts],
                                 hovertemplate="%{text}<extra>" + axis + "</extra>"))
    for label, x, y in highlight or []:
        fig.add_trace(go.Scatter(x=[x], y=[y], mode="markers+text", name=label[:40], text=[label[:40]],
                                 textposition="top center",
                                 marker=dict(symbol="star", size=18, color="#dc2626", line=dict(width=1, color="black"))))
    ev = latent_map.get("explained_variance", [0, 0])
    fig.update_layout(title="Latent alignment space (PCA of held-out prompts)", height=420,
                      xaxis_title=f"PC1 ({ev[0]:.0%} var.)", yaxis_title=f"PC2 ({ev[1]:.0%} var.)",
                      margin=dict(l=40, r=20, t=50, b=40), legend=dict(orientation="h", y=-0.2))
    return fig
