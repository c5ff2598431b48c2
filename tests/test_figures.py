import numpy as np
import pandas as pd

from dashboard import figures


def test_pareto_front_keeps_only_undominated_points():
    pts = pd.DataFrame({"checkpoint": list("abcd"), "method": ["x"] * 4,
                        "acc": [0.80, 0.78, 0.70, 0.75], "rob_cs": [0.40, 0.60, 0.65, 0.50]})
    assert figures.pareto_front(pts).checkpoint.tolist() == ["c", "b", "a"]
    fig = figures.tradeoff(pts)
    assert any(t.name == "Pareto front" for t in fig.data)


def test_figures_have_named_axes():
    curves = pd.DataFrame({"checkpoint": ["a"] * 3, "eps": [0, 0.1, 0.2], "rob_cs": [1, 0.5, 0.2],
                           "rob_std": [1, 0.4, 0.1], "certified_acc": [0.9, 0.5, 0.3]})
    fig = figures.eps_curves(curves, show_overall=True)
    assert len(fig.data) == 3 and "ε" in fig.layout.xaxis.title.text
    assert fig.data[1].line.dash == "dash"
    heat = figures.confusion_heatmap(np.array([[3, 1], [0, 0]]), ["benign", "malignant"], "t")
    assert heat.data[0].z[0][0] == 0.75 and heat.data[0].z[1][0] == 0
