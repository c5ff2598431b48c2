"""Plotly figures built from data frames (no Streamlit here, so they are testable alone)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go


def eps_curves(curves: pd.DataFrame, show_overall: bool) -> go.Figure:
    """curves: checkpoint, eps, rob_cs, rob_std, certified_acc. Rob_cs solid, Rob_std dashed."""
    fig = go.Figure()
    colors = px.colors.qualitative.Plotly
    for i, (name, df) in enumerate(curves.groupby("checkpoint", sort=False)):
        c = colors[i % len(colors)]
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
    front, best = [], -np.inf
    for _, r in pts.iterrows():
        if r.rob_cs > best:
            front.append(r)
            best = r.rob_cs
    return pd.DataFrame(front).sort_values("acc") if front else pts.iloc[:0]


def tradeoff(summary: pd.DataFrame) -> go.Figure:
    """Acc vs Rob_cs per checkpoint with the Pareto front (paper Fig. 1c)."""
    fig = px.scatter(summary, x="rob_cs", y="acc", color="method", text="checkpoint",
                     labels={"rob_cs": "certified cost-sensitive robustness Rob_cs(ε)", "acc": "overall accuracy Acc"})
    front = pareto_front(summary)
    if len(front) > 1:
        fig.add_scatter(x=front.rob_cs, y=front.acc, mode="lines", name="Pareto front", line=dict(color="grey", dash="dot"))
    fig.update_traces(textposition="top center", selector=dict(mode="markers+text"))
    fig.update_layout(margin=dict(t=30))
    return fig


def r1_vs_r2(table: pd.DataFrame, title: str) -> go.Figure:
    """Per sensitive example whose top class is safe: R1 against the certified max(R1, R2) (Fig. 1a/b)."""
    sub = table[table.r2 > -np.inf]
    r1 = sub.r1.clip(lower=0)
    best = sub.cost_robust_radius.clip(lower=0)
    fig = px.scatter(x=r1, y=best, labels={"x": "R1: standard radius (ℓ2)", "y": "certified cost-sensitive radius (ℓ2)"},
                     title=title, opacity=0.6)
    top = float(max(best.max() if len(best) else 0, r1.max() if len(r1) else 0, 0.1))
    fig.add_scatter(x=[0, top], y=[0, top], mode="lines", name="y = x", line=dict(color="grey", dash="dot"))
    fig.update_layout(margin=dict(t=40))
    return fig


def per_class_bars(per_class: pd.DataFrame) -> go.Figure:
    """Certified accuracy at ε per true class, grouped by checkpoint."""
    fig = px.bar(per_class, x="name", y="certified_acc", color="checkpoint", barmode="group",
                 labels={"name": "true class", "certified_acc": "certified accuracy at ε"})
    fig.update_layout(yaxis_range=[0, 1], margin=dict(t=30))
    return fig


def confusion_heatmap(matrix: np.ndarray, class_names, title: str) -> go.Figure:
    """Rows: true class; columns: the smoothed classifier's top class c_A; cells: share of the row."""
    rows = matrix.sum(1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    fig = px.imshow(share, x=list(class_names), y=list(class_names), text_auto=".2f", color_continuous_scale="Blues",
                    labels={"x": "predicted class (smoothed top class)", "y": "true class", "color": "share of row"},
                    title=title, zmin=0, zmax=1)
    fig.update_layout(margin=dict(t=40))
    return fig


def training_curves(steps: pd.DataFrame) -> go.Figure:
    """Loss terms and accuracy per step of a training job."""
    steps = steps.assign(progress=steps.epoch + steps.step / steps.steps)
    keys = [k for k in ("loss", "ce", "i2", "i3", "robust", "weighted_ce", "acc") if k in steps]
    long = steps.melt(id_vars="progress", value_vars=keys, var_name="term", value_name="value")
    fig = px.line(long, x="progress", y="value", color="term", labels={"progress": "epoch", "value": "value (batch mean)"})
    fig.update_layout(margin=dict(t=30))
    return fig
