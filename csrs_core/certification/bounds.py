"""Clopper-Pearson one-sided confidence bounds on a binomial proportion, vectorised.

Bounds are memoised per (n, alpha) in tables indexed by the count k, filled lazily: stage B
re-runs with another cost matrix then costs a table lookup instead of a Beta quantile per example."""
from __future__ import annotations

import numpy as np
from scipy.special import betaincinv, ndtri

_TABLES: dict[tuple, np.ndarray] = {}
_MAX_TABLES = 128


def _lcb(k, n, a):
    safe_k = np.maximum(k, 1.0)
    return np.where(k > 0, betaincinv(safe_k, n - safe_k + 1.0, a), 0.0)


def _ucb(k, n, a):
    safe_k = np.minimum(k, n - 1.0)
    return np.where(k < n, betaincinv(safe_k + 1.0, n - safe_k, 1.0 - a), 1.0)


def _bound(kind, fn, k, n, alpha) -> np.ndarray:
    k = np.asarray(k)
    alpha = np.broadcast_to(np.asarray(alpha, dtype=float), k.shape)
    if np.ndim(n) or not float(n).is_integer() or not np.all(k == np.round(k)):
        return fn(k.astype(float), np.asarray(n, dtype=float), alpha)
    n, k = int(n), k.astype(np.int64)
    out = np.empty(k.shape)
    for a in np.unique(alpha):
        sel = alpha == a
        table = _TABLES.get((kind, n, a))
        if table is None:
            if len(_TABLES) >= _MAX_TABLES:
                _TABLES.clear()
            table = _TABLES[(kind, n, a)] = np.full(n + 1, np.nan)
        ks = k[sel]
        need = np.unique(ks[np.isnan(table[ks])])
        if need.size:
            table[need] = fn(need.astype(float), float(n), a)
        out[sel] = table[ks]
    return out


def lower_confidence_bound(k, n, alpha) -> np.ndarray:
    """p_lower with P[p_lower <= p] >= 1 - alpha when k ~ Binomial(n, p); 0 when k = 0."""
    return _bound("lcb", _lcb, k, n, alpha)


def upper_confidence_bound(k, n, alpha) -> np.ndarray:
    """p_upper with P[p_upper >= p] >= 1 - alpha when k ~ Binomial(n, p); 1 when k = n."""
    return _bound("ucb", _ucb, k, n, alpha)


def norm_ppf(p) -> np.ndarray:
    """Phi^-1, with Phi^-1(0) = -inf and Phi^-1(1) = +inf."""
    return ndtri(np.asarray(p, dtype=float))


def max_certifiable_radius(sigma: float, n: int, alpha: float) -> float:
    """The largest R1 that n samples at level alpha can give: sigma * Phi^-1(alpha^(1/n)) (all n agree)."""
    return float(sigma * norm_ppf(alpha ** (1.0 / n)))
