"""Real-valued cost matrices (docs/design.md sections 1, 3, 4): validation and the cost grammar, the
certified worst-case cost against an independent per-example implementation and against the binary
certificate, its summaries and paired test, and the cost-weighted CS-MACER / Cohen-R losses (against
a per-example reference, finite differences, and bit for bit the binary losses as they were)."""
import itertools
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import beta as beta_dist
from scipy.stats import norm, wilcoxon

from csrs_core import CSRSError
from csrs_core.certification.certificates import certified_cost, certify_from_counts
from csrs_core.certification.cost import CostMatrix, CostMatrixError, parse_cost
from csrs_core.certification.metrics import cost_curve, eps_curve, expected_cost, rob_cs_at, summarize, summarize_cost
from csrs_core.certification.stats import paired_cost_comparison, sign_flip_test
from csrs_core.training.losses import _smoothed, _weighted_hinge_sum, cohen_r_loss, cost_tensor, cs_macer_loss

# ---------------------------------------------------------------------------------------------
# the matrix and its grammar

@pytest.mark.parametrize("matrix, words", [
    ([[0, -1], [0, 0]], r"must lie in \[0, 1e\+09\] .*; entry \[0, 1\] is -1"),
    ([[0, 1e308], [0, 0]], r"must lie in \[0, 1e\+09\] .*; entry \[0, 1\] is 1e\+308"),
    ([[0, 0], [-0.25, 0]], r"entry \[1, 0\] is -0.25"),
    ([[0, float("nan")], [0, 0]], r"finite; entry \[0, 1\] is nan"),
    ([[0, 0], [float("inf"), 0]], r"finite; entry \[1, 0\] is inf"),
    ([[0, 1, 0], [0, 0, 0], [0, 0, 2.5]], r"diagonal entry \[2, 2\] is 2.5"),
    ([[1, 0], [0, 0]], r"diagonal entry \[0, 0\] is 1"),
])
def test_bad_entries_are_refused_naming_the_entry(matrix, words):
    with pytest.raises(CostMatrixError, match=words):
        CostMatrix(matrix)


def test_support_and_weights_views():
    c = CostMatrix([[0, 2.5, 0], [1, 0, 0], [0, 0.5, 0]])
    assert c.matrix.dtype == bool and c.matrix.tolist() == [[0, 1, 0], [1, 0, 0], [0, 1, 0]]
    assert c.weights.dtype == np.float64 and c.weights[0, 1] == 2.5
    assert c.omega(0) == [1] and c.omega(2) == [1] and not c.is_binary
    assert c.row_max().tolist() == [2.5, 1.0, 0.5]
    assert c.sensitive_mask([0, 1, 2]).tolist() == [True, True, True]
    b = CostMatrix.pairwise(3, {1: [0]})
    assert b.is_binary and np.array_equal(b.weights, b.matrix)
    assert CostMatrix([[0, 1], [0, 0]]) == CostMatrix([[0, True], [0, False]])
    assert CostMatrix([[0, 2], [0, 0]]) != CostMatrix([[0, 1], [0, 0]])      # same support, other costs
    assert hash(CostMatrix([[0, 2], [-0.0, 0]])) == hash(CostMatrix([[0, 2], [0, 0]]))
    assert CostMatrix.seedwise(3, {1: 4.0}).weights[1].tolist() == [4, 0, 4]
    assert CostMatrix.pairwise(3, {1: {0: 3, 2: 1}}) == parse_cost("pairwise:1>0=3,2", 3)


@pytest.mark.parametrize("spec, rows", [
    ("pairwise:1>0=10", {(1, 0): 10}),
    ("pairwise:3>2=5,4,5", {(3, 2): 5, (3, 4): 1, (3, 5): 1}),
    ("pairwise:3>2=0.5;1>0=2.25", {(3, 2): 0.5, (1, 0): 2.25}),
    ("seedwise:3=2", {(3, k): 2 for k in range(6) if k != 3}),
    ("seedwise:1,3=1e-3", {**{(1, k): 1 for k in range(6) if k != 1}, **{(3, k): 1e-3 for k in range(6) if k != 3}}),
])
def test_grammar_weights(spec, rows):
    c = parse_cost(spec, 6)
    expect = np.zeros((6, 6))
    for (j, k), w in rows.items():
        expect[j, k] = w
    assert np.array_equal(c.weights, expect)
    assert parse_cost(c.describe(), 6) == c


def test_describe_writes_weights_only_where_not_one_and_binary_as_before():
    assert parse_cost("pairwise:3>2=5,4,5", 10).describe() == "pairwise:3>2=5,4,5"
    assert parse_cost("seedwise:3=2", 10).describe() == "seedwise:3=2"
    assert parse_cost("seedwise:3=1", 10).describe() == "seedwise:3"
    assert parse_cost("pairwise:1>0=0.1", 10).describe() == "pairwise:1>0=0.1"
    assert CostMatrix.overall(4).describe() == "overall"
    assert CostMatrix.empty(4).describe() == "none"
    assert CostMatrix.seedwise(10, [2, 4]).describe() == "seedwise:2,4"
    assert CostMatrix.pairwise(10, {3: [5], 1: [0]}).describe() == "pairwise:1>0;3>5"
    assert CostMatrix(2 * (1 - np.eye(3))).describe() == "seedwise:0=2,1=2,2=2"   # not "overall": costs 2
    mixed = np.zeros((4, 4))
    mixed[0] = [0, 1, 3, 1]                                  # a full row of unequal costs: pairwise
    assert CostMatrix(mixed).describe() == "pairwise:0>1,2=3,3"
    assert CostMatrix.seedwise(3, [1]).to_json() == '{"matrix": [[0, 0, 0], [1, 0, 1], [0, 0, 0]], "class_names": null}'


@pytest.mark.parametrize("bad, words", [
    ("pairwise:1>0=-1", "positive number"), ("pairwise:1>0=0", "positive number"),
    ("pairwise:1>0=nan", "positive number"), ("pairwise:1>0=inf", "positive number"),
    ("seedwise:3=", "positive number"), ("seedwise:-1", "class indices"), ("pairwise:-1>0", "class indices"),
    ("pairwise:1>-1", "class indices"), ("pairwise:1>0=2;1>0=3", "two costs"), ("seedwise:1=2,1=3", "two costs"),
    ("pairwise:1=2>0", "class indices"), ("pairwise:3>3=2", "diagonal"), ("seedwise:12=2", "out of range"),
])
def test_grammar_refusals(bad, words):
    with pytest.raises(CostMatrixError, match=words):
        parse_cost(bad, 10)


def _random_matrix(rng, m):
    kind = rng.integers(5)
    W = np.zeros((m, m))
    for j in range(m):
        if rng.random() < 0.3:
            continue
        if kind == 0 or rng.random() < 0.3:                   # a full row of one cost (seedwise-like)
            W[j] = rng.choice([1.0, 2.0, rng.random() * 10])
        else:
            support = rng.random(m) < 0.5
            W[j] = np.where(support, rng.choice([1.0, 3.0, 0.1, 1e-7, 12345.678, rng.random() * 5], size=m), 0)
            if rng.random() < 0.3:
                W[j] = support.astype(float)
    np.fill_diagonal(W, 0)
    return W


@pytest.mark.parametrize("seed", range(4))
def test_describe_parse_and_json_round_trip_random_matrices(seed):
    rng = np.random.default_rng(seed)
    for _ in range(100):
        m = int(rng.integers(2, 12))
        c = CostMatrix(_random_matrix(rng, m))
        text = c.describe()
        back = parse_cost(text, m)
        assert back == c and np.array_equal(back.weights, c.weights), text
        assert back.describe() == text
        assert CostMatrix.from_json(c.to_json()) == c
        if c.is_binary:
            assert '.' not in c.to_json()


# ---------------------------------------------------------------------------------------------
# the certified worst-case cost

def reference_cost(c0, c, y, W, sigma, alpha, eps, mode):
    """Design.md section 3 for one example, with scipy.stats directly (no csrs_core.certification.bounds)."""
    n = int(sum(c))
    m = len(c)
    ca = int(np.argmax(c0))
    omega = [k for k in range(m) if W[y][k] > 0]
    if not omega:
        return 0.0

    def lcb(k, a):
        return 0.0 if k == 0 else beta_dist.ppf(a, k, n - k + 1)

    def ucb(k, a):
        return 1.0 if k == n else beta_dist.ppf(1 - a, k + 1, n - k)

    phi_a = norm.ppf(lcb(c[ca], alpha / 2))
    r1 = sigma * phi_a if mode == "sound" else sigma * norm.ppf(lcb(c[ca], alpha))
    worst = float(W[y][ca])
    if r1 > eps:
        return worst
    for k in omega:
        if k == ca:
            continue
        r_k = sigma / 2 * (phi_a - norm.ppf(ucb(c[k], alpha / (2 * len(omega)))))
        if r_k <= eps:
            worst = max(worst, float(W[y][k]))
    return worst


def random_counts(rng, N, m, n, n0=30):
    p = rng.dirichlet(np.full(m, 0.4), size=N)
    counts = np.stack([rng.multinomial(n, q) for q in p])
    counts0 = np.stack([rng.multinomial(n0, q) for q in p])
    counts[0], counts0[0] = 0, 0                               # n_A = n
    counts[0, 1], counts0[0, 1] = n, n0
    counts[1], counts0[1] = 0, 0                               # n_A = 0
    counts[1, 2], counts0[1, 0] = n, n0
    return counts0, counts, rng.integers(0, m, N)


@pytest.mark.parametrize("mode", ["sound", "paper"])
@pytest.mark.parametrize("seed", range(3))
def test_certified_cost_matches_per_example_reference(mode, seed):
    rng = np.random.default_rng(seed)
    m = 5
    counts0, counts, labels = random_counts(rng, 60, m, 300)
    W = _random_matrix(rng, m)
    W[labels[0]] = np.where(np.arange(m) == labels[0], 0, 1.5)    # edge rows are sensitive
    W[labels[1]] = np.where(np.arange(m) == labels[1], 0, 2.0)
    C = CostMatrix(W)
    grid = np.array([0.0, 0.05, 0.2, 0.5, 1.0])
    got = certified_cost(counts0, counts, labels, C, sigma=0.5, alpha=0.01, eps=grid, mode=mode)
    assert got.shape == (len(grid), len(labels)) and got.dtype == np.float64
    for e, eps in enumerate(grid):
        single = certified_cost(counts0, counts, labels, C, sigma=0.5, alpha=0.01, eps=eps, mode=mode)
        assert single.shape == (len(labels),) and np.array_equal(single, got[e])
        ref = [reference_cost(counts0[i], counts[i], labels[i], W, 0.5, 0.01, eps, mode) for i in range(len(labels))]
        np.testing.assert_array_equal(got[e], ref)
    assert np.all(np.diff(got, axis=0) >= 0)                       # the cost only grows with eps
    assert np.all(got <= C.row_max()[labels])
    assert np.all(got[:, ~C.sensitive_mask(labels)] == 0)


@pytest.mark.parametrize("mode", ["sound", "paper"])
@pytest.mark.parametrize("seed", range(4))
def test_binary_cost_is_zero_exactly_when_the_radius_exceeds_eps(mode, seed):
    rng = np.random.default_rng(100 + seed)
    m = 6
    counts0, counts, labels = random_counts(rng, 400, m, 500)
    C = CostMatrix((rng.random((m, m)) < 0.4) & ~np.eye(m, dtype=bool))
    t = certify_from_counts(counts0, counts, labels, C, sigma=0.25, alpha=0.001, mode=mode)
    radius = t.cost_robust_radius.to_numpy()
    sensitive = t.sensitive.to_numpy()
    # the grid includes the radii themselves: at eps = radius the example is not robust any more
    finite = radius[np.isfinite(radius) & (radius >= 0)]
    grid = np.concatenate([[0.0, 0.1, 0.25, 0.5], finite[:40], np.nextafter(finite[:40], -np.inf)])
    cost = certified_cost(counts0, counts, labels, C, sigma=0.25, alpha=0.001, eps=grid, mode=mode)
    assert set(np.unique(cost)) <= {0.0, 1.0}
    for e, eps in enumerate(grid):
        np.testing.assert_array_equal(cost[e][sensitive] == 0, radius[sensitive] > eps)
        assert np.all(cost[e][~sensitive] == 0)
    curve = eps_curve(t, grid[:4])
    np.testing.assert_allclose(rob_cs_at(cost[:4], sensitive, 0.0), curve.rob_cs)
    assert rob_cs_at(cost[2], sensitive) == summarize(t, 0.25)["rob_cs"]


def test_certified_cost_edges_and_errors():
    C = CostMatrix.pairwise(3, {0: {1: 5.0, 2: 2.0}})
    counts0 = np.array([[10, 0, 0], [0, 10, 0], [10, 0, 0]])
    counts = np.array([[100, 0, 0], [0, 100, 0], [40, 30, 30]])
    labels = np.array([0, 0, 1])
    cost = certified_cost(counts0, counts, labels, C, sigma=0.25, alpha=0.001, eps=[0.0, 0.3, 10.0])
    assert cost[:, 0].tolist() == [0.0, 0.0, 5.0]        # robust up to its radius, then the worst
    assert cost[:, 1].tolist() == [5.0, 5.0, 5.0]        # c_A = 1 in Omega_0: costs 5 at every eps
    assert cost[:, 2].tolist() == [0.0, 0.0, 0.0]        # class 1 is not sensitive
    assert certified_cost(counts0, counts, labels, C, 0.25, 0.001, eps=np.inf).tolist() == [5.0, 5.0, 0.0]
    assert certified_cost(counts0[:0], counts[:0], labels[:0], C, 0.25, eps=[0.1, 0.2]).shape == (2, 0)
    for kwargs, words in (({"eps": -0.1}, ">= 0"), ({"eps": float("nan")}, ">= 0"), ({"mode": "x"}, "mode"),
                          ({"alpha": 0.0}, "alpha"), ({"eps": [[0.1]]}, "1-d")):
        with pytest.raises(CSRSError, match=words):
            certified_cost(counts0, counts, labels, C, **{"sigma": 0.25, **kwargs})
    with pytest.raises(CSRSError, match="classes"):
        certified_cost(counts0, counts, labels, CostMatrix.overall(4), sigma=0.25)


def test_cost_summaries():
    cost = np.array([0.0, 2.0, 0.5, 0.0, 0.0])
    sensitive = np.array([True, True, True, False, False])
    assert expected_cost(cost) == pytest.approx(0.5)
    assert rob_cs_at(cost, sensitive, 0.0) == pytest.approx(1 / 3)
    assert rob_cs_at(cost, sensitive, 0.5) == pytest.approx(2 / 3)
    assert math.isnan(rob_cs_at(cost, np.zeros(5, bool))) and math.isnan(expected_cost([]))
    grid = np.stack([cost, cost * 2])
    assert expected_cost(grid).tolist() == [0.5, 1.0]
    assert rob_cs_at(grid, sensitive, 0.5).tolist() == pytest.approx([2 / 3, 1 / 3])
    curve = cost_curve(grid, [0.0, 0.5], sensitive, tau=0.5)
    assert curve.expected_cost.tolist() == [0.5, 1.0] and curve.rob_cs_tau.tolist() == pytest.approx([2 / 3, 1 / 3])
    s = summarize_cost(cost, sensitive)
    assert s["expected_cost_sensitive"] == pytest.approx(2.5 / 3) and s["n_sensitive"] == 3 and s["n"] == 5


def test_the_sign_flip_test_exact_and_sampled():
    r = sign_flip_test(np.zeros(5), np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert r.exact and r.p_value == pytest.approx(2 / 32) and r.diff == pytest.approx(3.0)  # 2 of 2^5 sign patterns
    d = np.array([1.0, -2.0, 3.0, 0.5, -0.25, 4.0, 1.5, -1.0, 2.0, 0.75, -3.0, 2.5, 1.25, 0.3, -0.6, 1.1])
    exact = sign_flip_test(np.zeros(16), d)
    hits = sum(abs(sum(s * x for s, x in zip(signs, d))) >= abs(d.sum()) * (1 - 1e-12)
               for signs in itertools.product((1, -1), repeat=16))  # independent enumeration
    assert exact.exact and exact.p_value == pytest.approx(hits / 2 ** 16)
    sampled = sign_flip_test(np.zeros(17), np.r_[d, 0.01])
    assert not sampled.exact and abs(sampled.p_value - exact.p_value) < 0.02
    same = sign_flip_test(d, d)
    assert math.isnan(same.p_value) and same.diff == 0 and same.n_nonzero == 0
    assert math.isnan(sign_flip_test([], []).diff)
    with pytest.raises(CSRSError, match="1-d"):
        sign_flip_test(d, d[:3])


def test_the_sign_flip_test_sees_a_difference_of_means_that_a_rank_test_misses():
    """Many +1 (a benign image no longer certified) against fewer −10 (a malignant one made safe):
    the mean cost falls clearly; Wilcoxon's ranks see the many small increases and call it a rise."""
    a = np.r_[np.zeros(300), np.full(60, 10.0), np.zeros(1000)]
    b = np.r_[np.ones(300), np.zeros(60), np.zeros(1000)]
    r = sign_flip_test(a, b)
    assert r.diff == pytest.approx((300 - 600) / 1360) and r.p_value < 1e-3
    assert wilcoxon(b - a, zero_method="wilcox", alternative="less").pvalue > 0.5
    d = paired_cost_comparison(a, b)
    assert d["p_expected_cost"] == r.p_value and d["d_expected_cost"] == r.diff


def test_the_sign_flip_test_holds_its_level():
    """Under H0 (symmetric differences) P(p ≤ 0.05) stays at or below 0.05 (Monte Carlo, 400 data sets)."""
    rng = np.random.default_rng(1)
    ps = [sign_flip_test(np.zeros(40), rng.choice([-10.0, -1.0, 1.0, 10.0], size=40), rounds=999, seed=k).p_value
          for k in range(400)]
    assert np.mean(np.array(ps) <= 0.05) <= 0.05 + 2.5 * np.sqrt(0.05 * 0.95 / 400)


STAGE_B_WITHOUT_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, NoTorch())
import numpy as np
from csrs_core import CostMatrix, certify_from_counts
from csrs_core.certification.certificates import certified_cost
from csrs_core.certification.comparisons import choose_together
from csrs_core.certification.cost import parse_cost
from csrs_core.certification.metrics import expected_cost, summarize
from csrs_core.certification.stats import paired_comparison, paired_cost_comparison
rng = np.random.default_rng(0)
counts0, counts = rng.multinomial(100, [0.7, 0.2, 0.1], 50), rng.multinomial(1000, [0.7, 0.2, 0.1], 50)
labels = rng.integers(0, 3, 50)
cost = parse_cost("pairwise:0>1=10;2>0", 3)
a = certify_from_counts(counts0, counts, labels, cost, sigma=0.25)
b = certify_from_counts(counts0, counts[:, [0, 2, 1]], labels, cost, sigma=0.25)
summarize(a, 0.25), paired_comparison(a, b, 0.25)
paired_cost_comparison(certified_cost(counts0, counts, labels, cost, 0.25, eps=0.25),
                       certified_cost(counts0, counts[:, [0, 2, 1]], labels, cost, 0.25, eps=0.25))
assert choose_together({}) == ({}, [])
import importlib, pkgutil
import csrs_core.certification
for module in [m.name for m in pkgutil.iter_modules(csrs_core.certification.__path__)]:
    importlib.import_module(f"csrs_core.certification.{module}")   # every stage-B module, explain included
import csrs_core.cost, csrs_core.certify, csrs_core.metrics          # docs/design.md section 5's import paths
import csrs_core.settings                                          # the settings the Python API checks
assert "torch" not in sys.modules
print("stage B ran")
"""


def test_stage_b_runs_with_torch_blocked():
    out = subprocess.run([sys.executable, "-c", STAGE_B_WITHOUT_TORCH], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "stage B ran" in out.stdout, out.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# cost-weighted training

def _phi_inv(p):
    return norm.ppf(min(max(p, 0.0), 1.0))


def reference_weighted_i3(logits, labels, W, g2, beta):
    """Per example, plain floats: sum of max_{j in Omega} W[y, j] * max(g2 - d_j, 0) over sensitive
    examples with finite -g2 <= min_j d_j <= g2 (docs/design.md section 4, real-valued C)."""
    B, _, m = logits.shape
    total, picked = 0.0, []
    for i in range(B):
        q = (beta * logits[i].double()).softmax(-1).mean(0).tolist()
        y = int(labels[i])
        omega = [j for j in range(m) if W[y][j] > 0]
        if not omega:
            continue
        safe = max(q[c] for c in range(m) if c not in omega)
        d = {j: _phi_inv(safe) - _phi_inv(q[j]) for j in omega}
        d_min = min(d.values())
        if math.isfinite(d_min) and -g2 <= d_min <= g2:
            total += max(W[y][j] * max(g2 - d[j], 0.0) for j in omega)
            picked.append(i)
    return total, picked


def reference_loss(logits, labels, W, sigma, lam, g1, g2, beta):
    """The whole weighted loss per example: I1 and I2 as MACER/CS-MACER, I3 cost-weighted."""
    B, _, m = logits.shape
    i1 = i2 = 0.0
    for i in range(B):
        z = logits[i].double()
        y = int(labels[i])
        i1 += -math.log(float(z.softmax(-1).mean(0)[y]) + 1e-10)
        q = (beta * z).softmax(-1).mean(0).tolist()
        size = sum(1 for j in range(m) if W[y][j] > 0)
        d = _phi_inv(q[y]) - _phi_inv(max(q[c] for c in range(m) if c != y))
        if size < m - 1 and max(range(m), key=lambda c: q[c]) == y and math.isfinite(d) and 0 < d <= g1:
            i2 += g1 - d
    i3, _ = reference_weighted_i3(logits, labels, W, g2, beta)
    return (i1 + lam * sigma / 2 * (i2 + i3)) / B


def _case(seed, B=24, k=6, m=5, scale=0.4, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, k, m, generator=g, dtype=torch.float64) * scale).to(dtype).requires_grad_()
    labels = torch.randint(0, m, (B,), generator=g)
    return logits, labels


WEIGHTED = [
    CostMatrix.pairwise(5, {1: {2: 3.0, 3: 0.5}, 4: {0: 10.0}}),
    CostMatrix.seedwise(5, {0: 2.0, 2: 0.25}),
    CostMatrix([[0, 1, 2, 3, 4], [0.5, 0, 0, 0, 0], [0, 0, 0, 7, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1.5, 0]]),
]


@pytest.mark.parametrize("cost", WEIGHTED)
@pytest.mark.parametrize("gamma2", [16.0, 0.3])
@pytest.mark.parametrize("seed", range(2))
def test_weighted_cs_macer_matches_per_example_reference(cost, gamma2, seed):
    logits, labels = _case(seed)
    W = cost.weights.tolist()
    loss, parts = cs_macer_loss(logits, labels, cost, sigma=0.25, lam=3.0, gamma1=4.0, gamma2=gamma2, beta=4.0)
    i3, picked = reference_weighted_i3(logits.detach(), labels, W, gamma2, 4.0)
    assert parts["i3"] == pytest.approx(i3 / len(labels), rel=1e-9, abs=1e-12)
    if gamma2 == 16.0:
        assert set(picked) == set(np.flatnonzero(cost.sensitive_mask(labels.numpy())))
    ref = reference_loss(logits.detach(), labels, W, 0.25, 3.0, 4.0, gamma2, 4.0)
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    # the same through the device-tensor path training uses
    loss_t, _ = cs_macer_loss(logits, labels, cost_tensor(cost, "cpu"), sigma=0.25, lam=3.0, gamma1=4.0,
                              gamma2=gamma2, beta=4.0)
    assert torch.equal(loss, loss_t)
    # gradient against autograd through a loop-based double reference and against finite differences
    (grad,) = torch.autograd.grad(loss, logits)
    z = logits.detach().double().requires_grad_()
    ref_t = _torch_reference_loss(z, labels, W, 0.25, 3.0, 4.0, gamma2, 4.0)
    (ref_grad,) = torch.autograd.grad(ref_t, z)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4, atol=1e-6)
    i, j, c = 3, 1, int(labels[3])
    h = 1e-5
    plus, minus = logits.detach().double().clone(), logits.detach().double().clone()
    plus[i, j, c] += h
    minus[i, j, c] -= h
    fd = (reference_loss(plus, labels, W, 0.25, 3.0, 4.0, gamma2, 4.0)
          - reference_loss(minus, labels, W, 0.25, 3.0, 4.0, gamma2, 4.0)) / (2 * h)
    assert grad[i, j, c].item() == pytest.approx(fd, rel=1e-3, abs=1e-5)


def _torch_reference_loss(z, labels, W, sigma, lam, g1, g2, beta):
    """reference_loss written per example with torch double ops, for autograd."""
    B, _, m = z.shape
    total = z.new_zeros(())
    ppf = torch.special.ndtri
    for i in range(B):
        y = int(labels[i])
        total = total - torch.log(z[i].softmax(-1).mean(0)[y] + 1e-10)
        q = (beta * z[i]).softmax(-1).mean(0)
        omega = [j for j in range(m) if W[y][j] > 0]
        if len(omega) < m - 1 and int(q.argmax()) == y:
            d = ppf(q[y]) - ppf(max((q[c] for c in range(m) if c != y), key=float))
            if math.isfinite(float(d)) and 0 < float(d) <= g1:
                total = total + lam * sigma / 2 * (g1 - d)
        if omega:
            safe = max((q[c] for c in range(m) if c not in omega), key=float)
            d = {j: ppf(safe) - ppf(q[j]) for j in omega}
            d_min = min(float(v) for v in d.values())
            if math.isfinite(d_min) and -g2 <= d_min <= g2:
                terms = [W[y][j] * (g2 - d[j]) for j in omega if float(d[j]) <= g2]
                total = total + lam * sigma / 2 * max(terms, key=float)
    return total / B


def test_weighted_i3_gradcheck_float64():
    """Finite differences (torch.autograd.gradcheck, float64) of the cost-weighted I3 in the logits."""
    cost = WEIGHTED[2]
    logits, labels = _case(7, B=6, k=3, m=5, scale=0.5, dtype=torch.float64)
    omega = torch.as_tensor(cost.matrix)[labels]
    costs = torch.as_tensor(cost.weights)[labels]
    sensitive = omega.any(1)

    def i3(z):
        _, q = _smoothed(z, labels, 4.0)
        safe = q.masked_fill(omega, -1.0).max(1).values
        costly = q.masked_fill(~omega, -1.0).max(1).values
        return _weighted_hinge_sum(16.0, safe, costly, q, omega, costs, sensitive)

    assert i3(logits) > 0
    assert torch.autograd.gradcheck(i3, (logits,), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_unit_weights_on_the_weighted_path_agree_with_the_binary_loss():
    cost = CostMatrix.pairwise(5, {1: [2, 3], 4: [0]})
    logits, labels = _case(3)
    binary, _ = cs_macer_loss(logits, labels, cost, sigma=0.25)
    as_float = torch.as_tensor(cost.weights)              # float 0/1: the cost-weighted code path
    weighted, _ = cs_macer_loss(logits, labels, as_float, sigma=0.25)
    torch.testing.assert_close(weighted, binary)
    g_b = torch.autograd.grad(binary, logits)[0]
    g_w = torch.autograd.grad(weighted, logits)[0]
    torch.testing.assert_close(g_w, g_b)


def test_weighted_cohen_r_scales_by_the_row_maximum():
    cost = CostMatrix.pairwise(5, {1: {2: 3.0, 3: 0.5}, 4: {0: 10.0}})
    logits, labels = _case(0)
    loss, _ = cohen_r_loss(logits, labels, cost, weight=1.2)
    ce = torch.stack([F.cross_entropy(logits[:, j], labels, reduction="none") for j in range(logits.shape[1])]).mean(0)
    w = torch.tensor([{1: 1.2 * 3.0, 4: 1.2 * 10.0}.get(int(y), 1.0) for y in labels])
    torch.testing.assert_close(loss, (w * ce).sum() / len(labels))


# bit for bit: the binary losses as they were before real costs (a frozen copy of that code)

def _legacy_omega(cost, labels):
    matrix = cost if isinstance(cost, torch.Tensor) else torch.as_tensor(cost.matrix, device=labels.device)
    return matrix[labels]


def _legacy_hinge_sum(threshold, top, other, eligible, low, high, low_open=False):
    finite = (top > 0) & (top < 1) & (other > 0) & (other < 1)
    with torch.no_grad():
        d = torch.special.ndtri(torch.where(finite, top, 0.5)) - torch.special.ndtri(torch.where(finite, other, 0.5))
        pick = eligible & finite & ((d > low) if low_open else (d >= low)) & (d <= high)
    margin = torch.special.ndtri(torch.where(pick, top, 0.5)) - torch.special.ndtri(torch.where(pick, other, 0.5))
    return torch.where(pick, threshold - margin, 0.0).sum()


def _legacy_cs_macer(logits, labels, cost, sigma, lam=3.0, gamma1=4.0, gamma2=16.0, beta=16.0):
    B, m = labels.shape[0], logits.shape[-1]
    s = logits.float().softmax(-1).mean(1)
    i1 = F.nll_loss(torch.log(s + 1e-10), labels, reduction="sum")
    q = (beta * logits.double()).softmax(-1).mean(1)
    omega = _legacy_omega(cost, labels)
    omega_size = omega.sum(1)
    sensitive = omega_size > 0
    q_y = q.gather(1, labels[:, None])[:, 0]
    q_other = q.scatter(1, labels[:, None], -1.0).max(1).values
    correct = q.argmax(1) == labels
    in_i2 = (~sensitive) | (omega_size < m - 1)
    i2 = _legacy_hinge_sum(gamma1, q_y, q_other, in_i2 & correct, 0.0, gamma1, low_open=True)
    safe_top = q.masked_fill(omega, -1.0).max(1).values
    costly_top = q.masked_fill(~omega, -1.0).max(1).values
    i3 = _legacy_hinge_sum(gamma2, safe_top, costly_top, sensitive, -gamma2, gamma2)
    return ((i1 + lam * sigma / 2 * (i2 + i3)) / B).float()


def _legacy_cohen_r(logits, labels, cost, weight=1.2):
    sensitive = _legacy_omega(cost, labels).any(1)
    w = torch.where(sensitive, weight, 1.0)
    ce = F.cross_entropy(logits[:, 0].float(), labels, reduction="none")
    return (w * ce).sum() / labels.shape[0]


BINARY = [CostMatrix.seedwise(5, [1]), CostMatrix.seedwise(5, [0, 2]), CostMatrix.pairwise(5, {1: [2, 3], 4: [0]}),
          CostMatrix([[0, 1, 1, 1, 1], [0, 0, 0, 0, 0], [0, 1, 0, 0, 1], [1, 1, 1, 0, 1], [0, 0, 1, 0, 0]])]


@pytest.mark.parametrize("cost", BINARY, ids=["seedwise", "seedwise2", "pairwise", "mixed"])
@pytest.mark.parametrize("seed", range(3))
def test_binary_losses_are_bit_for_bit_as_before(cost, seed):
    logits, labels = _case(seed, B=32, k=8, scale=1.0 + seed)
    for c in (cost, cost_tensor(cost, "cpu")):
        assert not isinstance(c, torch.Tensor) or c.dtype == torch.bool
        for gamma2 in (16.0, 0.5):
            new, _ = cs_macer_loss(logits, labels, c, sigma=0.25, gamma2=gamma2)
            old = _legacy_cs_macer(logits, labels, c, sigma=0.25, gamma2=gamma2)
            assert torch.equal(new, old)
            assert torch.equal(torch.autograd.grad(new, logits)[0], torch.autograd.grad(old, logits)[0])
        new, _ = cohen_r_loss(logits[:, :1], labels, c, weight=1.2)  # the recipe's one noisy copy
        old = _legacy_cohen_r(logits[:, :1], labels, c, weight=1.2)
        assert torch.equal(new, old)
        assert torch.equal(torch.autograd.grad(new, logits)[0], torch.autograd.grad(old, logits)[0])
