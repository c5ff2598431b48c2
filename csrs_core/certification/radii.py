"""The one radius kernel of stage B: the confidence bounds at the mode's levels and the radii that rest
on them (docs/design.md sections 2 and 3, docs/sequential.md), for arrays of examples.

Every certificate (the certificate table, the certified worst-case cost, one example's explanation)
calls `radii`. What the bounds are is a parameter: Clopper–Pearson at a fixed n (the default), a
confidence sequence for a sequential record (valid at the data-dependent n at which each example
stopped), or the vote shares themselves (the limit of either as n grows)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from csrs_core.certification.bounds import lower_confidence_bound, norm_ppf, upper_confidence_bound

MODES = ("sound", "paper")


@dataclass(frozen=True)
class Bounds:
    """One-sided bounds on a binomial proportion from k successes in n draws: lower(k, n, a) ≤ p and
    upper(k, n, a) ≥ p, each with probability ≥ 1 − a. Vectorised; n may differ per example.
    fixed_n: valid only for an n fixed before sampling (Clopper–Pearson); otherwise valid at any
    stopping time (a confidence sequence), so examples may stop at different n."""
    name: str
    lower: Callable
    upper: Callable
    fixed_n: bool = True


def _shares(k, n, a):
    return np.asarray(k, dtype=float) / np.asarray(n, dtype=float)


CLOPPER_PEARSON = Bounds("clopper-pearson", lower_confidence_bound, upper_confidence_bound)
VOTE_SHARES = Bounds("vote shares", _shares, _shares)
"""Not a confidence bound: what either bound tends to as n grows with the same vote shares."""


@dataclass
class Radii:
    """The bounds and radii of N examples (docs/design.md section 2; radii in the input's ℓ2 norm).

    p_a_lower: LCB(p_A) at α (the standard certificate's); p_a_lower_half: at α/2 (the sound events);
    r1: R1(α) = σ·Φ⁻¹(p_a_lower); r1_term: the R1 term of the mode's radius (R1(α/2) in sound mode, R1(α)
    in paper mode); r2: R2 where the example is sensitive and its top class safe, else −inf; radius:
    max(r1_term, r2) there, else −inf. With per_class: ucb [N, m], the upper bound of each costly class
    at α/(2|Ω_y|) (NaN elsewhere), and r_k [N, m], the radius within which costly class k ≠ ĉ_A cannot
    become the prediction (+inf elsewhere)."""
    p_a_lower: np.ndarray
    p_a_lower_half: np.ndarray
    r1: np.ndarray
    r1_term: np.ndarray
    r2: np.ndarray
    radius: np.ndarray
    ucb: np.ndarray | None = None
    r_k: np.ndarray | None = None


def radii(counts, c_a, omega, n, sigma: float, alpha: float, mode: str = "sound",
          bounds: Bounds = CLOPPER_PEARSON, per_class: bool = False) -> Radii:
    """The radii of N examples from their estimation counts [N, m] (fractional counts allowed), top
    classes ĉ_A [N], costly classes Ω_y as a boolean mask [N, m] and estimation sample sizes n (one
    number, or one per example).

    In sound mode, with probability ≥ 1 − α over the sampling, no ℓ2 perturbation of norm below `radius`
    makes the smoothed classifier predict a costly class (paper mode: ≥ 1 − 1.5α); R1(α) is Cohen et
    al.'s radius at level 1 − α."""
    counts = np.asarray(counts)
    N = counts.shape[0]
    rows = np.arange(N)
    c_a = np.asarray(c_a, dtype=np.int64)
    omega = np.asarray(omega, dtype=bool)
    n = np.broadcast_to(np.asarray(n), (N,)) if np.ndim(n) else n
    n_a = counts[rows, c_a]
    p_a_lower = bounds.lower(n_a, n, alpha)
    p_a_lower_half = bounds.lower(n_a, n, alpha / 2)
    with np.errstate(divide="ignore"):
        r1 = sigma * norm_ppf(p_a_lower)
        phi_half = norm_ppf(p_a_lower_half)
    r1_term = r1 if mode == "paper" else sigma * phi_half
    omega_size = omega.sum(axis=1)
    r2 = np.full(N, -np.inf)
    radius = np.full(N, -np.inf)
    idx = np.flatnonzero((omega_size > 0) & ~omega[rows, c_a])
    if idx.size:
        n_b = np.where(omega[idx], counts[idx], -1).max(axis=1)   # the largest count has the largest bound
        p_b = bounds.upper(n_b, _at(n, idx), alpha / (2 * omega_size[idx]))
        r2[idx] = sigma / 2 * (phi_half[idx] - norm_ppf(p_b))
        radius[idx] = np.maximum(r1_term[idx], r2[idx])
    out = Radii(p_a_lower, p_a_lower_half, r1, r1_term, r2, radius)
    if per_class:
        out.ucb = np.full(counts.shape, np.nan)
        out.r_k = np.full(counts.shape, np.inf)
        i, k = np.nonzero(omega)
        if i.size:
            out.ucb[i, k] = bounds.upper(counts[i, k], _at(n, i), alpha / (2 * omega_size[i]))
            with np.errstate(divide="ignore"):
                out.r_k[i, k] = sigma / 2 * (phi_half[i] - norm_ppf(out.ucb[i, k]))
            out.r_k[rows, c_a] = np.inf                               # the top class has no such radius
    return out


def _at(n, idx):
    return n[idx] if np.ndim(n) else n


def deciding_radius(radius, r1, pred_std, label, sensitive) -> np.ndarray:
    """The radius that decides an example's outcome at ε: the cost-sensitive radius of a sensitive
    example, R1 of a non-sensitive one whose standard certificate predicts its true class, else −inf."""
    correct = np.asarray(pred_std) == np.asarray(label)
    return np.where(sensitive, radius, np.where(correct, r1, -np.inf)).astype(float)
