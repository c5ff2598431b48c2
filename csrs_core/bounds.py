"""Clopper-Pearson one-sided confidence bounds on a binomial proportion, vectorised."""
from __future__ import annotations

import numpy as np
from scipy.special import betaincinv, ndtri


def lower_confidence_bound(k, n, alpha) -> np.ndarray:
    """p_lower with P[p_lower <= p] >= 1 - alpha when k ~ Binomial(n, p); 0 when k = 0."""
    k = np.asarray(k, dtype=float)
    n = np.broadcast_to(np.asarray(n, dtype=float), k.shape)
    safe_k = np.maximum(k, 1.0)
    out = betaincinv(safe_k, n - safe_k + 1.0, np.broadcast_to(alpha, k.shape))
    return np.where(k > 0, out, 0.0)


def upper_confidence_bound(k, n, alpha) -> np.ndarray:
    """p_upper with P[p_upper >= p] >= 1 - alpha when k ~ Binomial(n, p); 1 when k = n."""
    k = np.asarray(k, dtype=float)
    n = np.broadcast_to(np.asarray(n, dtype=float), k.shape)
    safe_k = np.minimum(k, n - 1.0)
    out = betaincinv(safe_k + 1.0, n - safe_k, 1.0 - np.broadcast_to(alpha, k.shape))
    return np.where(k < n, out, 1.0)


def norm_ppf(p) -> np.ndarray:
    """Phi^-1, with Phi^-1(0) = -inf and Phi^-1(1) = +inf."""
    return ndtri(np.asarray(p, dtype=float))


def max_certifiable_radius(sigma: float, n: int, alpha: float) -> float:
    """The largest R1 that n samples at level alpha can give: sigma * Phi^-1(alpha^(1/n)) (all n agree)."""
    return float(sigma * norm_ppf(alpha ** (1.0 / n)))
