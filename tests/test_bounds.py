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
