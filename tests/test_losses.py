import math

import pytest
import torch
from scipy.stats import norm

from csrs_core.certification.cost import CostMatrix
from csrs_core.training.losses import cohen_r_loss, cs_macer_loss, gaussian_loss, macer_loss


def _phi_inv(p):
    return norm.ppf(min(max(p, 0.0), 1.0))


def reference_cs_macer(logits, labels, cost, sigma, lam, g1, g2, beta):
    """Slow per-example CS-MACER (docs/design.md section 4) in plain Python floats."""
    B, k, m = logits.shape
    i1 = i2 = i3 = 0.0
    picked2, picked3 = [], []
    for i in range(B):
        z = logits[i].double()
        s = z.softmax(-1).mean(0)
        q = (beta * z).softmax(-1).mean(0).tolist()
        y = int(labels[i])
        i1 += -math.log(float(s[y]) + 1e-10)
        omega = cost.omega(y)
        top = max(range(m), key=lambda c: q[c])
        d = _phi_inv(q[y]) - _phi_inv(max(q[c] for c in range(m) if c != y))
        if (not omega or len(omega) < m - 1) and top == y and 0 < d <= g1 and math.isfinite(d):
            i2 += g1 - d
            picked2.append(i)
        if omega:
            safe = max(q[c] for c in range(m) if c not in omega)
            costly = max(q[c] for c in omega)
            dcs = _phi_inv(safe) - _phi_inv(costly)
            if math.isfinite(dcs) and -g2 <= dcs <= g2:
                i3 += g2 - dcs
                picked3.append(i)
    return (i1 + lam * sigma / 2 * (i2 + i3)) / B, picked2, picked3


def reference_macer(logits, labels, sigma, lam, gamma, beta):
    B, k, m = logits.shape
    total = 0.0
    for i in range(B):
        z = logits[i].double()
        y = int(labels[i])
        total += -math.log(float(z.softmax(-1).mean(0)[y]) + 1e-10)
        q = (beta * z).softmax(-1).mean(0).tolist()
        d = _phi_inv(q[y]) - _phi_inv(max(q[c] for c in range(m) if c != y))
        if max(range(m), key=lambda c: q[c]) == y and math.isfinite(d) and 0 <= d <= gamma:
            total += lam * sigma / 2 * (gamma - d)
    return total / B


def _finite_difference(loss_of, logits, index, h):
    """Central difference of loss_of(logits) in the entry `index`, in double precision."""
    plus, minus = logits.detach().clone(), logits.detach().clone()
    plus[index] += h
    minus[index] -= h
    return (loss_of(plus) - loss_of(minus)) / (2 * h)


def _case(seed, B=24, k=6, m=5, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, k, m, generator=g) * scale).requires_grad_()
    labels = torch.randint(0, m, (B,), generator=g)
    return logits, labels


@pytest.mark.parametrize("cost", [CostMatrix.seedwise(5, [1]), CostMatrix.seedwise(5, [0, 2]),
                                  CostMatrix.pairwise(5, {1: [2]}), CostMatrix.pairwise(5, {1: [2, 3], 4: [0]})])
@pytest.mark.parametrize("seed", range(3))
def test_cs_macer_matches_reference(cost, seed):
    logits, labels = _case(seed)
    loss, parts = cs_macer_loss(logits, labels, cost, sigma=0.25, lam=3.0, gamma1=4.0, gamma2=16.0, beta=4.0)
    ref, picked2, picked3 = reference_cs_macer(logits.detach(), labels, cost, 0.25, 3.0, 4.0, 16.0, 4.0)
    assert loss.item() == pytest.approx(ref, rel=1e-4)
    sens = cost.sensitive_mask(labels.numpy())
    assert set(picked3) == set(torch.nonzero(torch.as_tensor(sens)).flatten().tolist())
    # gradient against a double-precision finite-difference of the reference
    loss.backward()
    grad = logits.grad
    i, j, c = 0, 0, int(labels[0])
    fd = _finite_difference(lambda z: reference_cs_macer(z, labels, cost, 0.25, 3.0, 4.0, 16.0, 4.0)[0],
                            logits, (i, j, c), 1e-4)
    assert grad[i, j, c].item() == pytest.approx(fd, rel=2e-2, abs=1e-4)


def test_i2_membership_seedwise_vs_pairwise():
    """A seedwise row (|Omega| = m-1) is only in I3; a pairwise row is in both I2 and I3."""
    logits = torch.zeros(2, 4, 3)
    logits[:, :, 0] = 0.6   # top class 0 = the label, margin inside (0, gamma1]
    labels = torch.tensor([0, 0])
    _, p_seed = cs_macer_loss(logits, labels, CostMatrix.seedwise(3, [0]), sigma=0.5, beta=1.0)
    _, p_pair = cs_macer_loss(logits, labels, CostMatrix.pairwise(3, {0: [1]}), sigma=0.5, beta=1.0)
    assert p_seed["i2"] == 0 and p_seed["i3"] > 0
    assert p_pair["i2"] > 0 and p_pair["i3"] > 0


@pytest.mark.parametrize("seed", range(3))
def test_macer_matches_reference(seed):
    logits, labels = _case(seed, scale=0.5)
    loss, _ = macer_loss(logits, labels, sigma=0.5, lam=12.0, gamma=8.0, beta=4.0)
    assert loss.item() == pytest.approx(reference_macer(logits.detach(), labels, 0.5, 12.0, 8.0, 4.0), rel=1e-4)


def test_cohen_r_weights_and_gaussian():
    logits, labels = _case(0)
    cost = CostMatrix.seedwise(5, [int(labels[0])])
    loss, _ = cohen_r_loss(logits, labels, cost, weight=1.2)
    assert logits.shape[1] > 1  # the mean over every noisy copy, each copy's cross-entropy computed alone
    ce = torch.stack([torch.nn.functional.cross_entropy(logits[:, j], labels, reduction="none")
                      for j in range(logits.shape[1])]).mean(0)
    w = torch.where(labels == labels[0], 1.2, 1.0)
    assert loss.item() == pytest.approx(((w * ce).sum() / len(labels)).item())
    g, _ = gaussian_loss(logits, labels)
    assert g.item() == pytest.approx(ce.mean().item())
    same, _ = cohen_r_loss(logits, labels, cost, weight=1.0)
    assert same.item() == pytest.approx(g.item())
    one, _ = gaussian_loss(logits[:, :1], labels)  # Cohen et al.'s recipe: one noisy copy
    assert one.item() == pytest.approx(torch.nn.functional.cross_entropy(logits[:, 0], labels).item())


def test_saturated_probabilities_give_finite_gradients():
    logits = torch.zeros(4, 3, 3)
    logits[:, :, 0] = 60.0      # q_y == 1 exactly: Phi^-1 = inf, dropped
    logits[1, :, :] = 0.0
    logits[2, :, 1] = 80.0
    logits = logits.requires_grad_()
    labels = torch.tensor([0, 0, 0, 2])
    for loss, _ in (cs_macer_loss(logits, labels, CostMatrix.pairwise(3, {0: [1]}), sigma=0.25),
                    macer_loss(logits, labels, sigma=0.25)):
        assert torch.isfinite(loss)
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(grad).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = cs_macer_loss(logits * 1.0, labels, CostMatrix.seedwise(3, [0]), sigma=0.25)
    assert torch.isfinite(torch.autograd.grad(loss, logits)[0]).all()


def _near_saturated(B=6, k=4):
    """Label 0 under pairwise 0 -> {1}: classes 0 and 2 share the votes; class 1's soft vote is
    ~1e-9, within 1e-6 of 0 but a finite Phi^-1 (about -6): MACER keeps such margins."""
    logits = torch.zeros(B, k, 3)
    logits[:, :, 1] = -1.25 - 0.02 * torch.arange(B)[:, None]
    logits[:, :, 2] = -0.01 * torch.arange(1, B + 1)[:, None]
    return logits.requires_grad_(), torch.zeros(B, dtype=torch.long)


def test_margins_near_saturation_are_kept_and_match_the_reference():
    logits, labels = _near_saturated()
    cost = CostMatrix.pairwise(3, {0: [1]})
    q = (16.0 * logits.detach().double()).softmax(-1).mean(1)
    assert (q[:, 1] < 1e-6).all() and (q[:, 1] > 0).all()
    loss, parts = cs_macer_loss(logits, labels, cost, sigma=0.25, lam=3.0, gamma1=4.0, gamma2=16.0, beta=16.0)
    ref, _, picked3 = reference_cs_macer(logits.detach(), labels, cost, 0.25, 3.0, 4.0, 16.0, 16.0)
    assert picked3 == list(range(len(labels)))            # every near-saturated margin counts in I3
    assert loss.item() == pytest.approx(ref, rel=1e-6)
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(grad).all()
    i, j, c = 2, 1, 0
    fd = _finite_difference(lambda z: reference_cs_macer(z, labels, cost, 0.25, 3.0, 4.0, 16.0, 16.0)[0],
                            logits, (i, j, c), 1e-3)
    assert grad[i, j, c].item() == pytest.approx(fd, rel=1e-2, abs=1e-5)
    # MACER on the same logits agrees with its reference as well
    macer, _ = macer_loss(logits, labels, sigma=0.25, lam=12.0, gamma=8.0, beta=16.0)
    assert macer.item() == pytest.approx(reference_macer(logits.detach(), labels, 0.25, 12.0, 8.0, 16.0), rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_unselected_extreme_margins_never_poison_the_gradient(dtype):
    """Infinite margins (q exactly 0 or 1) are selected out before Phi^-1 is taken, and a finite
    margin of a vote as small as 1e-42 (derivative of Phi^-1 ~1e40) still gives a finite gradient,
    in fp32 and bf16 logits alike."""
    logits = torch.zeros(3, 2, 3)
    logits[0, :, 0], logits[0, :, 1] = 8.0, -8.0      # q[1] ~ 1e-100 underflows, q[0] rounds to 1
    logits[1, :, 1] = -6.0                              # q[1] ~ 1e-42: subnormal in fp32
    logits[2, :, 2] = 0.3
    logits = logits.to(dtype).requires_grad_()
    labels = torch.tensor([0, 0, 2])
    for loss, _ in (cs_macer_loss(logits, labels, CostMatrix.pairwise(3, {0: [1], 2: [0]}), sigma=0.5),
                    macer_loss(logits, labels, sigma=0.5)):
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
