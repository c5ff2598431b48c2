"""Training losses (design.md section 4). logits: [B, k, m] on k noisy copies of each input."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from csrs_core.cost import CostMatrix

_EPS = 1e-6  # probabilities this close to 0 or 1 count as saturated: Phi^-1 = -inf / +inf


def _phi_inv(p: torch.Tensor) -> torch.Tensor:
    """Phi^-1(p), +-inf where p is saturated; the gradient stays finite (zero there)."""
    value = torch.special.ndtri(p.clamp(_EPS, 1 - _EPS))
    saturated = (p <= _EPS) | (p >= 1 - _EPS)
    infinity = torch.where(p >= 0.5, torch.full_like(p, float("inf")), torch.full_like(p, float("-inf")))
    return torch.where(saturated, infinity, value)


def _finite_sum(hinge: torch.Tensor) -> torch.Tensor:
    """Sum of the finite entries (non-finite margins are dropped, as in MACER)."""
    return torch.where(torch.isfinite(hinge), hinge, torch.zeros_like(hinge)).sum()


def _smoothed(logits: torch.Tensor, labels: torch.Tensor, beta: float):
    """I1 (summed NLL of the soft smoothed classifier) and q, the beta-sharpened soft votes."""
    logits = logits.float()
    s = logits.softmax(-1).mean(1)
    i1 = F.nll_loss(torch.log(s + 1e-10), labels, reduction="sum")
    q = (beta * logits).softmax(-1).mean(1)
    return i1, q


def _standard_margin(q: torch.Tensor, labels: torch.Tensor):
    """Phi^-1(q[y]) - Phi^-1(max_{k != y} q[k]) and whether the top class is y."""
    q_y = q.gather(1, labels[:, None])[:, 0]
    others = q.scatter(1, labels[:, None], -1.0)
    return _phi_inv(q_y) - _phi_inv(others.max(1).values), q.argmax(1) == labels


def gaussian_loss(logits, labels):
    """Cohen et al.: cross-entropy of the first noisy copy."""
    loss = F.cross_entropy(logits[:, 0].float(), labels)
    return loss, {"ce": loss.item()}


def cohen_r_loss(logits, labels, cost: CostMatrix, weight: float = 1.2):
    """Cross-entropy with weight `weight` on sensitive examples, 1 elsewhere, divided by B."""
    sens = torch.as_tensor(cost.sensitive_mask(labels.cpu().numpy()), device=labels.device)
    w = torch.where(sens, torch.full_like(labels, 1, dtype=torch.float32) * weight, torch.ones_like(labels, dtype=torch.float32))
    ce = F.cross_entropy(logits[:, 0].float(), labels, reduction="none")
    loss = (w * ce).sum() / labels.shape[0]
    return loss, {"ce": ce.mean().item(), "weighted_ce": loss.item()}


def macer_loss(logits, labels, sigma: float, lam: float = 12.0, gamma: float = 8.0, beta: float = 16.0):
    """Zhai et al.: soft smoothed NLL plus lam * sigma/2 * hinge on correct examples' margins."""
    B = labels.shape[0]
    i1, q = _smoothed(logits, labels, beta)
    margin, correct = _standard_margin(q, labels)
    pick = correct & (margin >= 0) & (margin <= gamma)
    robust = _finite_sum((gamma - margin)[pick])
    loss = (i1 + lam * sigma / 2 * robust) / B
    return loss, {"ce": i1.item() / B, "robust": robust.item() / B}


def cs_macer_loss(logits, labels, cost: CostMatrix, sigma: float, lam: float = 3.0,
                  gamma1: float = 4.0, gamma2: float = 16.0, beta: float = 16.0):
    """The paper's Eq. 4 for any binary cost matrix: I1 + lam*sigma/2*(I2 + I3), divided by B.

    I3 (sensitive examples): hinge gamma2 - d_cs on -gamma2 <= d_cs <= gamma2, where
    d_cs = Phi^-1(max safe q) - Phi^-1(max costly q). I2: MACER's hinge with gamma1 over
    non-sensitive examples and pairwise-like sensitive rows (|Omega_y| < m - 1)."""
    B, m = labels.shape[0], logits.shape[-1]
    i1, q = _smoothed(logits, labels, beta)
    omega = torch.as_tensor(cost.matrix, device=labels.device)[labels]        # [B, m]
    omega_size = omega.sum(1)
    sensitive = omega_size > 0

    margin, correct = _standard_margin(q, labels)
    in_i2 = (~sensitive) | (omega_size < m - 1)
    pick2 = in_i2 & correct & (margin > 0) & (margin <= gamma1)
    i2 = _finite_sum((gamma1 - margin)[pick2])

    q_sens, om = q[sensitive], omega[sensitive]
    if q_sens.numel():
        safe_top = q_sens.masked_fill(om, -1.0).max(1).values
        costly_top = q_sens.masked_fill(~om, -1.0).max(1).values
        d_cs = _phi_inv(safe_top) - _phi_inv(costly_top)
        pick3 = (d_cs >= -gamma2) & (d_cs <= gamma2)
        i3 = _finite_sum((gamma2 - d_cs)[pick3])
    else:
        i3 = q.sum() * 0.0
    loss = (i1 + lam * sigma / 2 * (i2 + i3)) / B
    return loss, {"ce": i1.item() / B, "i2": i2.item() / B, "i3": i3.item() / B}
