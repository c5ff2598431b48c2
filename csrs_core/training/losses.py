"""Training losses (docs/design.md section 4). logits: [B, k, m] on k noisy copies of each input."""
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


def cost_tensor(cost, device=None) -> torch.Tensor:
    """The cost matrix as the losses take it, to be moved to the device once (training does, not
    every step): the bool support for a binary matrix (the paper's losses, bit for bit as they
    always were), the float64 costs for a real-valued one (the cost-weighted variants). A tensor
    is passed through, moved to `device`."""
    if isinstance(cost, torch.Tensor):
        return cost if device is None else cost.to(device)
    return torch.tensor(cost.matrix if cost.is_binary else cost.weights, device=device)  # a copy: C is read-only


def _omega(cost, labels: torch.Tensor):
    """Omega_y per example as a bool [B, m] tensor, and the costs C[y] as float64 [B, m] (None for
    a binary matrix). `cost` is a CostMatrix or cost_tensor(cost) already on the device: a bool
    tensor is the binary support, any other dtype real costs (so a float 0/1 tensor takes the
    cost-weighted path, equal to the binary losses up to rounding)."""
    matrix = cost if isinstance(cost, torch.Tensor) else cost_tensor(cost, labels.device)
    rows = matrix[labels]
    if rows.dtype == torch.bool:
        return rows, None
    return rows > 0, rows.double()


def _copies_ce(logits, labels) -> torch.Tensor:
    """Each example's cross-entropy averaged over its noisy copies (logits [B, k, C])."""
    b, k, c = logits.shape
    ce = F.cross_entropy(logits.reshape(b * k, c).float(), labels.repeat_interleave(k), reduction="none")
    return ce.view(b, k).mean(1)


def gaussian_loss(logits, labels, as_tensors: bool = False):
    """Cohen et al.: cross-entropy of the noisy copies (one copy in their recipe; with --gauss-num k,
    the mean over k, so a Gaussian run can be given MACER's budget of noisy images)."""
    loss = _copies_ce(logits, labels).mean()
    return loss, _report({"ce": loss}, as_tensors)


def cohen_r_loss(logits, labels, cost, weight: float = 1.2, as_tensors: bool = False):
    """Cross-entropy (mean over the noisy copies) with weight `weight` on sensitive examples, 1 elsewhere,
    divided by B; with real costs a sensitive example's weight is `weight` times its row's largest cost."""
    omega, costs = _omega(cost, labels)
    sensitive = omega.any(1)
    ce = _copies_ce(logits, labels)
    if costs is None:
        w = torch.where(sensitive, weight, 1.0)
    else:
        w = torch.where(sensitive, weight * costs.max(1).values, 1.0).to(ce.dtype)
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
    """The paper's Eq. 4 for any cost matrix: I1 + lam*sigma/2*(I2 + I3), divided by B.

    I3 (sensitive examples): hinge gamma2 - d_cs on -gamma2 <= d_cs <= gamma2, where
    d_cs = Phi^-1(max safe q) - Phi^-1(max costly q). I2: MACER's hinge with gamma1 over
    non-sensitive examples and pairwise-like sensitive rows (|Omega_y| < m - 1). With real costs
    (docs/design.md section 4) I3 is the worst weighted hinge max_j C[y, j] * max(gamma2 - d_j, 0) over
    j in Omega_y, d_j = Phi^-1(max safe q) - Phi^-1(q[j]), on the same rows (min_j d_j = d_cs)."""
    B, m = labels.shape[0], logits.shape[-1]
    i1, q = _smoothed(logits, labels, beta)
    omega, costs = _omega(cost, labels)                                       # [B, m]
    omega_size = omega.sum(1)
    sensitive = omega_size > 0

    q_y, q_other, correct = _top_y_and_other(q, labels)
    in_i2 = (~sensitive) | (omega_size < m - 1)
    i2 = _hinge_sum(gamma1, q_y, q_other, in_i2 & correct, 0.0, gamma1, low_open=True)

    safe_top = q.masked_fill(omega, -1.0).max(1).values
    costly_top = q.masked_fill(~omega, -1.0).max(1).values
    if costs is None:
        i3 = _hinge_sum(gamma2, safe_top, costly_top, sensitive, -gamma2, gamma2)
    else:
        i3 = _weighted_hinge_sum(gamma2, safe_top, costly_top, q, omega, costs, sensitive)
    loss = ((i1 + lam * sigma / 2 * (i2 + i3)) / B).float()
    return loss, _report({"ce": i1 / B, "i2": i2 / B, "i3": i3 / B}, as_tensors)


def _weighted_hinge_sum(gamma2: float, safe_top: torch.Tensor, costly_top: torch.Tensor, q: torch.Tensor,
                        omega: torch.Tensor, costs: torch.Tensor, eligible: torch.Tensor) -> torch.Tensor:
    """Cost-weighted I3: sum over eligible rows with finite -gamma2 <= min_j d_j <= gamma2 of
    max_{j in Omega} costs[j] * max(gamma2 - d_j, 0), d_j = Phi^-1(safe_top) - Phi^-1(q[j]).

    As in _hinge_sum, rows and classes are selected before Phi^-1 is taken with gradients: a class
    with q[j] = 0 (d_j = +inf) or d_j > gamma2 has hinge 0 and is left out, unselected entries are
    replaced by 1/2, so no 0 * inf reaches the gradient."""
    finite = (safe_top > 0) & (safe_top < 1) & (costly_top > 0) & (costly_top < 1)
    q_ok = omega & (q > 0) & (q < 1)
    with torch.no_grad():
        phi_safe = torch.special.ndtri(torch.where(finite, safe_top, 0.5))
        d_min = phi_safe - torch.special.ndtri(torch.where(finite, costly_top, 0.5))
        pick = eligible & finite & (d_min >= -gamma2) & (d_min <= gamma2)
        d = phi_safe[:, None] - torch.special.ndtri(torch.where(q_ok, q, 0.5))
        use = pick[:, None] & q_ok & (d <= gamma2)
    margin = (torch.special.ndtri(torch.where(pick, safe_top, 0.5))[:, None]
              - torch.special.ndtri(torch.where(use, q, 0.5)))
    hinge = torch.where(use, costs * (gamma2 - margin), 0.0)
    return hinge.max(1).values.sum()
