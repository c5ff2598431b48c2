"""Confidence sequences for a binomial proportion: bounds that hold at every sample size at once, so
they stay valid at a data-dependent stopping time (docs/sequential.md).

The family is Robbins' beta-binomial conjugate mixture with the Krichevsky–Trofimov prior Beta(½, ½):
for c successes in t draws, M_t(p) = B(c+½, t−c+½) / B(½, ½) / (p^c (1−p)^(t−c)) is a nonnegative
martingale with mean 1 under the true p, so by Ville's inequality P(∃t: M_t(p) ≥ 1/a) ≤ a. The set
{p : M_t(p) < 1/a} is an interval (log M_t is convex in p); its lower end is a lower bound and its
upper end an upper bound, each holding with probability ≥ 1 − a simultaneously for every t."""
from __future__ import annotations

import numpy as np
from scipy.special import betaln

from csrs_core.certification.radii import Bounds

PRIOR = 0.5
FAMILY = "beta-binomial mixture, Beta(1/2, 1/2) prior"
_BISECTIONS = 60


def _threshold(c, t, a):
    """The log-likelihood c·ln p + (t−c)·ln(1−p) at which M_t(p) = 1/a."""
    return betaln(c + PRIOR, t - c + PRIOR) - betaln(PRIOR, PRIOR) - np.log(1.0 / a)


def _log_likelihood(p, c, t):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(c > 0, c * np.log(p), 0.0) + np.where(t > c, (t - c) * np.log1p(-p), 0.0)


def _edge(c, t, a, lower: bool) -> np.ndarray:
    """The end of the confidence set on the side of 0 (lower) or 1 (upper), found by bisection and
    rounded outwards: the returned point lies outside the set or on its boundary."""
    c, t, a = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (c, t, a)))
    c, t, a = c.copy(), t.copy(), a.copy()
    if not lower:                      # the upper end for c is one minus the lower end for t − c
        return 1.0 - _edge(t - c, t, a, lower=True)
    out = np.zeros(c.shape)
    live = (c > 0) & (t > 0)
    if not live.any():
        return out
    c, t, a = c[live], t[live], a[live]
    level = _threshold(c, t, a)
    lo, hi = np.zeros(c.shape), c / t             # outside the set at 0, inside at the maximum c / t
    for _ in range(_BISECTIONS):
        mid = (lo + hi) / 2
        inside = _log_likelihood(mid, c, t) > level
        lo, hi = np.where(inside, lo, mid), np.where(inside, mid, hi)
    out[live] = lo
    return out


def cs_lower(c, t, a) -> np.ndarray:
    """L_t with P(∃t: L_t > p) ≤ a when c counts successes in the first t of i.i.d. Bernoulli(p) draws;
    0 when c = 0."""
    return _edge(c, t, a, lower=True)


def cs_upper(c, t, a) -> np.ndarray:
    """U_t with P(∃t: U_t < p) ≤ a for the same draws; 1 when c = t."""
    return _edge(c, t, a, lower=False)


BETA_BINOMIAL = Bounds("beta-binomial", cs_lower, cs_upper, fixed_n=False)
