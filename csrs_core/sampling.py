"""Stage A: counts of the base classifier's predictions under Gaussian noise.

Noisy copies of several images share every forward pass (full batches even when n is small;
memory bounded by the batch). Each example's noise comes from its own generator, seeded by
(seed, example index) and drawn in fixed blocks, so counts do not depend on which other
examples share a batch, how examples are split across processes, or where a run resumed."""
from __future__ import annotations

import hashlib
from typing import Callable, Iterator

import numpy as np
import torch

from csrs_core.device import autocast

NOISE_BLOCK = 500
# Names the noise and counting scheme; part of every record's key. Change it whenever a change to
# this module would give other counts for the same model, data, sigma, n0, n and seed.
SAMPLING_SCHEME = "csrs-noise-v1"


def example_seed(seed: int, index: int) -> int:
    digest = hashlib.sha256(f"csrs:{seed}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _noisy_blocks(images, positions, indices, sigma, n0, n, seed, device) -> Iterator[tuple[torch.Tensor, int]]:
    """(noisy block, row) pairs: row 2p holds example p's selection sample, row 2p+1 its estimation sample."""
    for p in positions:
        gen = torch.Generator(device).manual_seed(example_seed(seed, indices[p]))
        x = images[p].to(device).float().div_(255.0)
        for row, total in ((2 * p, n0), (2 * p + 1, n)):
            for start in range(0, total, NOISE_BLOCK):
                size = min(NOISE_BLOCK, total - start)
                noise = torch.randn((size, *x.shape), generator=gen, device=device)
                yield noise.mul_(sigma).add_(x), row


@torch.inference_mode()
def sample_counts(model: torch.nn.Module, images: torch.Tensor, indices, num_classes: int, sigma: float,
                  n0: int, n: int, batch: int, seed: int = 0, device: torch.device = torch.device("cpu"),
                  precision: str = "fp32", positions=None,
                  on_batch: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """counts0 [N, m] (n0 noisy copies each) and counts [N, m] (n fresh copies each) for the
    examples at `positions` (default all; other rows stay zero). on_batch(samples_done) after each pass."""
    N = len(images)
    positions = range(N) if positions is None else positions
    model = model.to(device).eval().to(memory_format=torch.channels_last)
    flat = torch.zeros(2 * N * num_classes, dtype=torch.int64, device=device)
    pending, rows, filled = [], [], 0

    def run(x, r):
        with autocast(device, precision):
            pred = model(x.contiguous(memory_format=torch.channels_last)).argmax(1)
        flat.index_add_(0, r * num_classes + pred, torch.ones_like(pred))
        if on_batch:
            on_batch(len(pred))

    for block, row in _noisy_blocks(images, positions, indices, sigma, n0, n, seed, device):
        pending.append(block)
        rows.append(torch.full((len(block),), row, dtype=torch.int64, device=device))
        filled += len(block)
        while filled >= batch:
            x, r = torch.cat(pending), torch.cat(rows)
            run(x[:batch], r[:batch])
            pending, rows, filled = [x[batch:]], [r[batch:]], filled - batch
    if filled:
        run(torch.cat(pending), torch.cat(rows))
    counts = flat.view(N, 2, num_classes).cpu().numpy()
    return counts[:, 0].copy(), counts[:, 1].copy()
