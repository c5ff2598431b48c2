"""Stage B: certificates from sampled counts (paper Algorithm 1), vectorised over examples.

No sampling happens here: changing the cost matrix, alpha or the mode only re-runs this."""
from __future__ import annotations

import numpy as np
import pandas as pd

from csrs_core import CSRSError
from csrs_core.certification.cost import CostMatrix
from csrs_core.certification.radii import CLOPPER_PEARSON, MODES, Bounds, radii


def _validate(counts0, counts, labels, cost: CostMatrix, bounds: Bounds, mode: str):
    counts0 = np.asarray(counts0)
    counts = np.asarray(counts)
    labels = np.asarray(labels, dtype=np.int64)
    if counts0.ndim != 2 or counts.shape != counts0.shape or labels.shape != (counts.shape[0],):
        raise CSRSError(f"counts0 {counts0.shape}, counts {counts.shape} and labels {labels.shape} "
                        "must be [N, m], [N, m] and [N]")
    if counts.shape[1] != cost.m:
        raise CSRSError(f"the counts have {counts.shape[1]} classes but the cost matrix has {cost.m}")
    n_per_row = counts.sum(axis=1)
    if bounds.fixed_n and counts.shape[0] and not np.all(n_per_row == n_per_row[0]):
        raise CSRSError("every example must have the same number n of estimation samples")
    if not bounds.fixed_n and mode == "paper":
        raise CSRSError("paper mode does not apply to sequentially sampled counts: their bounds are confidence "
                        "sequences, read in sound mode only (use mode 'sound')")
    return counts0, counts, labels


def _sample_sizes(counts, bounds: Bounds):
    """n: the estimation sample size every example shares (checked by _validate), or each example's own
    when the bounds hold at any stopping time."""
    if not bounds.fixed_n:
        return counts.sum(axis=1)
    return int(counts[0].sum()) if len(counts) else 0


def certify_from_counts(counts0, counts, labels, cost: CostMatrix, sigma: float,
                        alpha: float = 0.001, mode: str = "sound", bounds: Bounds = CLOPPER_PEARSON) -> pd.DataFrame:
    """One row per example: the standard certificate (pred_std, r1, from p_a_lower, the lower
    confidence bound of the top class's probability) and the cost-sensitive one.

    With probability at least 1 - alpha over the sampling (mode 'sound'; 1 - 1.5 alpha for
    'paper', Algorithm 1 as printed), no l2 perturbation of norm < cost_robust_radius makes the
    smoothed classifier predict a class in Omega_y. bounds: Clopper-Pearson for counts of a fixed n,
    a confidence sequence (a sequential record's CountsRecord.bounds) for counts of data-dependent
    sizes, sound mode only."""
    if mode not in MODES:
        raise CSRSError(f"mode must be one of {MODES}; got {mode!r}")
    if not 0 < alpha < 1:
        raise CSRSError(f"alpha must lie in (0, 1); got {alpha}")
    counts0, counts, labels = _validate(counts0, counts, labels, cost, bounds, mode)
    c_a = counts0.argmax(axis=1)  # ties: lowest index
    omega = cost.matrix[labels]   # [N, m] bool
    r = radii(counts, c_a, omega, _sample_sizes(counts, bounds), sigma, alpha, mode, bounds)
    return pd.DataFrame({
        "label": labels,
        "c_a": c_a,
        "p_a_lower": r.p_a_lower,
        "pred_std": np.where(r.r1 > 0, c_a, -1),
        "r1": r.r1,
        "sensitive": omega.any(axis=1),
        "r2": r.r2,
        "cost_robust_radius": r.radius,
        "pred": np.where(r.radius > 0, c_a, -1),
    })


def certified_cost(counts0, counts, labels, cost: CostMatrix, sigma: float, alpha: float = 0.001,
                   eps=0.0, mode: str = "sound", bounds: Bounds = CLOPPER_PEARSON) -> np.ndarray:
    """The certified worst-case cost of every example (docs/design.md section 3), for a binary or
    real-valued cost matrix: with probability at least 1 - alpha over the sampling (mode 'sound';
    1 - 1.5 alpha for 'paper'), no l2 perturbation of norm <= eps makes the smoothed classifier
    predict a class k with C[y, k] > cost[i].

    eps: one perturbation size (returns float [N]) or a 1-d array of them (returns float
    [len(eps), N], one row per eps: a whole curve from one call). Non-sensitive examples cost 0.
    For a binary C, cost == 0 exactly where certify_from_counts' cost_robust_radius > eps. bounds: as
    for certify_from_counts."""
    if mode not in MODES:
        raise CSRSError(f"mode must be one of {MODES}; got {mode!r}")
    if not 0 < alpha < 1:
        raise CSRSError(f"alpha must lie in (0, 1); got {alpha}")
    eps = np.asarray(eps, dtype=float)
    if eps.ndim > 1:
        raise CSRSError(f"eps must be a number or a 1-d array of numbers; got shape {eps.shape}")
    if np.any(np.isnan(eps)) or np.any(eps < 0):
        raise CSRSError(f"eps must be >= 0; got {eps.tolist()}")
    counts0, counts, labels = _validate(counts0, counts, labels, cost, bounds, mode)
    base, r1, r_sorted, cum = _cost_steps(counts0, counts, labels, cost, sigma, alpha, mode, bounds)
    grid = eps.reshape(-1)
    out = np.empty((grid.size, len(labels)))
    rows = np.arange(len(labels))
    step = max(1, (1 << 24) // max(r_sorted.size, 1))        # bounds the [E, N, m] comparison's memory
    for lo in range(0, grid.size, step):
        e = grid[lo:lo + step]
        passed = (r_sorted[None] <= e[:, None, None]).sum(axis=2)          # [E, N] classes reachable
        out[lo:lo + step] = np.where(r1[None] > e[:, None], base[None], cum[rows[None], passed])
    return out[0] if eps.ndim == 0 else out


def _cost_steps(counts0, counts, labels, cost: CostMatrix, sigma, alpha, mode, bounds: Bounds):
    """The step function eps -> certified cost of every example: base = C[y, c_A]; r1 (R1 at
    alpha/2 in sound mode, at alpha in paper mode), below which the cost is base; r_sorted [N, m],
    the radii r_k of the costly classes k != c_A in increasing order (+inf pads); and cum [N, m+1],
    cum[:, t] = max(base, costs of the first t classes of r_sorted): the cost once t of them are
    reachable (r_k <= eps)."""
    rows = np.arange(len(labels))
    c_a = counts0.argmax(axis=1)  # ties: lowest index
    omega = cost.matrix[labels]
    r = radii(counts, c_a, omega, _sample_sizes(counts, bounds), sigma, alpha, mode, bounds, per_class=True)
    weights = cost.weights[labels]                   # [N, m]
    base = weights[rows, c_a]
    costly = omega.copy()
    costly[rows, c_a] = False
    order = np.argsort(r.r_k, axis=1, kind="stable")
    r_sorted = np.take_along_axis(r.r_k, order, axis=1)
    w_sorted = np.take_along_axis(np.where(costly, weights, 0.0), order, axis=1)
    cum = np.maximum.accumulate(np.concatenate([base[:, None], w_sorted], axis=1), axis=1)
    return base, r.r1_term, r_sorted, cum


def smoothed_confusion(counts0, labels, m: int) -> np.ndarray:
    """[m, m] counts of (true class, top class of the selection sample c_A)."""
    c_a = np.asarray(counts0).argmax(axis=1)
    return np.bincount(np.asarray(labels) * m + c_a, minlength=m * m).reshape(m, m)
