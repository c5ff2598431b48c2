"""Stage A: counts of the base classifier's predictions under Gaussian noise.

Noisy copies of several images share every forward pass (full batches even when n is small;
memory bounded by the batch). Each example's noise comes from its own generator, seeded by
(seed, example index) and drawn in fixed blocks, so counts do not depend on which other
examples share a batch, how examples are split across processes, or where a run resumed."""
from __future__ import annotations

import hashlib
from typing import Callable

import numpy as np
import torch

from csrs_core.runtime.device import autocast

NOISE_BLOCK = 500
# Names the noise and counting scheme; part of every record's key. Change it whenever a change to
# this module would give other counts for the same model, data, sigma, n0, n and seed.
SAMPLING_SCHEME = "csrs-noise-v1"


def example_seed(seed: int, index: int) -> int:
    digest = hashlib.sha256(f"csrs:{seed}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@torch.inference_mode()
def sample_counts(model: torch.nn.Module, images: torch.Tensor, indices, num_classes: int, sigma: float,
                  n0: int, n: int, batch: int, seed: int = 0, device: torch.device = torch.device("cpu"),
                  precision: str = "fp32", positions=None,
                  on_batch: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """counts0 [N, m] (n0 noisy copies each) and counts [N, m] (n fresh copies each) for the
    examples at `positions` (default all; other rows stay zero) of `images`: uint8 0..255, or floating
    point in [0, 1]. on_batch(samples) after each pass.

    The images go to the device once; noise is drawn in fp32 straight into one reused batch
    buffer; every pass has exactly `batch` rows (the last is padded with rows counted nowhere),
    so a compiled model sees one shape; counts stay on the device until the end."""
    N = len(images)
    positions = list(range(N) if positions is None else positions)
    model = model.to(device).eval()
    shape = tuple(images.shape[1:])
    pixels = images[positions].to(device)
    counts = torch.zeros((2 * N + 1) * num_classes, dtype=torch.int64, device=device)  # last row: padding
    buf = torch.empty((batch + NOISE_BLOCK, *shape), device=device)
    rows = torch.empty(batch + NOISE_BLOCK, dtype=torch.int64, device=device)
    ones = torch.ones(batch, dtype=torch.int64, device=device)
    filled = 0

    def run(real: int) -> None:
        rows[real:batch] = 2 * N
        with autocast(device, precision):
            pred = model(buf[:batch].contiguous(memory_format=torch.channels_last)).argmax(1)
        counts.index_add_(0, rows[:batch] * num_classes + pred, ones)
        if on_batch:
            on_batch(real)

    for local, p in enumerate(positions):
        gen = torch.Generator(device).manual_seed(example_seed(seed, indices[p]))
        x = pixels[local].float().div_(255.0) if pixels.dtype == torch.uint8 else pixels[local].float()
        for row, total in ((2 * p, n0), (2 * p + 1, n)):
            for start in range(0, total, NOISE_BLOCK):
                size = min(NOISE_BLOCK, total - start)
                block = buf[filled:filled + size]
                torch.randn((size, *shape), generator=gen, device=device, out=block)
                block.mul_(sigma).add_(x)
                rows[filled:filled + size] = row
                filled += size
                while filled >= batch:
                    run(batch)
                    rest = filled - batch
                    buf[:rest] = buf[batch:filled].clone() if rest > batch else buf[batch:filled]
                    rows[:rest] = rows[batch:filled].clone()
                    filled = rest
    if filled:
        run(filled)
    out = counts[:2 * N * num_classes].view(N, 2, num_classes).cpu().numpy()
    return out[:, 0].copy(), out[:, 1].copy()
