"""Stage B, per example: the outcome of a certificate at perturbation size ε, why it is what it is,
and how many samples would change it. numpy, scipy and pandas only (no torch), like `certify`.

Outcome at ε of one example (docs/design.md sections 2 and 3), in this order of precedence:
- ``certified``: a sensitive example with cost_robust_radius > ε (the event Rob_cs(ε) counts), or a
  non-sensitive one whose standard certificate predicts the true class with R1(α) > ε (Rob_non(ε));
- ``abstained``: otherwise, when the standard certificate abstains (pred_std == -1: LCB(p_A) at α ≤ 1/2);
- ``costly prediction``: otherwise, a sensitive example whose top class ĉ_A lies in Ω_y;
- ``not certified at ε``: everything else (a radius ≤ ε, or a wrong top class of a non-sensitive example).
A sensitive example can be certified although the standard certificate abstains: R2 can be positive
with p_A < 1/2 when the costly classes get few votes."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from csrs_core.certification.cost import CostMatrix
from csrs_core.certification.radii import CLOPPER_PEARSON, VOTE_SHARES, Bounds, deciding_radius, radii

CERTIFIED, ABSTAINED, COSTLY, NOT_CERTIFIED = "certified", "abstained", "costly prediction", "not certified at ε"
OUTCOMES = (CERTIFIED, ABSTAINED, COSTLY, NOT_CERTIFIED)
OUTCOME_RULE = ("certified: a sensitive example whose cost-sensitive radius exceeds ε, or a non-sensitive one "
                "whose standard certificate predicts its true class with R1 > ε; abstained: otherwise, when the "
                "standard certificate abstains (LCB(p_A) at α ≤ 1/2); costly prediction: otherwise, when the top "
                "class ĉ_A of a sensitive example lies in Ω_y; not certified at ε: everything else.")
N_MAX = 10 ** 9  # the needed-n search gives up beyond this many samples


def top_is_costly(table: pd.DataFrame, cost: CostMatrix) -> np.ndarray:
    """bool [N]: the top class ĉ_A lies in Ω_y (predicting it for the true class costs)."""
    return cost.matrix[table.label.to_numpy(), table.c_a.to_numpy()]


def radius(table: pd.DataFrame) -> np.ndarray:
    """The radius that decides the outcome of every row of a certify_from_counts table (radii.deciding_radius)."""
    return deciding_radius(table.cost_robust_radius, table.r1, table.pred_std, table.label, table.sensitive)


def outcomes(table: pd.DataFrame, cost: CostMatrix, eps: float) -> np.ndarray:
    """The outcome of every row of a certify_from_counts table at ε (the module docstring's rule)."""
    certified = radius(table) > eps
    abstained = (table.pred_std == -1).to_numpy()
    costly = table.sensitive.to_numpy() & top_is_costly(table, cost)
    return np.select([certified, abstained, costly], [CERTIFIED, ABSTAINED, COSTLY], NOT_CERTIFIED).astype(object)


def discordant(outcome_a, outcome_b) -> np.ndarray:
    """bool [N]: the two checkpoints' outcomes at ε differ (e.g. certified for one, abstained for the other)."""
    return np.asarray(outcome_a) != np.asarray(outcome_b)


# one example ----------------------------------------------------------------------------------------
def _deciding_radius(counts: np.ndarray, c_a: int, label: int, omega: np.ndarray, n: float, sigma: float,
                     alpha: float, mode: str, bounds: Bounds = CLOPPER_PEARSON) -> float:
    """One example's deciding radius (radii.deciding_radius) from its counts (fractional counts allowed)."""
    r = radii(counts[None], [c_a], omega[None], np.array([n]), sigma, alpha, mode, bounds)
    pred_std = c_a if r.r1[0] > 0 else -1
    return float(deciding_radius(r.radius, r.r1, pred_std, label, omega.any())[0])


def limit_radius(shares: np.ndarray, c_a: int, label: int, omega: np.ndarray, sigma: float, mode: str) -> float:
    """The deciding radius as n grows without bound with the same vote shares (the bounds reach the shares)."""
    return _deciding_radius(shares, c_a, label, omega, 1.0, sigma, 0.5, mode, VOTE_SHARES)


def needed_n(counts, c_a: int, label: int, omega, sigma: float, alpha: float, mode: str, eps: float,
             n_max: int = N_MAX) -> int | None:
    """An estimate of the smallest number of estimation samples n at which the same vote shares
    (counts / n, scaled to fractional counts shares·n) would give a deciding radius > eps; None when
    no n would (a costly or wrong top class, or a limit radius ≤ eps) or more than n_max would be
    needed. The real counts of a larger sample vary, so this is an estimate, not a promise."""
    counts = np.asarray(counts, dtype=float)
    omega = np.asarray(omega, dtype=bool)
    n = counts.sum()
    if n <= 0:
        return None
    shares = counts / n
    if not limit_radius(shares, c_a, label, omega, sigma, mode) > eps:
        return None

    def certifies(m: int) -> bool:
        return _deciding_radius(shares * m, c_a, label, omega, float(m), sigma, alpha, mode) > eps

    lo, hi = 0, max(int(n), 1)   # certifies(lo) is False by convention (no samples certify nothing)
    while not certifies(hi):
        lo, hi = hi, hi * 2
        if hi > n_max:
            return None
    while hi - lo > 1:           # the bounds tighten towards the shares as m grows: monotone
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if certifies(mid) else (mid, hi)
    return hi


def _name(classes, k: int) -> str:
    return str(classes[k]) if classes is not None else f"class {k}"


def format_radius(x: float) -> str:
    """A radius as every table and caption shows it: four decimals, or "—" where there is none (−∞: no
    cost-sensitive certificate, e.g. for a non-sensitive example or a costly top class)."""
    return "—" if x == -math.inf else ("+∞" if x == math.inf else f"{x:.4f}")


def for_download(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` as the CSV downloads write it: a radius of −∞ (none) as an empty cell, as it is "—" on the page."""
    return frame.replace(-math.inf, math.nan)


def explain(counts0, counts, label: int, cost: CostMatrix, sigma: float, alpha: float, mode: str, eps: float,
            classes=None, bounds: Bounds = CLOPPER_PEARSON) -> dict:
    """Every number behind one example's certificates, from its counts (the same rules as
    certify_from_counts), its outcome at ε and the reasons in words.

    Keys: c_a, n_a, n, n0, sensitive, omega (list of costly classes), p_a_lower (LCB at α),
    p_a_lower_half (at α/2), r1 (R1(α)), r1_term (the R1 term of the mode's radius), r2, radius (the
    deciding radius, see radius()), pred_std, outcome, costly (DataFrame of the classes in Ω_y: class,
    name, votes, ucb at α/(2|Ω_y|), r_k, NaN for ĉ_A), limiting (the class that limits R2, or None),
    needed_n, limit (the deciding radius as n → ∞ with the same shares), reasons (list of sentences).
    bounds: those of the record the counts come from (a sequential record's confidence sequence); needed_n
    always estimates a fixed-n run's (Clopper–Pearson) need."""
    counts0 = np.asarray(counts0, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    label = int(label)
    n, n0 = int(counts.sum()), int(counts0.sum())
    c_a = int(counts0.argmax())                          # ties: lowest index, as certify_from_counts
    n_a = int(counts[c_a])
    omega = cost.matrix[label].copy()
    sensitive = bool(omega.any())
    r = radii(counts[None], [c_a], omega[None], n, sigma, alpha, mode, bounds, per_class=True)
    p_lower, p_lower_half, r1, r1_term = (float(v[0]) for v in (r.p_a_lower, r.p_a_lower_half, r.r1, r.r1_term))
    pred_std = c_a if r1 > 0 else -1
    ks = np.flatnonzero(omega)
    r_k = np.where(ks == c_a, np.nan, r.r_k[0, ks])       # the top class itself has no such radius
    costly = pd.DataFrame({"class": ks, "name": [_name(classes, k) for k in ks], "votes": counts[ks],
                           "ucb": r.ucb[0, ks], "r_k": r_k})
    top_costly = bool(omega[c_a])
    r2, limiting = float(r.r2[0]), None
    if sensitive and not top_costly:
        limiting = int(ks[np.argmax(counts[ks])])        # the largest count has the largest UCB
    rad = float(deciding_radius(r.radius, r.r1, pred_std, label, sensitive)[0])
    certified = rad > eps
    if certified:
        outcome = CERTIFIED
    elif pred_std == -1:
        outcome = ABSTAINED
    elif sensitive and top_costly:
        outcome = COSTLY
    else:
        outcome = NOT_CERTIFIED
    shares = counts / n if n else counts.astype(float)
    limit = limit_radius(shares, c_a, label, omega, sigma, mode) if n else -math.inf
    need = None if certified else needed_n(counts, c_a, label, omega, sigma, alpha, mode, eps)

    out = {"c_a": c_a, "n_a": n_a, "n": n, "n0": n0, "sensitive": sensitive, "omega": [int(k) for k in ks],
           "p_a_lower": p_lower, "p_a_lower_half": p_lower_half, "r1": r1, "r1_term": r1_term, "r2": r2,
           "radius": rad, "pred_std": pred_std, "outcome": outcome, "costly": costly, "limiting": limiting,
           "needed_n": need, "limit": limit}
    return {**out, "reasons": _reasons(out, label, alpha, mode, eps, classes)}


def _reasons(e: dict, label: int, alpha: float, mode: str, eps: float, classes) -> list[str]:
    """The sentences that say why the example explained in `e` has its outcome, and what n would help."""
    c_a, n_a, n, p_lower, pred_std = e["c_a"], e["n_a"], e["n"], e["p_a_lower"], e["pred_std"]
    sensitive, r1, r1_term, r2, rad, need, limit = (e["sensitive"], e["r1"], e["r1_term"], e["r2"], e["radius"],
                                                    e["needed_n"], e["limit"])
    costly, limiting, size = e["costly"], e["limiting"], len(e["omega"])
    top_costly, certified = c_a in e["omega"], e["outcome"] == CERTIFIED

    top = _name(classes, c_a)
    truth = _name(classes, label)
    a_term = "R1(α/2)" if mode == "sound" else "R1(α)"
    reasons = []
    if pred_std == -1:
        reasons.append(f"The standard certificate abstains: the top class {top} got n_A = {n_a} of n = {n} votes "
                       f"({n_a / max(n, 1):.1%}), and the lower confidence bound of its share, LCB(p_A) = "
                       f"{p_lower:.4f} at α = {alpha}, is ≤ 1/2.")
    if sensitive and top_costly:
        reasons.append(f"Not cost-robust at any radius: the top class {top} lies in Ω_y of the true class {truth}, "
                       "so the smoothed prediction itself costs.")
    elif sensitive:
        lim = costly[costly["class"] == limiting].iloc[0]
        detail = (f"radius = max({a_term} = {format_radius(r1_term)}, R2 = {format_radius(r2)}) = "
                  f"{format_radius(rad)}; R2 is limited by the costly class {lim['name']} ({lim['votes']} votes, "
                  f"UCB(p) = {lim['ucb']:.4f} at α/(2|Ω_y|) = {alpha / (2 * size):.3g})")
        if certified:
            reasons.append(f"Cost-robust at ε = {eps}: {detail} > ε. No ℓ2 perturbation of norm below {rad:.4f} "
                           "makes the smoothed classifier predict a costly class.")
        else:
            reasons.append(f"Not cost-robust at ε = {eps}: {detail} ≤ ε.")
    else:
        if c_a != label:
            reasons.append(f"No costly class for the true class {truth}, but the top class {top} is not the true "
                           "class: no certificate counts this example as correct.")
        elif certified:
            reasons.append(f"Certified at ε = {eps}: the standard certificate predicts the true class {truth} with "
                           f"R1 = {r1:.4f} > ε (no costly class for this true class).")
        elif pred_std == label:
            reasons.append(f"Not certified at ε = {eps}: R1 = {r1:.4f} ≤ ε (no costly class for this true class).")
    if not certified:
        if need is not None:
            reasons.append(f"With the same vote shares, about n = {need:,} estimation samples would certify a radius "
                           f"> ε (now n = {n:,}). An estimate that assumes the shares stay the same.")
        elif (sensitive and top_costly) or (not sensitive and c_a != label):
            reasons.append("No number of samples helps while the top class stays the same.")
        elif limit <= eps:
            reasons.append(f"No number of samples would certify ε with the same vote shares: even with exact "
                           f"shares the radius would be {format_radius(limit)} ≤ ε.")
        else:
            reasons.append(f"More than {N_MAX:,} samples would be needed with the same vote shares.")
    return reasons
