"""Paired significance tests for two checkpoints certified on the same examples.

Two checkpoints whose records share their data identity (store.RecordInfo.data_id: data set,
split, example indices in order, and content digest) were certified on exactly the same examples,
in the same order, so their per-example outcomes are paired. The right test for a difference of
two proportions on paired binary outcomes is McNemar's test, which uses only the discordant pairs.

Outcomes compared (docs/design.md section 3), each from a certify_from_counts table:

- Acc: the standard certificate predicts the true label (`pred_std == label`), over all examples;
- Rob_cs(eps): `cost_robust_radius > eps`, over the sensitive examples only (the same set for both
  tables, as both use the same labels and cost matrix).

Both tables must come from the same alpha and mode, as the certificates and so the outcomes depend
on them. Per-example certified costs (certify.certified_cost, real-valued or binary C) are paired
numbers, not proportions: their means are compared by a paired sign-flip permutation test
(sign_flip_test).

The p-values are per comparison: when many checkpoints are compared with one baseline,
adjust them for multiple comparisons (e.g. Holm) before claiming any single one.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.special import bdtr
from scipy.stats import beta

from csrs_core import CSRSError
from csrs_core.certification.metrics import balanced_accuracy


def proportion_interval(successes, trials, level: float = 0.95):
    """The exact (Clopper–Pearson) two-sided interval for a proportion from `successes` of `trials`:
    it covers the proportion with probability at least `level` for every true value. Over test
    examples it says how far Acc or Rob_cs could move on another sample of the same size from the
    same distribution (it does not count the certificates' own failure probability α). NaN, NaN
    without trials. Whole numbers give (low, high) floats; arrays give (low, high) arrays."""
    k, n = np.broadcast_arrays(np.asarray(successes, dtype=float), np.asarray(trials, dtype=float))
    one_n = n.flat[0] if n.size and np.all(n == n.flat[0]) else None
    if one_n is not None and one_n == int(one_n) and 0 < one_n <= TABLE_TRIALS and np.all(k == np.rint(k)) \
            and np.all((k >= 0) & (k <= one_n)):  # every interval of one n, read from a table made once
        low, high = (side[k.astype(int)] for side in _interval_table(int(one_n), level))
    else:
        low, high = _clopper_pearson(k, n, level)
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


TABLE_TRIALS = 20_000  # numbers of trials up to this read their intervals from a table made once per n


def _clopper_pearson(k: np.ndarray, n: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    tail = (1 - level) / 2
    with np.errstate(invalid="ignore"):
        low = np.where(k == 0, 0.0, beta.ppf(tail, np.maximum(k, 1), n - k + 1))
        high = np.where(k == n, 1.0, beta.ppf(1 - tail, k + 1, np.maximum(n - k, 1)))
    return np.where(n == 0, np.nan, low), np.where(n == 0, np.nan, high)


@lru_cache(maxsize=32)
def _interval_table(trials: int, level: float) -> tuple[np.ndarray, np.ndarray]:
    """_clopper_pearson of every k = 0..trials of `trials` (read-only arrays)."""
    k = np.arange(trials + 1, dtype=float)
    low, high = _clopper_pearson(k, np.full(k.shape, float(trials)), level)
    low.flags.writeable = high.flags.writeable = False
    return low, high


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment of one family of p-values (NaN entries are not in the family and
    stay NaN): rejecting where the adjusted p ≤ α keeps the probability of any false rejection in
    the family ≤ α, whatever the dependence between the tests."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    present = np.flatnonzero(~np.isnan(p))
    order = present[np.argsort(p[present], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


class McNemar(NamedTuple):
    """diff = mean(b) − mean(a); n01 = pairs with a wrong and b right; n10 = a right and b wrong."""
    diff: float
    p_value: float
    n01: int
    n10: int


def mcnemar(a, b) -> McNemar:
    """McNemar's test of H0 "a and b succeed equally often" on paired boolean outcomes.

    Always the exact (conditional) test: given the d = n01 + n10 discordant pairs, n01 is
    Binomial(d, 1/2) under H0, and the p-value is the two-sided binomial one,
    p = min(1, 2·P(X ≤ min(n01, n10))) (scipy.special.bdtr, the binomial CDF; 1 without discordant pairs).
    The exact test is used at every d, not only for small ones: it never exceeds its nominal size
    (it is conservative: its type-I error is at most the level, for any number of pairs), it costs
    nothing here, and it avoids the switch between two tests at an arbitrary d. The chi-square
    approximation with continuity correction gives nearly the same p-values for large d; the
    mid-p variant is less conservative but does not guarantee the level, so it is not used.

    Returns McNemar(diff, p_value, n01, n10); diff and p_value are NaN for empty inputs."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise CSRSError(f"paired outcomes must be two 1-d arrays of one length; got {a.shape} and {b.shape}")
    n01 = int((~a & b).sum())
    n10 = int((a & ~b).sum())
    if a.size == 0:
        return McNemar(float("nan"), float("nan"), 0, 0)
    return McNemar((n01 - n10) / a.size, _exact_mcnemar_p(n01, n10), n01, n10)


@lru_cache(maxsize=4096)
def _exact_mcnemar_p(n01: int, n10: int) -> float:
    """The exact two-sided McNemar p-value of n01 against n10 discordant pairs (1 without any)."""
    discordant = n01 + n10
    if discordant == 0:
        return 1.0
    return min(1.0, 2.0 * float(bdtr(min(n01, n10), discordant, 0.5)))  # Binomial(d, 1/2) is symmetric


def paired_outcomes(table: pd.DataFrame, eps: float) -> dict:
    """Per-example boolean outcomes of one certify_from_counts table: 'acc' (all examples) and
    'rob_cs' (sensitive examples only, in table order), and the 'sensitive' mask."""
    sensitive = table["sensitive"].to_numpy(dtype=bool)
    return {
        "acc": table["pred_std"].to_numpy() == table["label"].to_numpy(),
        "rob_cs": (table["cost_robust_radius"].to_numpy() > eps)[sensitive],
        "sensitive": sensitive,
    }


def paired_comparison(table_a: pd.DataFrame, table_b: pd.DataFrame, eps: float) -> dict:
    """Checkpoint b against checkpoint a (the baseline) on the same examples, by exact McNemar tests.

    Both tables must be certify_from_counts tables of records with the same data identity (the
    caller checks that; here the labels and the sensitive examples must agree, else CSRSError),
    made with the same cost matrix, alpha and mode. Differences are b − a. Returns a dict:
    n, n_sensitive; acc_a, acc_b, d_acc, p_acc, acc_n01, acc_n10; rob_cs_a, rob_cs_b, d_rob_cs,
    p_rob_cs, rob_cs_n01, rob_cs_n10 (NaN Rob_cs values and p without sensitive examples);
    balanced_acc_a, balanced_acc_b, d_balanced_acc (no test: it is not one paired proportion)."""
    la, lb = table_a["label"].to_numpy(), table_b["label"].to_numpy()
    if la.shape != lb.shape or not np.array_equal(la, lb):
        raise CSRSError("the two tables are not of the same examples (their labels differ): "
                        "a paired comparison needs records with the same data identity")
    oa, ob = paired_outcomes(table_a, eps), paired_outcomes(table_b, eps)
    if not np.array_equal(oa["sensitive"], ob["sensitive"]):
        raise CSRSError("the two tables mark different examples sensitive: were they made with the same cost matrix?")
    acc = mcnemar(oa["acc"], ob["acc"])
    rob = mcnemar(oa["rob_cs"], ob["rob_cs"])
    nan = float("nan")

    def mean(x):
        return float(x.mean()) if x.size else nan

    bal_a, bal_b = balanced_accuracy(table_a), balanced_accuracy(table_b)
    return {
        "n": int(la.size), "n_sensitive": int(oa["sensitive"].sum()), "test": "exact McNemar (two-sided)",
        "acc_a": mean(oa["acc"]), "acc_b": mean(ob["acc"]), "d_acc": acc.diff, "p_acc": acc.p_value,
        "acc_n01": acc.n01, "acc_n10": acc.n10,
        "rob_cs_a": mean(oa["rob_cs"]), "rob_cs_b": mean(ob["rob_cs"]), "d_rob_cs": rob.diff,
        "p_rob_cs": rob.p_value, "rob_cs_n01": rob.n01, "rob_cs_n10": rob.n10,
        "balanced_acc_a": bal_a, "balanced_acc_b": bal_b, "d_balanced_acc": bal_b - bal_a,
    }


class PairedMeanTest(NamedTuple):
    """diff = mean(b) − mean(a) (the difference of certified expected costs); p_value two-sided;
    n = pairs; n_nonzero = pairs whose costs differ; exact: whether every sign pattern was counted."""
    diff: float
    p_value: float
    n: int
    n_nonzero: int
    exact: bool


EXACT_UP_TO = 16          # nonzero differences up to which all 2^k sign patterns are enumerated
SIGN_FLIP_ROUNDS = 20_000  # random sign patterns otherwise (p-values resolve to about 5e-5)


def sign_flip_test(a, b, rounds: int = SIGN_FLIP_ROUNDS, seed: int = 0) -> PairedMeanTest:
    """Paired permutation test of H0 "within each pair, which cost is a's and which is b's is
    exchangeable" against a difference of MEANS (the certified expected cost is a mean), two-sided:
    the observed |Σ (b − a)| against the same sum with each difference's sign flipped at random.

    A rank test (Wilcoxon) tests the median instead and misreads what matters here: many small
    differences one way (a benign image no longer certified, cost 1) against few large ones the other
    (a malignant one now safe, cost 10). Zero differences do not change the statistic. With at most
    EXACT_UP_TO nonzero differences every sign pattern is counted (exact p-value); otherwise
    p = (1 + hits) / (1 + rounds) over `rounds` seeded random patterns, a valid p-value (never 0).
    Every difference zero (nothing to flip): p_value NaN, diff 0 (both NaN without pairs)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise CSRSError(f"paired costs must be two 1-d arrays of one length; got {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise CSRSError("paired costs must be finite numbers")
    if a.size == 0:
        return PairedMeanTest(float("nan"), float("nan"), 0, 0, True)
    d = (b - a)[b != a]
    diff = float(b.mean() - a.mean())
    if d.size == 0:
        return PairedMeanTest(diff, float("nan"), int(a.size), 0, True)
    observed = abs(d.sum()) * (1 - 1e-12)  # ties with the observed sum count as extreme
    if d.size <= EXACT_UP_TO:
        signs = 1 - 2 * ((np.arange(2 ** d.size)[:, None] >> np.arange(d.size)) & 1)
        p = float(np.mean(np.abs(signs @ d) >= observed))
        return PairedMeanTest(diff, p, int(a.size), int(d.size), True)
    rng, hits, chunk = np.random.default_rng(seed), 0, max(1, 2_000_000 // d.size)
    for start in range(0, rounds, chunk):
        signs = rng.integers(0, 2, size=(min(chunk, rounds - start), d.size), dtype=np.int8) * 2 - 1
        hits += int(np.count_nonzero(np.abs(signs @ d) >= observed))
    return PairedMeanTest(diff, (1 + hits) / (1 + rounds), int(a.size), int(d.size), False)


def paired_cost_comparison(cost_a, cost_b) -> dict:
    """Checkpoint b against checkpoint a (the baseline) by their per-example certified costs at one
    eps (certified_cost on records of the same examples, same cost matrix, alpha and mode; the
    caller checks the data identity). Returns expected_cost_a, expected_cost_b, d_expected_cost
    (b − a), p_expected_cost (sign_flip_test; NaN when the costs agree everywhere), n, n_differ, test."""
    r = sign_flip_test(cost_a, cost_b)
    a, b = np.asarray(cost_a, dtype=float), np.asarray(cost_b, dtype=float)
    nan = float("nan")
    return {"expected_cost_a": float(a.mean()) if a.size else nan,
            "expected_cost_b": float(b.mean()) if b.size else nan,
            "d_expected_cost": r.diff, "p_expected_cost": r.p_value, "n": r.n, "n_differ": r.n_nonzero,
            "test": "paired sign-flip permutation test of the mean (two-sided)"}
