"""Vega-Lite figures as specs (dicts) whose data are named data frames in spec["datasets"]; no
Streamlit here, so they are testable alone. Shown with `st.vega_lite_chart(spec=...)`.

Why Vega-Lite specs written as dicts: when a chart's spec is unchanged between reruns and only its
data differ (a click on the cost grid), Streamlit keeps the chart and swaps the data in place
instead of drawing it anew; and a dict costs nothing to build, where an Altair chart takes ~20 ms.
So every spec depends only on names and settings, never on the numbers, and datasets have fixed names."""
from __future__ import annotations

import numpy as np
import pandas as pd

from csrs_core.certification.stats import proportion_interval

SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json"
SCHEME = "tableau10"  # one colour per checkpoint, in the order the checkpoints are listed
SHAPES = {"gaussian": "circle", "cohen-r": "square", "macer": "diamond", "cs-macer": "triangle-up",
          "cohen-shift": "cross"}  # Vega's named symbols
METRIC_DASH = {"Rob_cs": [1, 0], "Rob_std": [6, 3], "certified acc.": [2, 2]}
DOTTED = [2, 3]


# Streamlit picks the canvas renderer for more than 2,000 points and drops per-mark ARIA attributes
# for more than 5,000 rows unless a spec says otherwise: said in every spec, so it never depends on
# size. Every figure draws on a canvas: an SVG figure's hundreds of elements are part of the page, and
# every rerun restyles the page, so SVG figures cost every click time (a grid click: 0.23-0.25 s with
# SVG figures, 0.16 s with canvas ones, docs/benchmarks.md); the numbers behind each figure are in the
# tables and downloads.
FIXED = {"usermeta": {"embedOptions": {"renderer": "canvas"}}, "config": {"mark": {"aria": False}}}
# the page's width, and the plot's own height (Vega-Lite's 300 px unless a figure sets it) with its legends
# and axes added: fitted to a fixed height instead (Streamlit's default), legends squash the plot
FIT_WIDTH = {"autosize": {"type": "fit-x", "contains": "padding"}}


def vega_spec(datasets: dict[str, pd.DataFrame], **parts) -> dict:
    """A Vega-Lite spec whose data are the named `datasets`, drawn on a canvas the page's width."""
    return {"$schema": SCHEMA, "datasets": datasets, **FIXED, **FIT_WIDTH, **parts}


def _q(field: str, title: str | None = None, domain=None, **more) -> dict:
    """A quantitative channel; a fixed domain keeps the axes still between clicks."""
    channel = {"field": field, "type": "quantitative", **({"title": title} if title else {}), **more}
    if domain is not None:
        channel["scale"] = {"domain": domain}
    return channel


def _checkpoint_color(names) -> dict:
    names = list(names)
    return {"field": "checkpoint", "type": "nominal", "title": "checkpoint", "sort": names,
            "scale": {"domain": names, "scheme": SCHEME}}


def _names(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(frame["checkpoint"]))


def _tooltip(*fields: tuple[str, str]) -> list[dict]:
    return [{"field": f, "type": t, **({"format": ".3f"} if t == "quantitative" else {})} for f, t in fields]


# a class axis names every class: never thinned out for overlap, slanted to fit, long names cut at 160 px
CLASS_AXIS = {"labelOverlap": False, "labelAngle": -40, "labelLimit": 160}

CURVE_METRICS = {"rob_cs": "Rob_cs", "rob_std": "Rob_std", "certified_acc": "certified acc."}
# a click on a legend entry picks a checkpoint: its lines stay, the others fade
LEGEND_PICK = {"name": "picked", "select": {"type": "point", "fields": ["checkpoint"]}, "bind": "legend"}
FADE = {"condition": {"param": "picked", "value": 1}, "value": 0.15}
# under the plot, so that the plot keeps the page's width however many checkpoints are named
BOTTOM_LEGEND = {"orient": "bottom", "columns": 3, "symbolOpacity": 1, "labelLimit": 220}
# a share's axis fitted to the points names no value outside [0, 1] (the padding can reach past them)
SHARE_LABELS = {"labelExpr": "datum.value < 0 || datum.value > 1 ? '' : datum.label"}
NON_NEGATIVE = "datum.value < 0 ? '' : datum.label"


def eps_curves(curves: pd.DataFrame, show_overall: bool, band: bool = False, banded=None) -> dict:
    """curves: checkpoint, eps, rob_cs, rob_std, certified_acc (and, for `band`, each one's _lo and _hi:
    with_intervals). Rob_cs solid, Rob_std dashed, the overall certified accuracy dotted (when shown);
    with `band`, the 95 % interval of the curves of the checkpoints in `banded` (default: all) as a
    translucent area in their colour, so that many checkpoints stay readable. A click on a legend
    entry fades every other checkpoint's lines."""
    columns = {c: label for c, label in CURVE_METRICS.items() if show_overall or c != "certified_acc"}
    metrics = list(columns.values())

    def stacked(suffix: str = "") -> np.ndarray:
        return np.concatenate([curves[c + suffix].to_numpy(dtype=float) for c in columns])

    long = pd.DataFrame({"checkpoint": np.tile(curves["checkpoint"].to_numpy(dtype=str), len(columns)),
                         "eps": np.tile(curves["eps"].to_numpy(dtype=float), len(columns)),
                         "metric": np.repeat(metrics, len(curves)), "share": stacked()})
    share = _q("share", "share certified", [0, 1])
    shared = {"x": _q("eps", "ℓ2 perturbation size ε (pixel scale [0, 1])"),
              "color": {**_checkpoint_color(_names(curves)), "legend": BOTTOM_LEGEND}}
    lines = {"y": share, "opacity": FADE,
             "strokeDash": {"field": "metric", "type": "nominal", "title": "metric", "sort": metrics,
                            "scale": {"domain": metrics, "range": [METRIC_DASH[m] for m in metrics]},
                            "legend": {"orient": "top", "direction": "horizontal"}},
             "detail": {"field": "metric", "type": "nominal"},
             "tooltip": _tooltip(("checkpoint", "nominal"), ("metric", "nominal"), ("eps", "quantitative"),
                                 ("share", "quantitative"))}
    line = {"mark": "line", "params": [LEGEND_PICK], "encoding": lines}
    if not band:
        return vega_spec({"curves": long}, data={"name": "curves"}, encoding=shared, layer=[line])
    # the bands' own rows (only the banded checkpoints'), so the browser filters nothing on a click
    bands = long.assign(lo=stacked("_lo"), hi=stacked("_hi"))
    if banded is not None:
        bands = bands[bands["checkpoint"].isin(list(banded))].reset_index(drop=True)
    area = {"data": {"name": "bands"}, "mark": {"type": "area", "opacity": 0.15},
            "encoding": {"y": {**share, "field": "lo"}, "y2": {"field": "hi"},
                         "detail": {"field": "metric", "type": "nominal"}}}
    return vega_spec({"curves": long, "bands": bands}, data={"name": "curves"}, encoding=shared,
                     layer=[area, line])


def with_intervals(curve: pd.DataFrame, examples: int, sensitive_examples: int) -> pd.DataFrame:
    """curve (metrics.eps_curve's columns) with the exact 95 % interval over the test examples of every
    point (stats.proportion_interval): rob_cs_lo, rob_cs_hi and rob_std_lo, rob_std_hi over the
    sensitive examples, certified_acc_lo, certified_acc_hi over all examples; NaN where a share is."""
    columns = {}
    for column, trials in (("rob_cs", sensitive_examples), ("rob_std", sensitive_examples),
                           ("certified_acc", examples)):
        share = curve[column].to_numpy(dtype=float)
        known = ~np.isnan(share) if trials else np.zeros(share.shape, bool)
        hits, where = np.unique(np.rint(share[known] * trials).astype(int), return_inverse=True)
        low, high = proportion_interval(hits, np.full(hits.shape, trials))
        for side, values in (("lo", low[where]), ("hi", high[where])):
            columns[f"{column}_{side}"] = np.full(share.shape, np.nan)
            columns[f"{column}_{side}"][known] = values
    return pd.DataFrame({**{c: curve[c].to_numpy() for c in curve.columns}, **columns}, index=curve.index)


COST_CURVES = {"expected_cost": "certified expected cost (mean over all test examples; lower is better)",
               "rob_cs_tau": "Rob_cs(ε, τ): share of sensitive examples certified to cost ≤ τ"}


def cost_curves(curves: pd.DataFrame, metric: str) -> dict:
    """curves: checkpoint, eps, expected_cost, rob_cs_tau (metrics.cost_curve per checkpoint). One line
    per checkpoint of `metric` (a key of COST_CURVES) over ε; the expected cost's axis starts at 0 and
    follows the costs, the share's is [0, 1]."""
    y = _q(metric, COST_CURVES[metric], [0, 1] if metric == "rob_cs_tau" else None)
    if metric != "rob_cs_tau":
        y["scale"] = {"zero": True}
    return vega_spec({"costs": curves[["checkpoint", "eps", metric]]}, data={"name": "costs"},
                     mark="line", encoding={"x": _q("eps", "ℓ2 perturbation size ε (pixel scale [0, 1])"), "y": y,
                                            "color": _checkpoint_color(_names(curves)),
                                            "tooltip": _tooltip(("checkpoint", "nominal"), ("eps", "quantitative"),
                                                                (metric, "quantitative"))})


# the trade-off's horizontal axes: title and whether lower is better
TRADEOFF_AXES = {"rob_cs": ("Rob_cs(ε)", False), "expected_cost": ("expected cost at ε (lower: better)", True)}


def pareto_front(points: pd.DataFrame, x: str = "rob_cs") -> pd.DataFrame:
    """The rows not dominated in (acc, x), sorted by acc: higher acc is better, and higher x, or lower
    where TRADEOFF_AXES says so (the expected cost)."""
    pts = points.dropna(subset=["acc", x])
    score = pts[x].to_numpy(dtype=float) * (-1.0 if TRADEOFF_AXES[x][1] else 1.0)
    order = np.lexsort((-score, -pts["acc"].to_numpy(dtype=float)))  # acc, then score, both descending
    best = score[order]
    keep = order[best > np.maximum.accumulate(np.r_[-np.inf, best[:-1]])]
    return pts.iloc[keep].sort_values("acc")


def tradeoff(summary: pd.DataFrame, x: str = "rob_cs") -> dict:
    """Acc against x (Rob_cs, or the certified expected cost: a key of TRADEOFF_AXES) per checkpoint with
    the Pareto front (paper Fig. 1c), both axes fitted to the points. Each checkpoint is its own legend
    entry (colour, under the plot as on the ε curves) and its method has its own symbol (beside it), so
    nearby points never overlap labels."""
    title = TRADEOFF_AXES[x][0]
    points = summary[["checkpoint", "method", "acc", x]]
    fitted = {"scale": {"zero": False, "nice": True, "padding": 24}}  # fitted to the points, never [0, 1]
    horizontal = _q(x, title, **fitted, axis=SHARE_LABELS if x == "rob_cs" else {"labelExpr": NON_NEGATIVE})
    y = _q("acc", "overall accuracy Acc", **fitted, axis=SHARE_LABELS)
    front = {"data": {"name": "front"}, "mark": {"type": "line", "color": "grey", "strokeDash": DOTTED},
             "encoding": {"x": horizontal, "y": y, "order": {"field": "acc", "type": "quantitative"}}}
    dots = {"data": {"name": "points"},
            "mark": {"type": "point", "size": 160, "filled": True, "stroke": "white", "strokeWidth": 1, "opacity": 1},
            "encoding": {"x": horizontal, "y": y,
                         "color": {**_checkpoint_color(_names(points)), "legend": BOTTOM_LEGEND},
                         "shape": {"field": "method", "type": "nominal", "title": "method",
                                   "scale": {"domain": list(SHAPES), "range": list(SHAPES.values())},
                                   "legend": {"symbolFillColor": "grey", "symbolStrokeColor": "grey",
                                              "symbolSize": 120}},
                         "tooltip": _tooltip(("checkpoint", "nominal"), ("method", "nominal"),
                                             (x, "quantitative"), ("acc", "quantitative"))}}
    return vega_spec({"points": points, "front": pareto_front(points, x)}, layer=[front, dots])


def r1_vs_r2(table: pd.DataFrame, title: str) -> dict:
    """Per sensitive example whose top class is safe: R1 against the certified max(R1, R2) (Fig. 1a/b)."""
    sub = table[table.r2 > -np.inf]
    points = pd.DataFrame({"r1": sub.r1.clip(lower=0), "radius": sub.cost_robust_radius.clip(lower=0)})
    top = float(max(points.to_numpy().max(initial=0), 0.1))
    x = _q("r1", "R1: standard radius (ℓ2)")
    y = _q("radius", "certified cost-sensitive radius (ℓ2)")
    diagonal = {"data": {"name": "diagonal"}, "mark": {"type": "line", "color": "grey", "strokeDash": DOTTED},
                "encoding": {"x": x, "y": y}}
    dots = {"data": {"name": "points"}, "mark": {"type": "circle", "opacity": 0.6, "size": 30},
            "encoding": {"x": x, "y": y, "tooltip": _tooltip(("r1", "quantitative"), ("radius", "quantitative"))}}
    return vega_spec({"points": points, "diagonal": pd.DataFrame({"r1": [0, top], "radius": [0, top]})},
                      title=title, layer=[diagonal, dots])


def per_class_bars(per_class: pd.DataFrame) -> dict:
    """Certified accuracy at ε per true class, grouped by checkpoint."""
    names = _names(per_class)
    classes = list(dict.fromkeys(per_class["name"]))
    return vega_spec({"bars": per_class[["checkpoint", "name", "certified_acc"]]}, data={"name": "bars"}, mark="bar",
                      encoding={"x": {"field": "name", "type": "nominal", "title": "true class", "sort": classes,
                                      "axis": CLASS_AXIS},
                                "xOffset": {"field": "checkpoint", "type": "nominal", "sort": names},
                                "y": _q("certified_acc", "certified accuracy at ε", [0, 1]),
                                "color": _checkpoint_color(names),
                                "tooltip": _tooltip(("checkpoint", "nominal"), ("name", "nominal"),
                                                    ("certified_acc", "quantitative"))})


def confusion_heatmap(matrix: np.ndarray, class_names, title: str) -> dict:
    """Rows: true class; columns: the smoothed classifier's top class c_A; cells: share of the row."""
    rows = matrix.sum(1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    names = [str(n) for n in class_names]
    cells = pd.DataFrame([{"true": names[j], "predicted": names[k], "share": float(share[j, k]),
                           "count": int(matrix[j, k])} for j in range(len(names)) for k in range(len(names))])
    axes = {"x": {"field": "predicted", "type": "nominal", "title": "predicted class (smoothed top class)",
                  "sort": names, "axis": CLASS_AXIS},
            "y": {"field": "true", "type": "nominal", "title": "true class", "sort": names,
                  "axis": {"labelOverlap": False, "labelLimit": 160}}}
    heat = {"mark": "rect", "encoding": {**axes, "color": {**_q("share", "share of row"),
                                                           "scale": {"domain": [0, 1], "scheme": "blues"}},
                                         "tooltip": [{"field": "true", "type": "nominal"},
                                                     {"field": "predicted", "type": "nominal"},
                                                     {"field": "count", "type": "quantitative"},
                                                     {"field": "share", "type": "quantitative", "format": ".2f"}]}}
    text = {"mark": {"type": "text", "fontSize": 10},
            "encoding": {**axes, "text": {"field": "share", "type": "quantitative", "format": ".2f"},
                         "color": {"condition": {"test": "datum.share > 0.5", "value": "white"}, "value": "black"}}}
    return vega_spec({"cells": cells}, data={"name": "cells"}, title=title, height=320, layer=[heat, text])


def training_curves(steps: pd.DataFrame) -> dict:
    """Loss terms and accuracy per step of a training job."""
    keys = [k for k in ("loss", "ce", "i2", "i3", "robust", "weighted_ce", "acc") if k in steps]
    frame = steps[keys].assign(epoch=steps.epoch + steps.step / steps.steps)
    long = frame.melt("epoch", keys, var_name="term", value_name="value")
    return vega_spec({"steps": long}, data={"name": "steps"}, mark="line", encoding={
        "x": _q("epoch", "epoch"), "y": _q("value", "batch mean"),
        "color": {"field": "term", "type": "nominal", "sort": keys},
        "tooltip": _tooltip(("term", "nominal"), ("epoch", "quantitative"), ("value", "quantitative"))})


def lower_bound_ecdf(bounds: pd.DataFrame) -> dict:
    """bounds: checkpoint, p_lower (the lower confidence bound of p_A per example). The empirical
    distribution function per checkpoint: what an average radius hides (many examples just above
    or below 1/2, a few near 1)."""
    parts = [pd.DataFrame({"checkpoint": name, "p_lower": np.sort(df.p_lower.to_numpy()),
                           "share": np.arange(1, len(df) + 1) / len(df)})
             for name, df in bounds.groupby("checkpoint", sort=False)]
    ecdf = pd.concat(parts) if parts else pd.DataFrame(columns=["checkpoint", "p_lower", "share"])
    lines = {"data": {"name": "ecdf"}, "mark": {"type": "line", "interpolate": "step-after"},
             "encoding": {"x": _q("p_lower", "lower confidence bound of p_A (certified iff > 1/2)", [0, 1]),
                          "y": _q("share", "share of examples ≤ x", [0, 1]),
                          "color": _checkpoint_color(_names(bounds))}}
    half = {"data": {"name": "half"}, "mark": {"type": "rule", "color": "grey", "strokeDash": DOTTED},
            "encoding": {"x": {"field": "p_lower", "type": "quantitative"}}}
    return vega_spec({"ecdf": ecdf, "half": pd.DataFrame({"p_lower": [0.5]})}, layer=[lines, half])


VOTE_SAMPLES = ["selection (n0)", "estimation (n)"]  # counts0 and counts: short, the figures are narrow
UNDER = {"orient": "bottom", "direction": "vertical"}  # legends under the plot: the figures sit side by side


def vote_histogram(votes: pd.DataFrame, class_names) -> dict:
    """votes: class (name), sample (one of VOTE_SAMPLES), votes, share (of that sample's size), costly
    ("in Ω_y" or "not in Ω_y"). One example's votes per class, the selection sample (which picks the
    top class) beside the estimation sample (which bounds it); the costly classes outlined in red."""
    names = [str(c) for c in class_names]
    return vega_spec({"votes": votes[["class", "sample", "votes", "share", "costly"]]}, data={"name": "votes"},
                      mark={"type": "bar", "strokeWidth": 2}, encoding={
                          "x": {"field": "class", "type": "nominal", "title": "class", "sort": names,
                                "scale": {"domain": names}, "axis": {**CLASS_AXIS, "labelAngle": -90}},
                          "xOffset": {"field": "sample", "type": "nominal", "sort": VOTE_SAMPLES},
                          "y": _q("share", "share of the sample's votes", [0, 1]),
                          "color": {"field": "sample", "type": "nominal", "title": "sample", "sort": VOTE_SAMPLES,
                                    "scale": {"domain": VOTE_SAMPLES, "range": ["#9ecae9", "#4c78a8"]},
                                    "legend": UNDER},
                          "stroke": {"field": "costly", "type": "nominal", "title": "class",
                                     "scale": {"domain": ["in Ω_y", "not in Ω_y"],
                                               "range": ["#d62728", "transparent"]},
                                     "legend": {**UNDER, "values": ["in Ω_y"]}},
                          "tooltip": [{"field": "class", "type": "nominal"}, {"field": "sample", "type": "nominal"},
                                      {"field": "votes", "type": "quantitative"},
                                      {"field": "share", "type": "quantitative", "format": ".3f"},
                                      {"field": "costly", "type": "nominal"}]})
