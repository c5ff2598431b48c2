"""Stage-B metrics (docs/design.md section 3) from a certify_from_counts table."""
from __future__ import annotations

import numpy as np
import pandas as pd


def _share(hit: np.ndarray, among: np.ndarray) -> float:
    total = int(among.sum())
    return float((hit & among).sum() / total) if total else float("nan")


def summarize(table: pd.DataFrame, eps: float = 0.25) -> dict:
    """Acc, Rob_cs(eps), Rob_std(eps), Rob_non(eps); Rob_cs/Rob_std are NaN with no sensitive example.

    Also balanced_acc: the mean over the classes present of each class's accuracy (see
    balanced_accuracy), which a class imbalance cannot inflate the way it can Acc."""
    label = table["label"].to_numpy()
    sensitive = table["sensitive"].to_numpy()
    correct = table["pred_std"].to_numpy() == label
    r1 = table["r1"].to_numpy()
    safe_top = table["r2"].to_numpy() > -np.inf  # sensitive with c_A outside Omega_y (and n_A > 0)
    everyone = np.ones(len(table), dtype=bool)
    return {
        "acc": _share(correct, everyone),
        "rob_cs": _share(table["cost_robust_radius"].to_numpy() > eps, sensitive),
        "rob_std": _share(safe_top & (r1 > eps), sensitive),
        "rob_non": _share(correct & (r1 > eps), ~sensitive),
        "n": int(len(table)),
        "n_sensitive": int(sensitive.sum()),
        "balanced_acc": balanced_accuracy(table),
    }


def average_certified_radius(table: pd.DataFrame) -> float:
    """ACR (Zhai et al.'s MACER): the mean over all examples of R1(alpha) where the standard
    certificate predicts the true class, 0 elsewhere; NaN with no example."""
    correct = table["pred_std"].to_numpy() == table["label"].to_numpy()
    radius = np.where(correct, table["r1"].to_numpy(), 0.0)
    return float(radius.mean()) if len(radius) else float("nan")


def abstention_rate(table: pd.DataFrame) -> float:
    """The share of all examples whose standard certificate abstains (pred_std == -1); NaN with no example."""
    return _share(table["pred_std"].to_numpy() == -1, np.ones(len(table), dtype=bool))


def per_class_recall(table: pd.DataFrame, eps: float | None = None, num_classes: int | None = None) -> np.ndarray:
    """[m] per true class c: the share of class-c examples whose standard certificate predicts c
    (eps None: the class's accuracy, its recall), or predicts c with R1(alpha) > eps (the certified
    recall at eps; per_class's certified_acc column). NaN for a class with no example; m is
    num_classes, or the largest label + 1."""
    label = table["label"].to_numpy().astype(np.int64)
    m = max(int(num_classes or 0), int(label.max()) + 1 if label.size else 0)
    hit = table["pred_std"].to_numpy() == label
    if eps is not None:
        hit = hit & (table["r1"].to_numpy() > eps)
    n = np.bincount(label, minlength=m).astype(float)
    k = np.bincount(label[hit], minlength=m).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, k / n, np.nan)


def balanced_accuracy(table: pd.DataFrame, eps: float | None = None) -> float:
    """Mean over the classes that have examples of per_class_recall (eps None: balanced accuracy;
    with eps, the balanced certified accuracy at eps); NaN with no example."""
    recall = per_class_recall(table, eps)
    present = recall[~np.isnan(recall)]
    return float(present.mean()) if present.size else float("nan")


def eps_curve(table: pd.DataFrame, eps_grid) -> pd.DataFrame:
    """Rob_cs, Rob_std and certified accuracy (all examples) at each eps of the grid."""
    label = table["label"].to_numpy()
    sensitive = table["sensitive"].to_numpy()
    radius = table["cost_robust_radius"].to_numpy()
    r1 = table["r1"].to_numpy()
    correct = table["pred_std"].to_numpy() == label
    safe_top = table["r2"].to_numpy() > -np.inf
    eps = np.asarray(eps_grid, dtype=float)[:, None]
    n_sens = max(int(sensitive.sum()), 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rob_cs = ((radius[None] > eps) & sensitive).sum(1) / n_sens if n_sens else np.full(len(eps), np.nan)
        rob_std = ((r1[None] > eps) & safe_top & sensitive).sum(1) / n_sens if n_sens else np.full(len(eps), np.nan)
    cert_acc = ((r1[None] > eps) & correct).sum(1) / max(len(label), 1)
    return pd.DataFrame({"eps": eps[:, 0], "rob_cs": rob_cs, "rob_std": rob_std, "certified_acc": cert_acc})


def per_class(table: pd.DataFrame, eps: float, class_names=None) -> pd.DataFrame:
    """Per true class: examples, accuracy, certified accuracy at eps and Rob_cs at eps (sensitive rows)."""
    label = table["label"].to_numpy()
    m = len(class_names) if class_names is not None else (int(label.max()) + 1 if len(label) else 0)
    correct = table["pred_std"].to_numpy() == label
    sensitive = table["sensitive"].to_numpy()

    def per(mask):
        return np.bincount(label[mask], minlength=m).astype(float)

    n = per(np.ones(len(label), bool))
    n_sens = per(sensitive)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.DataFrame({
            "class": np.arange(m),
            "name": list(class_names) if class_names is not None else [str(c) for c in range(m)],
            "n": n.astype(int),
            "acc": per(correct) / n,
            "certified_acc": per(correct & (table["r1"].to_numpy() > eps)) / n,
            "rob_cs": np.where(n_sens > 0, per(table["cost_robust_radius"].to_numpy() > eps) / n_sens, np.nan),
            "sensitive": n_sens > 0,
        })


# Certified worst-case cost (docs/design.md section 3), from certify.certified_cost -------------------

def expected_cost(cost_vector) -> float | np.ndarray:
    """The certified expected cost, mean_x cost(x, eps) over all examples (lower is better).

    cost_vector: float [N] from certified_cost at one eps (returns a float), or [E, N] for a grid
    of eps (returns [E]). NaN with no example."""
    cost = np.asarray(cost_vector, dtype=float)
    if cost.shape[-1] == 0:
        return float("nan") if cost.ndim == 1 else np.full(cost.shape[:-1], np.nan)
    mean = cost.mean(axis=-1)
    return float(mean) if cost.ndim == 1 else mean


def rob_cs_at(cost_vector, sensitive_mask, tau: float = 0.0) -> float | np.ndarray:
    """Rob_cs(eps, tau): the share of sensitive examples whose certified cost is <= tau (tau = 0:
    Rob_cs(eps); for a binary C exactly summarize's rob_cs). cost_vector: [N] (returns a float) or
    [E, N] (returns [E]); sensitive_mask: bool [N]. NaN with no sensitive example."""
    cost = np.asarray(cost_vector, dtype=float)
    sensitive = np.asarray(sensitive_mask, dtype=bool)
    if sensitive.shape != cost.shape[-1:]:
        raise ValueError(f"sensitive_mask {sensitive.shape} does not match the costs {cost.shape}")
    total = int(sensitive.sum())
    if total == 0:
        return float("nan") if cost.ndim == 1 else np.full(cost.shape[:-1], np.nan)
    share = ((cost <= tau) & sensitive).sum(axis=-1) / total
    return float(share) if cost.ndim == 1 else share


def cost_curve(costs, eps_grid, sensitive_mask, tau: float = 0.0) -> pd.DataFrame:
    """Per eps of the grid: the certified expected cost and Rob_cs(eps, tau). costs: [len(eps), N]
    from certified_cost(..., eps=eps_grid)."""
    eps = np.asarray(eps_grid, dtype=float).reshape(-1)
    costs = np.asarray(costs, dtype=float).reshape(len(eps), -1)
    return pd.DataFrame({"eps": eps, "expected_cost": expected_cost(costs),
                         "rob_cs_tau": rob_cs_at(costs, sensitive_mask, tau), "tau": float(tau)})


def summarize_cost(cost_vector, sensitive_mask, tau: float = 0.0) -> dict:
    """At one eps: expected_cost (all examples), expected_cost_sensitive (the mean over sensitive
    examples, the only ones that can cost), rob_cs_tau (Rob_cs(eps, tau)), tau, n, n_sensitive."""
    cost = np.asarray(cost_vector, dtype=float)
    sensitive = np.asarray(sensitive_mask, dtype=bool)
    return {"expected_cost": expected_cost(cost),
            "expected_cost_sensitive": expected_cost(cost[sensitive]),
            "rob_cs_tau": rob_cs_at(cost, sensitive, tau), "tau": float(tau),
            "n": int(cost.size), "n_sensitive": int(sensitive.sum())}
