import math

import numpy as np
import pytest
from scipy.stats import beta, norm

from csrs_core import CSRSError
from csrs_core.certification.certificates import certify_from_counts, smoothed_confusion
from csrs_core.certification.cost import CostMatrix
from csrs_core.certification.metrics import eps_curve, per_class, summarize


def reference_algorithm1(c0, c, y, omega, sigma, alpha, mode):
    """Plain per-example Algorithm 1 with scipy.stats (independent of csrs_core.certification.bounds)."""
    n = int(sum(c))
    ca = int(np.argmax(c0))
    def lcb(k, a):
        return 0.0 if k == 0 else beta.ppf(a, k, n - k + 1)
    def ucb(k, a):
        return 1.0 if k == n else beta.ppf(1 - a, k + 1, n - k)
    r1 = sigma * norm.ppf(lcb(c[ca], alpha))
    if not omega or ca in omega:
        return r1, -math.inf, -math.inf
    nb = max(c[k] for k in omega)
    r2 = sigma / 2 * (norm.ppf(lcb(c[ca], alpha / 2)) - norm.ppf(ucb(nb, alpha / (2 * len(omega)))))
    first = r1 if mode == "paper" else sigma * norm.ppf(lcb(c[ca], alpha / 2))
    return r1, r2, max(first, r2)


def random_case(rng, N=60, m=5, n=200):
    p = rng.dirichlet(np.full(m, 0.3), size=N)
    counts = np.stack([rng.multinomial(n, q) for q in p])
    counts0 = np.stack([rng.multinomial(20, q) for q in p])
    labels = rng.integers(0, m, N)
    matrix = (rng.random((m, m)) < 0.35).astype(int)
    np.fill_diagonal(matrix, 0)
    return counts0, counts, labels, CostMatrix(matrix)


@pytest.mark.parametrize("mode", ["sound", "paper"])
@pytest.mark.parametrize("seed", range(5))
def test_matches_per_example_algorithm1(mode, seed):
    rng = np.random.default_rng(seed)
    counts0, counts, labels, cost = random_case(rng)
    t = certify_from_counts(counts0, counts, labels, cost, sigma=0.5, alpha=0.01, mode=mode)
    for i in range(len(labels)):
        r1, r2, rad = reference_algorithm1(counts0[i], counts[i], labels[i], cost.omega(labels[i]), 0.5, 0.01, mode)
        np.testing.assert_allclose([t.r1[i], t.r2[i], t.cost_robust_radius[i]], [r1, r2, rad], rtol=1e-7, atol=1e-9)
        ca = np.argmax(counts0[i])
        assert t.pred_std[i] == (ca if r1 > 0 else -1)
        assert t.pred[i] == (ca if rad > 0 else -1)
        assert t.sensitive[i] == bool(cost.omega(labels[i]))


def test_edge_counts_and_abstention():
    cost = CostMatrix.seedwise(3, [0])
    counts0 = np.array([[10, 0, 0], [0, 10, 0], [4, 3, 3], [10, 0, 0]])
    counts = np.array([[100, 0, 0], [0, 100, 0], [34, 33, 33], [0, 100, 0]])  # k=n, k=n, flat, k=0
    t = certify_from_counts(counts0, counts, np.array([0, 0, 0, 0]), cost, sigma=0.25, alpha=0.001)
    assert t.r1[0] > 0 and np.isfinite(t.r1[0]) and t.cost_robust_radius[0] > 0
    assert t.cost_robust_radius[1] == -np.inf and t.pred[1] == -1   # c_A in Omega_y: costly prediction
    assert t.pred_std[2] == -1 and t.pred[2] == -1                 # abstain
    assert t.r1[3] == -np.inf and t.pred[3] == -1                  # n_A = 0


def test_sound_mode_radius_is_max_of_r1_at_half_alpha_and_r2():
    """Sound mode: both terms rest on the alpha/2 lower bound of p_A."""
    rng = np.random.default_rng(0)
    counts0, counts, labels, _ = random_case(rng, m=4)
    t = certify_from_counts(counts0, counts, labels, CostMatrix.overall(4), sigma=0.25, alpha=0.001)
    ok = t.r2 > -np.inf
    assert ok.any()
    lo = certify_from_counts(counts0, counts, labels, CostMatrix.overall(4), sigma=0.25, alpha=0.0005).r1
    np.testing.assert_allclose(t.cost_robust_radius[ok], np.maximum(lo[ok], t.r2[ok]))


def test_theorem_3_3_a_smaller_costly_set_never_certifies_less():
    """Theorem 3.3 on estimates: for an example whose top class is its label, R2 with any Ω_y is at least
    R2 with Ω_y = every other class (Cohen's two-sided radius), and equal to it when Ω_y is every other
    class; the sound radius built on it follows. Checked against the full matrix on the same counts."""
    rng = np.random.default_rng(1)
    strictly = 0
    for _ in range(20):
        counts0, counts, labels, cost = random_case(rng, N=200, m=6, n=2000)
        labels = counts0.argmax(1)  # top class = label: the prediction is safe under every matrix
        full = certify_from_counts(counts0, counts, labels, CostMatrix.overall(6), sigma=0.5, mode="sound")
        part = certify_from_counts(counts0, counts, labels, cost, sigma=0.5, mode="sound")
        both = (part.r2 > -np.inf).to_numpy() & (full.r2 > -np.inf).to_numpy()
        assert np.all(part.r2[both] >= full.r2[both] - 1e-12)
        assert np.all(part.cost_robust_radius[both] >= full.cost_robust_radius[both] - 1e-12)
        strictly += int((part.r2[both] > full.r2[both] + 1e-9).sum())
        everyone = cost.omega_sizes()[labels] == 5
        np.testing.assert_array_equal(part.r2[both & everyone], full.r2[both & everyone])
    assert strictly > 0  # the gain is real for partial costly sets, not only ties


def test_no_sensitive_examples_gives_nan():
    t = certify_from_counts(np.eye(3, dtype=int) * 5, np.eye(3, dtype=int) * 50, [0, 1, 2],
                            CostMatrix.empty(3), sigma=0.25)
    s = summarize(t, 0.25)
    assert math.isnan(s["rob_cs"]) and math.isnan(s["rob_std"]) and s["n_sensitive"] == 0 and s["acc"] == 1


def test_summary_curve_per_class_consistent():
    rng = np.random.default_rng(2)
    counts0, counts, labels, cost = random_case(rng, N=300)
    t = certify_from_counts(counts0, counts, labels, cost, sigma=0.5, alpha=0.001)
    s = summarize(t, 0.3)
    curve = eps_curve(t, [0.0, 0.3])
    assert curve.rob_cs[1] == pytest.approx(s["rob_cs"]) and curve.rob_std[1] == pytest.approx(s["rob_std"])
    sens = t.sensitive.to_numpy()
    assert s["rob_cs"] == pytest.approx((t.cost_robust_radius[sens] > 0.3).mean())
    pc = per_class(t, 0.3)
    assert pc.n.sum() == len(t)
    assert (pc.acc * pc.n).sum() / len(t) == pytest.approx(s["acc"])
    conf = smoothed_confusion(counts0, labels, 5)
    assert conf.sum() == len(labels) and conf[labels[0], counts0[0].argmax()] >= 1


def test_bad_inputs():
    with pytest.raises(CSRSError, match="classes"):
        certify_from_counts(np.ones((2, 3)), np.ones((2, 3)), [0, 1], CostMatrix.overall(4), sigma=0.25)
    with pytest.raises(CSRSError, match="mode"):
        certify_from_counts(np.ones((2, 3)), np.ones((2, 3)), [0, 1], CostMatrix.overall(3), 0.25, mode="x")
    with pytest.raises(CSRSError, match="same number"):
        certify_from_counts(np.ones((2, 3)), np.array([[1, 1, 1], [2, 1, 1]]), [0, 1], CostMatrix.overall(3), 0.25)


def test_monte_carlo_failure_rate_at_most_alpha():
    """Known class probabilities: a sound certificate exceeds the true radius at most alpha of the time."""
    rng = np.random.default_rng(123)
    alpha, sigma, n, trials = 0.05, 0.5, 200, 4000
    p = np.array([0.55, 0.05, 0.3, 0.1])      # class 0 top; Omega_y = {2, 3}
    cost = CostMatrix.pairwise(4, {0: [2, 3]})
    true_radius = sigma / 2 * (norm.ppf(0.55) - norm.ppf(0.3))
    counts = rng.multinomial(n, p, size=trials)
    counts0 = np.tile([10, 0, 0, 0], (trials, 1))
    t = certify_from_counts(counts0, counts, np.zeros(trials, int), cost, sigma=sigma, alpha=alpha)
    failures = (t.cost_robust_radius > true_radius).mean()
    assert failures <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)
    assert (t.cost_robust_radius > 0).mean() > 0.5          # not vacuous


def test_p_a_lower_is_the_clopper_pearson_bound_behind_r1():
    counts0 = np.array([[90, 10], [5, 95], [50, 50]])
    counts = np.array([[990, 10], [400, 600], [500, 500]])
    t = certify_from_counts(counts0, counts, np.array([0, 1, 0]), CostMatrix.overall(2), sigma=0.5, alpha=0.01)
    n_a = np.array([990, 600, 500])
    assert np.allclose(t.p_a_lower, beta.ppf(0.01, n_a, 1000 - n_a + 1))   # independent: scipy's beta quantile
    assert np.allclose(t.r1, 0.5 * norm.ppf(t.p_a_lower))
