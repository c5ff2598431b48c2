"""Training losses (design.md section 4). logits: [B, k, m] on k noisy copies of each input."""
from __future__ import annotations

import torch
import torch.nn.functional as F



def _hinge_sum(threshold: float, top: torch.Tensor, other: torch.Tensor, eligible: torch.Tensor,
               low: float, high: float, low_open: bool = False) -> torch.Tensor:
    """Sum over eligible rows of threshold - d, d = Phi^-1(top) - Phi^-1(other), where low <= d <= high
    (low < d with low_open).

    Margins are dropped only when truly infinite (a probability exactly 0 or 1, where Phi^-1 is
    infinite), as in MACER. The rows are selected *before* Phi^-1 is taken with gradients, so an
    unselected row never contributes 0 * inf = NaN to the gradient (bf16 included): unselected
    rows are replaced by 1/2 before Phi^-1, with masks only (no host synchronisation)."""
    finite = (top > 0) & (top < 1) & (other > 0) & (other < 1)
    with torch.no_grad():
        d = torch.special.ndtri(torch.where(finite, top, 0.5)) - torch.special.ndtri(torch.where(finite, other, 0.5))
        pick = eligible & finite & ((d > low) if low_open else (d >= low)) & (d <= high)
    margin = torch.special.ndtri(torch.where(pick, top, 0.5)) - torch.special.ndtri(torch.where(pick, other, 0.5))
    return torch.where(pick, threshold - margin, 0.0).sum()


def _smoothed(logits: torch.Tensor, labels: torch.Tensor, beta: float):
    """I1 (summed NLL of the soft smoothed classifier) and q, the beta-sharpened soft votes.

    q is computed in float64 (a few thousand numbers per batch): a soft vote as small as 1e-42
    still has a finite margin, and the derivative of Phi^-1 there (~1e40) would overflow fp32 in
    the backward pass although the gradient it contributes to the logits is of order one."""
    s = logits.float().softmax(-1).mean(1)
    i1 = F.nll_loss(torch.log(s + 1e-10), labels, reduction="sum")
    q = (beta * logits.double()).softmax(-1).mean(1)
    return i1, q


def _top_y_and_other(q: torch.Tensor, labels: torch.Tensor):
    """q[y], max_{k != y} q[k], and whether the top class is y."""
    q_y = q.gather(1, labels[:, None])[:, 0]
    others = q.scatter(1, labels[:, None], -1.0)
    return q_y, others.max(1).values, q.argmax(1) == labels


def _report(parts: dict, as_tensors: bool) -> dict:
    """Each term's batch mean: detached 0-d tensors (no host synchronisation) or floats."""
    detached = {k: v.detach() for k, v in parts.items()}
    return detached if as_tensors else {k: float(v) for k, v in detached.items()}


def _omega(cost, labels: torch.Tensor) -> torch.Tensor:
    """Omega_y per example as a bool [B, m] tensor; `cost` is a CostMatrix or its bool matrix
    already on the device (so training moves it once, not every step)."""
    matrix = cost if isinstance(cost, torch.Tensor) else torch.as_tensor(cost.matrix, device=labels.device)
    return matrix[labels]


def gaussian_loss(logits, labels, as_tensors: bool = False):
    """Cohen et al.: cross-entropy of the first noisy copy."""
    loss = F.cross_entropy(logits[:, 0].float(), labels)
    return loss, _report({"ce": loss}, as_tensors)


def cohen_r_loss(logits, labels, cost, weight: float = 1.2, as_tensors: bool = False):
    """Cross-entropy with weight `weight` on sensitive examples, 1 elsewhere, divided by B."""
    sensitive = _omega(cost, labels).any(1)
    w = torch.where(sensitive, weight, 1.0)
    ce = F.cross_entropy(logits[:, 0].float(), labels, reduction="none")
    loss = (w * ce).sum() / labels.shape[0]
    return loss, _report({"ce": ce.mean(), "weighted_ce": loss}, as_tensors)


def macer_loss(logits, labels, sigma: float, lam: float = 12.0, gamma: float = 8.0, beta: float = 16.0,
               as_tensors: bool = False):
    """Zhai et al.: soft smoothed NLL plus lam * sigma/2 * hinge on correct examples' margins."""
    B = labels.shape[0]
    i1, q = _smoothed(logits, labels, beta)
    q_y, q_other, correct = _top_y_and_other(q, labels)
    robust = _hinge_sum(gamma, q_y, q_other, correct, 0.0, gamma)
    loss = ((i1 + lam * sigma / 2 * robust) / B).float()
    return loss, _report({"ce": i1 / B, "robust": robust / B}, as_tensors)


def cs_macer_loss(logits, labels, cost, sigma: float, lam: float = 3.0,
                  gamma1: float = 4.0, gamma2: float = 16.0, beta: float = 16.0, as_tensors: bool = False):
    """The paper's Eq. 4 for any binary cost matrix: I1 + lam*sigma/2*(I2 + I3), divided by B.

    I3 (sensitive examples): hinge gamma2 - d_cs on -gamma2 <= d_cs <= gamma2, where
    d_cs = Phi^-1(max safe q) - Phi^-1(max costly q). I2: MACER's hinge with gamma1 over
    non-sensitive examples and pairwise-like sensitive rows (|Omega_y| < m - 1)."""
    B, m = labels.shape[0], logits.shape[-1]
    i1, q = _smoothed(logits, labels, beta)
    omega = _omega(cost, labels)                                              # [B, m]
    omega_size = omega.sum(1)
    sensitive = omega_size > 0

    q_y, q_other, correct = _top_y_and_other(q, labels)
    in_i2 = (~sensitive) | (omega_size < m - 1)
    i2 = _hinge_sum(gamma1, q_y, q_other, in_i2 & correct, 0.0, gamma1, low_open=True)

    safe_top = q.masked_fill(omega, -1.0).max(1).values
    costly_top = q.masked_fill(~omega, -1.0).max(1).values
    i3 = _hinge_sum(gamma2, safe_top, costly_top, sensitive, -gamma2, gamma2)
    loss = ((i1 + lam * sigma / 2 * (i2 + i3)) / B).float()
    return loss, _report({"ce": i1 / B, "i2": i2 / B, "i3": i3 / B}, as_tensors)
