import json

import altair as alt
import numpy as np
import pandas as pd

from csrs_core.dashboard import figures


def _spec(spec: dict) -> dict:
    """The spec with its data as plain rows, checked against the Vega-Lite schema (by Altair)."""
    rows = {name: json.loads(frame.to_json(orient="records")) for name, frame in spec["datasets"].items()}
    plain = {**spec, "datasets": rows}
    alt.Chart.from_dict(plain, validate=True) if "layer" not in spec else alt.LayerChart.from_dict(plain, validate=True)
    return plain


def _data(spec: dict, layer: int | None = None) -> list[dict]:
    part = spec["layer"][layer] if layer is not None and "data" in spec["layer"][layer] else spec
    return spec["datasets"][part["data"]["name"]]


def _without_data(spec: dict) -> str:
    return json.dumps({k: v for k, v in spec.items() if k != "datasets"}, sort_keys=True)


def _summary(acc, rob_cs):
    return pd.DataFrame({"checkpoint": list("abcd"), "method": ["gaussian", "cohen-r", "macer", "cs-macer"],
                         "acc": acc, "rob_cs": rob_cs})


def test_pareto_front_keeps_only_undominated_points():
    pts = _summary([0.80, 0.78, 0.70, 0.75], [0.40, 0.60, 0.65, 0.50])
    assert figures.pareto_front(pts).checkpoint.tolist() == ["c", "b", "a"]
    spec = _spec(figures.tradeoff(pts))
    assert [row["checkpoint"] for row in _data(spec, 0)] == ["c", "b", "a"]
    dots = spec["layer"][1]["encoding"]
    assert dots["shape"]["scale"]["domain"] == list(figures.SHAPES) and dots["color"]["field"] == "checkpoint"


def test_a_click_changes_only_the_data_never_the_spec():
    """Streamlit swaps a chart's data in place only when its spec is unchanged: this is what keeps
    a grid click fast, so other numbers must give the same spec with other data."""
    one = _spec(figures.tradeoff(_summary([0.80, 0.78, 0.70, 0.75], [0.40, 0.60, 0.65, 0.50])))
    two = _spec(figures.tradeoff(_summary([0.81, 0.70, 0.72, 0.74], [0.10, 0.20, 0.30, 0.45])))
    assert one["datasets"] != two["datasets"] and _without_data(one) == _without_data(two)
    curves = [pd.DataFrame({"checkpoint": ["a"] * 3, "eps": [0, 0.1, 0.2], "rob_cs": r, "rob_std": [1, 0.4, 0.1],
                            "certified_acc": [0.9, 0.5, 0.3]}) for r in ([1, 0.5, 0.2], [1, 0.3, 0.1])]
    a, b = (_spec(figures.eps_curves(c, show_overall=False)) for c in curves)
    assert a["datasets"] != b["datasets"] and _without_data(a) == _without_data(b)
    rng = np.random.default_rng(0)
    few, many = (pd.DataFrame({"r1": rng.uniform(0, 1, n), "r2": rng.uniform(0, 1, n)}) for n in (10, 6000))
    a, b = (_spec(figures.r1_vs_r2(t.assign(cost_robust_radius=t.max(1)), "focus")) for t in (few, many))
    assert len(_data(b, 1)) == 6000 and _without_data(a) == _without_data(b)
    # said in every spec (Streamlit would pick one by size): every figure draws on a canvas, the page's width
    bars = figures.per_class_bars(pd.DataFrame({"checkpoint": ["a"], "name": ["cat"], "certified_acc": [0.5]}))
    for spec in (a, bars):
        assert spec["usermeta"]["embedOptions"]["renderer"] == "canvas" and spec["autosize"]["type"] == "fit-x"


def test_figures_have_named_axes_and_the_right_numbers():
    curves = pd.DataFrame({"checkpoint": ["a"] * 3, "eps": [0, 0.1, 0.2], "rob_cs": [1, 0.5, 0.2],
                           "rob_std": [1, 0.4, 0.1], "certified_acc": [0.9, 0.5, 0.3]})
    spec = _spec(figures.eps_curves(curves, show_overall=True))
    assert "ε" in spec["encoding"]["x"]["title"]
    line = spec["layer"][-1]
    assert line["encoding"]["strokeDash"]["scale"]["domain"] == ["Rob_cs", "Rob_std", "certified acc."]
    assert line["params"][0]["bind"] == "legend"  # a legend click picks a checkpoint, the others fade
    rows = _data(spec)
    assert len(rows) == 9 and {r["share"] for r in rows if r["metric"] == "Rob_std"} == {1, 0.4, 0.1}
    heat = _spec(figures.confusion_heatmap(np.array([[3, 1], [0, 0]]), ["benign", "malignant"], "t"))
    share = {(c["true"], c["predicted"]): c["share"] for c in _data(heat, 0)}
    assert share[("benign", "benign")] == 0.75 and share[("malignant", "benign")] == 0


def test_lower_bound_ecdf_steps_to_one_per_checkpoint():
    bounds = pd.DataFrame({"checkpoint": ["a"] * 4 + ["b"] * 2, "p_lower": [0.9, 0.2, 0.6, 0.55, 0.7, 0.1]})
    rows = _data(_spec(figures.lower_bound_ecdf(bounds)), 0)
    a = [(r["p_lower"], r["share"]) for r in rows if r["checkpoint"] == "a"]
    assert a == [(0.2, 0.25), (0.55, 0.5), (0.6, 0.75), (0.9, 1.0)]
    assert max(r["share"] for r in rows if r["checkpoint"] == "b") == 1.0


def test_every_figure_is_a_valid_vega_lite_spec():
    table = pd.DataFrame({"r1": [0.1, -1.0, 0.5], "r2": [0.3, -np.inf, 0.2], "cost_robust_radius": [0.3, -1.0, 0.5]})
    per_class = pd.DataFrame({"checkpoint": ["a", "a", "b", "b"], "name": ["x", "y", "x", "y"],
                              "certified_acc": [0.5, 0.6, 0.4, 0.7]})
    steps = pd.DataFrame({"epoch": [0, 0], "step": [1, 2], "steps": [2, 2], "loss": [1.0, 0.8], "acc": [0.3, 0.4]})
    for chart in (figures.r1_vs_r2(table, "t"), figures.per_class_bars(per_class), figures.training_curves(steps)):
        assert _spec(chart)["$schema"] == figures.SCHEMA


def test_bands_only_for_the_named_checkpoints_and_every_class_named_on_class_axes():
    curves = pd.DataFrame({"checkpoint": ["a", "b", "c"], "eps": [0.0] * 3, "rob_cs": [0.5] * 3, "rob_std": [0.5] * 3,
                           "certified_acc": [0.5] * 3, **{f"{m}_{s}": [0.4] * 3 for m in ("rob_cs", "rob_std",
                                                                                         "certified_acc")
                                                         for s in ("lo", "hi")}})
    spec = figures.eps_curves(curves, False, band=True, banded=["a", "c"])
    assert spec["layer"][0]["data"] == {"name": "bands"}
    assert set(spec["datasets"]["bands"].checkpoint) == {"a", "c"} and set(spec["datasets"]["curves"].checkpoint) == {
        "a", "b", "c"}
    names = [f"a long class name {i}" for i in range(10)]
    heat = _spec(figures.confusion_heatmap(np.eye(10, dtype=int), names, "t"))
    per_class = pd.DataFrame({"checkpoint": "a", "name": names, "certified_acc": 0.5})
    votes = pd.DataFrame({"class": names, "sample": figures.VOTE_SAMPLES[0], "votes": 1, "share": 0.1,
                          "costly": "not in Ω_y"})
    axes = [heat["layer"][0]["encoding"]["x"], heat["layer"][0]["encoding"]["y"],
            _spec(figures.per_class_bars(per_class))["encoding"]["x"],
            _spec(figures.vote_histogram(votes, names))["encoding"]["x"]]
    for axis in axes:  # Vega-Lite would otherwise drop every other label that overlaps
        assert axis["axis"]["labelOverlap"] is False and axis["sort"] == names


def test_tradeoff_axes_are_fitted_to_the_points():
    summary = pd.DataFrame({"checkpoint": ["a", "b"], "method": ["gaussian", "cs-macer"], "acc": [0.82, 0.81],
                            "rob_cs": [0.17, 0.35]})
    layer = _spec(figures.tradeoff(summary))["layer"][1]["encoding"]
    for channel in ("x", "y"):
        assert layer[channel]["scale"]["zero"] is False and "domain" not in layer[channel]["scale"]
