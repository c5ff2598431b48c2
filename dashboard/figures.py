"""Plotly figures built from data frames (no Streamlit here, so they are testable alone).
Built with graph_objects rather than Plotly Express: several times faster, which keeps a click
on the cost grid well under half a second."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

COLORS = qualitative.Plotly


def _color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def eps_curves(curves: pd.DataFrame, show_overall: bool) -> go.Figure:
    """curves: checkpoint, eps, rob_cs, rob_std, certified_acc. Rob_cs solid, Rob_std dashed."""
    fig = go.Figure()
    for i, (name, df) in enumerate(curves.groupby("checkpoint", sort=False)):
        c = _color(i)
        fig.add_scatter(x=df.eps, y=df.rob_cs, name=f"{name} Rob_cs", line=dict(color=c))
        fig.add_scatter(x=df.eps, y=df.rob_std, name=f"{name} Rob_std", line=dict(color=c, dash="dash"))
        if show_overall:
            fig.add_scatter(x=df.eps, y=df.certified_acc, name=f"{name} certified acc.", line=dict(color=c, dash="dot"))
    fig.update_layout(xaxis_title="ℓ2 perturbation size ε (pixel scale [0, 1])",
                      yaxis_title="share of examples certified", yaxis_range=[0, 1.02],
                      legend_title="checkpoint and metric", margin=dict(t=30))
    return fig


def pareto_front(points: pd.DataFrame) -> pd.DataFrame:
    """The rows not dominated in (acc, rob_cs), sorted by acc."""
    pts = points.dropna(subset=["acc", "rob_cs"]).sort_values(["acc", "rob_cs"], ascending=False)
    keep = pts.rob_cs.to_numpy() > np.maximum.accumulate(np.r_[-np.inf, pts.rob_cs.to_numpy()[:-1]])
    return pts[keep].sort_values("acc")


SYMBOLS = {"gaussian": "circle", "cohen-r": "square", "macer": "diamond", "cs-macer": "star"}


def tradeoff(summary: pd.DataFrame) -> go.Figure:
    """Acc vs Rob_cs per checkpoint with the Pareto front (paper Fig. 1c). Each checkpoint is its
    own legend entry (colour) with its method's symbol, so nearby points never overlap labels."""
    fig = go.Figure()
    for i, row in enumerate(summary.itertuples()):
        fig.add_scatter(x=[row.rob_cs], y=[row.acc], mode="markers", name=f"{row.checkpoint} ({row.method})",
                        marker=dict(size=13, color=_color(i), symbol=SYMBOLS.get(row.method, "circle"),
                                    line=dict(width=1, color="white")),
                        hovertemplate=f"{row.checkpoint}<br>Rob_cs %{{x:.3f}}<br>Acc %{{y:.3f}}<extra></extra>")
    front = pareto_front(summary)
    if len(front) > 1:
        fig.add_scatter(x=front.rob_cs, y=front.acc, mode="lines", name="Pareto front", line=dict(color="grey", dash="dot"))
    fig.update_layout(xaxis_title="certified cost-sensitive robustness Rob_cs(ε)", yaxis_title="overall accuracy Acc",
                      xaxis_range=[-0.02, 1.02], yaxis_range=[0, 1.05], margin=dict(t=30))
    return fig


def r1_vs_r2(table: pd.DataFrame, title: str) -> go.Figure:
    """Per sensitive example whose top class is safe: R1 against the certified max(R1, R2) (Fig. 1a/b)."""
    sub = table[table.r2 > -np.inf]
    r1 = sub.r1.clip(lower=0)
    best = sub.cost_robust_radius.clip(lower=0)
    top = float(max(best.max() if len(best) else 0, r1.max() if len(r1) else 0, 0.1))
    fig = go.Figure()
    fig.add_scatter(x=r1, y=best, mode="markers", name="sensitive examples", opacity=0.6)
    fig.add_scatter(x=[0, top], y=[0, top], mode="lines", name="y = x", line=dict(color="grey", dash="dot"))
    fig.update_layout(title=title, xaxis_title="R1: standard radius (ℓ2)",
                      yaxis_title="certified cost-sensitive radius (ℓ2)", margin=dict(t=40))
    return fig


def per_class_bars(per_class: pd.DataFrame) -> go.Figure:
    """Certified accuracy at ε per true class, grouped by checkpoint."""
    fig = go.Figure()
    for i, (name, df) in enumerate(per_class.groupby("checkpoint", sort=False)):
        fig.add_bar(x=df.name, y=df.certified_acc, name=name, marker_color=_color(i))
    fig.update_layout(barmode="group", xaxis_title="true class", yaxis_title="certified accuracy at ε",
                      yaxis_range=[0, 1], margin=dict(t=30))
    return fig


def confusion_heatmap(matrix: np.ndarray, class_names, title: str) -> go.Figure:
    """Rows: true class; columns: the smoothed classifier's top class c_A; cells: share of the row."""
    rows = matrix.sum(1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    names = list(class_names)
    fig = go.Figure(go.Heatmap(z=share, x=names, y=names, zmin=0, zmax=1, colorscale="Blues",
                               text=np.round(share, 2), texttemplate="%{text}",
                               colorbar=dict(title="share of row")))
    fig.update_layout(title=title, xaxis_title="predicted class (smoothed top class)", yaxis_title="true class",
                      yaxis_autorange="reversed", margin=dict(t=40))
    return fig


def training_curves(steps: pd.DataFrame) -> go.Figure:
    """Loss terms and accuracy per step of a training job."""
    x = steps.epoch + steps.step / steps.steps
    fig = go.Figure()
    for key in ("loss", "ce", "i2", "i3", "robust", "weighted_ce", "acc"):
        if key in steps:
            fig.add_scatter(x=x, y=steps[key], name=key, mode="lines")
    fig.update_layout(xaxis_title="epoch", yaxis_title="batch mean", margin=dict(t=30))
    return fig


def lower_bound_ecdf(bounds: pd.DataFrame) -> go.Figure:
    """bounds: checkpoint, p_lower (the lower confidence bound of p_A per example). The empirical
    distribution function per checkpoint: what an average radius hides (many examples just above
    or below 1/2, a few near 1)."""
    fig = go.Figure()
    for i, (name, df) in enumerate(bounds.groupby("checkpoint", sort=False)):
        x = np.sort(df.p_lower.to_numpy())
        fig.add_scatter(x=x, y=np.arange(1, len(x) + 1) / max(len(x), 1), name=name, mode="lines",
                        line=dict(color=_color(i), shape="hv"))
    fig.add_vline(x=0.5, line=dict(color="grey", dash="dot"))
    fig.update_layout(xaxis_title="lower confidence bound of p_A (certified iff > 1/2)",
                      yaxis_title="share of examples ≤ x", xaxis_range=[0, 1], yaxis_range=[0, 1.02],
                      margin=dict(t=30))
    return fig
