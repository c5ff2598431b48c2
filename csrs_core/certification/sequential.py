"""When a sequentially sampled example may stop (docs/sequential.md): each requested ε is
decided when the running radius, read with confidence-sequence bounds, exceeds it (certified) or when
even optimistic vote shares could not certify it within the cap (futile). Stopping on these rules keeps
every certificate valid: the bounds hold at any stopping time, and futility only costs power."""
from __future__ import annotations

import numpy as np

from csrs_core.certification.cost import CostMatrix
from csrs_core.certification.radii import deciding_radius, radii
from csrs_core.certification.sequences import BETA_BINOMIAL
from csrs_core.settings import SettingError


def running_radius(counts0, counts, labels, cost: CostMatrix, sigma: float, alpha: float) -> np.ndarray:
    """Each example's deciding radius (radii.deciding_radius) from its counts so far, in sound mode with
    the confidence-sequence bounds: valid at whatever n each example has reached."""
    c_a = np.asarray(counts0).argmax(axis=1)
    omega = cost.matrix[labels]
    r = radii(counts, c_a, omega, counts.sum(axis=1), sigma, alpha, "sound", BETA_BINOMIAL)
    return deciding_radius(r.radius, r.r1, np.where(r.r1 > 0, c_a, -1), labels, omega.any(axis=1))


def optimistic_radius(counts0, counts, labels, cost: CostMatrix, sigma: float, alpha: float, cap: int) -> np.ndarray:
    """The deciding radius the confidence sequence would give at n = cap if the top class's share were its
    current upper bound and each costly class's its current lower bound: more than any plausible future."""
    counts = np.asarray(counts)
    N = len(counts)
    rows = np.arange(N)
    c_a = np.asarray(counts0).argmax(axis=1)
    omega = cost.matrix[labels]
    t = counts.sum(axis=1)
    shares = np.zeros(counts.shape)
    shares[rows, c_a] = BETA_BINOMIAL.upper(counts[rows, c_a], t, alpha / 2)
    i, k = np.nonzero(omega & (np.arange(counts.shape[1]) != c_a[:, None]))
    shares[i, k] = BETA_BINOMIAL.lower(counts[i, k], t[i], alpha / (2 * omega[i].sum(axis=1)))
    r = radii(shares * cap, c_a, omega, np.full(N, float(cap)), sigma, alpha, "sound", BETA_BINOMIAL)
    return deciding_radius(r.radius, r.r1, np.where(r.r1 > 0, c_a, -1), labels, omega.any(axis=1))


def undecided(counts0, counts, labels, cost: CostMatrix, sigma: float, alpha: float, eps, cap: int) -> np.ndarray:
    """bool [N]: the examples that should keep sampling: some ε of `eps` is neither certified by the
    running radius nor out of reach within `cap` estimation samples, and the cap is not reached."""
    eps = np.asarray(eps, dtype=float)
    counts = np.asarray(counts)
    now = running_radius(counts0, counts, labels, cost, sigma, alpha)
    best = optimistic_radius(counts0, counts, labels, cost, sigma, alpha, cap)
    open_eps = (now[:, None] <= eps[None]) & (best[:, None] > eps[None])
    return open_eps.any(axis=1) & (counts.sum(axis=1) < cap)


def largest_certifiable_radius(sigma: float, cap: int, alpha: float) -> float:
    """The largest deciding radius any example can reach with `cap` estimation samples read with the
    confidence sequence: every vote for the top class (R1 at α for a non-sensitive example; the sound
    radius with a single costly class that got no vote for a sensitive one)."""
    best = -np.inf
    for omega in ([False, False], [False, True]):
        mask = np.array([omega])
        r = radii(np.array([[cap, 0]]), [0], mask, np.array([cap]), sigma, alpha, "sound", BETA_BINOMIAL)
        best = max(best, float(r.radius[0] if mask.any() else r.r1[0]))
    return best


def check_eps(eps, sigma: float, cap: int, alpha: float) -> tuple[float, ...]:
    """The requested radii, refused (naming the setting) when empty, negative, or beyond what `cap`
    samples can ever certify."""
    eps = tuple(float(e) for e in eps)
    if not eps or any(not np.isfinite(e) or e < 0 for e in eps):
        raise SettingError(f"--eps = {','.join(map(str, eps)) or '(empty)'} is not allowed with --sequential: give one "
                        "or more radii ≥ 0, comma-separated (e.g. 0.25,0.5)")
    top = largest_certifiable_radius(sigma, cap, alpha)
    if max(eps) >= top:
        raise SettingError(f"--eps = {max(eps):g} cannot be certified with --n = {cap:,} samples at σ = {sigma:g}, "
                        f"α = {alpha:g}: the largest certifiable radius at that cap is {top:.4f}; raise --n or "
                        "lower --eps")
    return eps
