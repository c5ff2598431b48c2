import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import binom

from csrs_core.certification.bounds import lower_confidence_bound, max_certifiable_radius, upper_confidence_bound


def _lcb_by_root(k, n, a):
    """Independent: the p at which P[X >= k | p] = a."""
    return 0.0 if k == 0 else brentq(lambda p: binom.sf(k - 1, n, p) - a, 1e-15, 1 - 1e-15, xtol=1e-14)


def _ucb_by_root(k, n, a):
    return 1.0 if k == n else brentq(lambda p: binom.cdf(k, n, p) - a, 1e-15, 1 - 1e-15, xtol=1e-14)


@pytest.mark.parametrize("n", [1, 10, 100, 1000])
@pytest.mark.parametrize("a", [0.001, 0.05])
def test_bounds_match_binomial_tail_inversion(n, a):
    ks = np.unique(np.linspace(0, n, 11).astype(int))
    np.testing.assert_allclose(lower_confidence_bound(ks, n, a), [_lcb_by_root(k, n, a) for k in ks], atol=1e-9)
    np.testing.assert_allclose(upper_confidence_bound(ks, n, a), [_ucb_by_root(k, n, a) for k in ks], atol=1e-9)


def test_edges_and_closed_forms():
    n, a = 500, 0.01
    assert lower_confidence_bound(0, n, a) == 0 and upper_confidence_bound(n, n, a) == 1
    assert lower_confidence_bound(n, n, a) == pytest.approx(a ** (1 / n))
    assert upper_confidence_bound(0, n, a) == pytest.approx(1 - a ** (1 / n))
    from scipy.stats import norm
    assert max_certifiable_radius(0.25, 1000, 0.001) == pytest.approx(0.25 * norm.ppf(0.001 ** (1 / 1000)))


def test_the_radius_kernel_takes_one_n_per_example_and_matches_each_row_alone():
    """radii() with an n per example gives each row what it gives that row alone; per class, the
    smallest r_k of a safe-top example is R2, and R1/R2 follow docs/design.md section 2 computed by hand."""
    from scipy.stats import beta, norm

    from csrs_core.certification.radii import radii
    rng = np.random.default_rng(3)
    n = rng.integers(50, 3000, size=12)
    counts = np.stack([rng.multinomial(k, [0.6, 0.25, 0.1, 0.05]) for k in n])
    c_a = counts.argmax(axis=1)
    omega = np.zeros((12, 4), bool)
    omega[:, 1:3] = True
    omega[0, c_a[0]] = True                                   # one example whose top class costs
    r = radii(counts, c_a, omega, n, sigma=0.5, alpha=0.01, per_class=True)
    for i in range(12):
        alone = radii(counts[i:i + 1], c_a[i:i + 1], omega[i:i + 1], int(n[i]), sigma=0.5, alpha=0.01)
        assert np.allclose([alone.r1[0], alone.r2[0], alone.radius[0]], [r.r1[i], r.r2[i], r.radius[i]])
        k_a = counts[i, c_a[i]]
        lcb_half = beta.ppf(0.005, k_a, n[i] - k_a + 1)
        assert np.isclose(r.r1[i], 0.5 * norm.ppf(beta.ppf(0.01, k_a, n[i] - k_a + 1)), atol=1e-9)
        if omega[i, c_a[i]]:
            assert r.radius[i] == -np.inf
            continue
        k_b = counts[i, omega[i]].max()
        ucb = beta.ppf(1 - 0.01 / 4, k_b + 1, n[i] - k_b)
        assert np.isclose(r.r2[i], 0.25 * (norm.ppf(lcb_half) - norm.ppf(ucb)), atol=1e-9)
        assert np.isclose(r.r_k[i][omega[i]].min(), r.r2[i])
        assert np.isclose(r.radius[i], max(0.5 * norm.ppf(lcb_half), r.r2[i]))
