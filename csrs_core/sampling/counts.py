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

from csrs_core import CSRSError
from csrs_core.runtime.device import autocast

NOISE_BLOCK = 500
CHECK_COPIES = 3  # the first pass checks the model's output on this many noisy copies (an odd batch)
# Names the noise and counting scheme; part of every record's key. Change it whenever a change to
# this module would give other counts for the same model, data, sigma, n0, n and seed.
SAMPLING_SCHEME = "csrs-noise-v1"


def example_seed(seed: int, index: int) -> int:
    digest = hashlib.sha256(f"csrs:{seed}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class NoisyVotes:
    """Counts the base classifier's votes on noisy copies of images in full batches: `draw` adds
    copies of one example, drawn from its own noise stream, to a row of counts; a pass runs whenever a
    batch is full, and `flush` runs the rest (padded with rows counted nowhere, so a compiled model sees
    one shape). Rows 2p and 2p+1 hold position p's selection and estimation counts; counts stay on
    the device until read."""

    def __init__(self, model: torch.nn.Module, pixels: torch.Tensor, num_classes: int, sigma: float, batch: int,
                 device: torch.device, precision: str, on_batch: Callable[[int], None] | None = None):
        self.model, self.m, self.sigma, self.batch = model, num_classes, sigma, batch
        self.device, self.precision, self.on_batch = device, precision, on_batch
        self.pixels = pixels
        rows = 2 * len(pixels)
        self.counts = torch.zeros((rows + 1) * num_classes, dtype=torch.int64, device=device)  # last row: padding
        self.padding = rows
        self.buf = torch.empty((batch + NOISE_BLOCK, *pixels.shape[1:]), device=device)
        self.rows = torch.empty(batch + NOISE_BLOCK, dtype=torch.int64, device=device)
        self.ones = torch.ones(batch, dtype=torch.int64, device=device)
        self.filled = 0

    def stream(self, seed: int, index: int) -> torch.Generator:
        """The noise stream of the example with id `index` (seeded by seed and index, nothing else)."""
        return torch.Generator(self.device).manual_seed(example_seed(seed, index))

    def image(self, local: int) -> torch.Tensor:
        x = self.pixels[local]
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()

    def draw(self, gen: torch.Generator, x: torch.Tensor, row: int, total: int) -> None:
        """Add `total` noisy copies of image x, the next ones of stream `gen`, to counts row `row`."""
        for start in range(0, total, NOISE_BLOCK):
            size = min(NOISE_BLOCK, total - start)
            block = self.buf[self.filled:self.filled + size]
            torch.randn((size, *x.shape), generator=gen, device=self.device, out=block)
            block.mul_(self.sigma).add_(x)
            self.rows[self.filled:self.filled + size] = row
            self.filled += size
            while self.filled >= self.batch:
                self._run(self.batch)
                rest = self.filled - self.batch
                self.buf[:rest] = self.buf[self.batch:self.filled].clone() if rest > self.batch \
                    else self.buf[self.batch:self.filled]
                self.rows[:rest] = self.rows[self.batch:self.filled].clone()
                self.filled = rest

    def flush(self) -> None:
        """Count every copy drawn so far."""
        if self.filled:
            self._run(self.filled)
            self.filled = 0

    def read(self, rows=None) -> tuple[np.ndarray, np.ndarray]:
        """counts0 and counts [len, m] of the positions `rows` (default every one; call flush first):
        only those rows leave the device."""
        out = self.counts[:self.padding * self.m].view(-1, 2, self.m)
        if rows is not None:
            out = out[torch.as_tensor(rows, dtype=torch.long, device=out.device)]
        out = out.cpu().numpy()
        return out[:, 0].copy(), out[:, 1].copy()

    def _run(self, real: int) -> None:
        batch = self.batch
        self.rows[real:batch] = self.padding
        with autocast(self.device, self.precision):
            pred = self.model(self.buf[:batch].contiguous(memory_format=torch.channels_last)).argmax(1)
        self.counts.index_add_(0, self.rows[:batch] * self.m + pred, self.ones)
        if self.on_batch:
            self.on_batch(real)


@torch.inference_mode()
def check_logits(model: torch.nn.Module, image: torch.Tensor, num_classes: int, sigma: float, device: torch.device,
                 precision: str, what: str, hint: str = "", error=CSRSError, outcome: str = "nothing was sampled") -> None:
    """One forward pass on CHECK_COPIES noisy copies of `image` (uint8 0..255 or floats in [0, 1], [C, H, W]; a
    fixed noise stream, never counted): CSRSError unless the model returns finite logits
    [CHECK_COPIES, num_classes] (`error`, whose message names the model as `what`, e.g. "cohen.pt: its model",
    and ends with `outcome`)."""
    x = image.to(device).float()
    x = x / 255.0 if image.dtype == torch.uint8 else x
    gen = torch.Generator(device).manual_seed(0)
    noisy = x + sigma * torch.randn((CHECK_COPIES, *x.shape), generator=gen, device=device)
    with autocast(device, precision):
        out = model.to(device).eval()(noisy.contiguous(memory_format=torch.channels_last))
    if not isinstance(out, torch.Tensor) or out.shape != (CHECK_COPIES, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    elif not torch.isfinite(out).all():
        got = f"non-finite logits ({int((~torch.isfinite(out)).sum())} NaN or infinite values)"
    else:
        return
    raise error(f"{what} returns {got} for a batch of {CHECK_COPIES} noisy images of shape {tuple(x.shape)}: it "
                f"must return finite logits [batch, {num_classes}]{hint}; {outcome}")


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
    so a compiled model sees one shape."""
    N = len(images)
    positions = list(range(N) if positions is None else positions)
    model = model.to(device).eval()
    votes = NoisyVotes(model, images[positions].to(device), num_classes, sigma, batch, device, precision, on_batch)
    for local, p in enumerate(positions):
        gen = votes.stream(seed, indices[p])
        x = votes.image(local)
        votes.draw(gen, x, 2 * local, n0)
        votes.draw(gen, x, 2 * local + 1, n)
    votes.flush()
    c0, c = votes.read()
    counts0, counts = np.zeros((N, num_classes), np.int64), np.zeros((N, num_classes), np.int64)
    counts0[positions], counts[positions] = c0, c
    return counts0, counts
