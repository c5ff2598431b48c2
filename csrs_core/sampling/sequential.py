"""Stage A, sequential (docs/sequential.md): after its n0 selection copies, each example draws
estimation copies in rounds and stops as soon as a stopping rule says so (certification.sequential:
every requested ε decided, or the cap reached).

Examples that stop are replaced by undecided ones, so every forward pass stays full. An example's
copies are the next ones of its own noise stream (keyed by seed and example index) and its checks fall
at sample sizes that depend on nothing but its own count, so its counts at the stop do not depend on
the batch size, on which examples share a pass, or on where a run resumed; the first t estimation
copies are those of a fixed-budget run with n ≥ t."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from csrs_core.certification.cost import CostMatrix
from csrs_core.certification.sequences import FAMILY, PRIOR
from csrs_core.certification.sequential import undecided
from csrs_core.sampling.counts import NoisyVotes

FIRST_ROUND = 100   # estimation copies before an example's first check, and the smallest step between checks
GROWTH = 1.25       # later checks fall at about 1.25 times the previous sample size (multiples of FIRST_ROUND)
PASSES_PER_ROUND = 16


def next_check(t: int, cap: int) -> int:
    """The estimation sample size of an example's next check after one at t (a fixed schedule)."""
    grown = -(-int(t * GROWTH) // FIRST_ROUND) * FIRST_ROUND
    return min(cap, max(t + FIRST_ROUND, grown))


@dataclass(frozen=True)
class StoppingRule:
    """Stop an example when every radius in `eps` is decided for the cost matrix's support, reading the
    bounds at level `alpha` in sound mode (docs/sequential.md), or at `cap` estimation copies."""
    eps: tuple
    alpha: float
    cost: CostMatrix
    cap: int
    sigma: float

    def keep_going(self, counts0, counts, labels) -> np.ndarray:
        return undecided(counts0, counts, labels, self.cost, self.sigma, self.alpha, self.eps, self.cap)

    def key(self) -> dict:
        """Everything besides the usual key that the counts at the stop depend on."""
        support = CostMatrix(self.cost.matrix.astype(float), self.cost.class_names)
        return {"cs": FAMILY, "prior": PRIOR, "eps": [float(e) for e in self.eps], "alpha": float(self.alpha),
                "support": support.describe(), "first_round": FIRST_ROUND, "growth": GROWTH}


@dataclass
class _Active:
    local: int
    gen: torch.Generator
    x: torch.Tensor
    t: int = 0


@torch.inference_mode()
def sample_sequential(model: torch.nn.Module, images: torch.Tensor, indices, labels, num_classes: int, sigma: float,
                      n0: int, rule: StoppingRule, batch: int, seed: int = 0,
                      device: torch.device = torch.device("cpu"), precision: str = "fp32", positions=None,
                      on_batch: Callable[[int], None] | None = None,
                      on_stop: Callable[[list, np.ndarray, np.ndarray], None] | None = None):
    """counts0 [N, m] (n0 copies each) and counts [N, m] at each example's stop for the examples at
    `positions` (default all; other rows stay zero). on_stop(positions, counts0, counts) after every
    round in which examples stopped, with those examples' rows."""
    N = len(images)
    positions = list(range(N) if positions is None else positions)
    model = model.to(device).eval()
    votes = NoisyVotes(model, images[positions].to(device), num_classes, sigma, batch, device, precision, on_batch)
    labels = np.asarray(labels)[positions]
    window = max(32, -(-PASSES_PER_ROUND * batch // FIRST_ROUND))
    pending, active = list(range(len(positions)))[::-1], []
    while pending or active:
        for example in active:                      # counts0 complete: the next block of estimation copies
            t = next_check(example.t, rule.cap)
            votes.draw(example.gen, example.x, 2 * example.local + 1, t - example.t)
            example.t = t
        while pending and len(active) < window:     # newcomers draw their selection copies only, so an
            local = pending.pop()                   # example whose top class decides it stops at t = 0
            example = _Active(local, votes.stream(seed, indices[positions[local]]), votes.image(local))
            votes.draw(example.gen, example.x, 2 * local, n0)
            active.append(example)
        votes.flush()
        rows = [e.local for e in active]
        c0, c = votes.read(rows)                    # the active examples' rows only
        go_on = rule.keep_going(c0, c, labels[rows])
        done = [e.local for e, keep in zip(active, go_on) if not keep]
        active = [e for e, keep in zip(active, go_on) if keep]
        if on_stop and done:
            on_stop([positions[i] for i in done], c0[~go_on], c[~go_on])
    c0, c = votes.read()
    counts0, counts = np.zeros((N, num_classes), np.int64), np.zeros((N, num_classes), np.int64)
    counts0[positions], counts[positions] = c0, c
    return counts0, counts
