"""Benchmark stage A and stage B; prints ratios against baselines measured in the same run.

1. Sampling throughput (noisy images/s through sample_counts, noise generation and counting
   included) / bare forward throughput of the same model at the same batch size. Goal >= 0.9.
2. Median time of stage B (certify_from_counts + summarize) on 10,000 examples x 10 classes
   with a fresh random cost matrix each time. Goal <= 20 ms.
Usage: python scripts/bench_certify.py [--arch resnet20] [--batch 400] [--rounds 3]"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from csrs_core.certify import certify_from_counts
from csrs_core.cost import CostMatrix
from csrs_core.device import autocast, pick_device
from csrs_core.metrics import summarize
from csrs_core.models import build_model
from csrs_core.sampling import sample_counts


def bare_forward(model, batch, size, device, precision, passes):
    x = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device, precision):
        model(x)
        _sync(device)
        t = time.perf_counter()
        for _ in range(passes):
            model(x).argmax(1)
        _sync(device)
    return batch * passes / (time.perf_counter() - t)


def sampling(model, batch, size, device, precision, passes):
    n_examples = 8
    n = batch * passes // n_examples
    images = torch.randint(0, 256, (n_examples, 3, size, size), dtype=torch.uint8)
    t = time.perf_counter()
    sample_counts(model, images, np.arange(n_examples), 10, 0.25, n0=0, n=n, batch=batch, device=device,
                  precision=precision)
    _sync(device)
    return n_examples * n / (time.perf_counter() - t)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def stage_b(rounds=25):
    rng = np.random.default_rng(0)
    N, m, n = 10_000, 10, 10_000
    p = rng.dirichlet(np.full(m, 0.2), size=N)
    counts = np.stack([rng.multinomial(n, q) for q in p])
    counts0 = np.stack([rng.multinomial(100, q) for q in p])
    labels = rng.integers(0, m, N)
    times = []
    for i in range(rounds):
        matrix = (rng.random((m, m)) < 0.3).astype(int)
        np.fill_diagonal(matrix, 0)
        t = time.perf_counter()
        table = certify_from_counts(counts0, counts, labels, CostMatrix(matrix), sigma=0.25, alpha=0.001)
        summarize(table, 0.25)
        times.append(time.perf_counter() - t)
    return times[0], statistics.median(times[1:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="resnet20")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=400)
    ap.add_argument("--passes", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="fp32")
    a = ap.parse_args()
    device = pick_device(a.device)
    model = build_model(a.arch, 10, [0.5] * 3, [0.25] * 3).to(device).eval().to(memory_format=torch.channels_last)
    bare, samp = [], []
    for _ in range(a.rounds):  # interleaved, so drift hits both alike
        bare.append(bare_forward(model, a.batch, a.size, device, a.precision, a.passes))
        samp.append(sampling(model, a.batch, a.size, device, a.precision, a.passes))
    b, s = statistics.median(bare), statistics.median(samp)
    print(f"device {device}, {a.arch}, {a.size}x{a.size}, batch {a.batch}, {a.precision}, threads {torch.get_num_threads()}")
    print(f"bare forward      {b:10.1f} images/s")
    print(f"sampling (stage A){s:10.1f} images/s")
    print(f"RATIO sampling / bare forward = {s / b:.3f}   (goal >= 0.9)")
    cold, warm = stage_b()
    print(f"stage B, 10,000 examples x 10 classes, fresh random cost matrix each time: first call (cold bound "
          f"tables) {cold * 1000:.1f} ms; median of the next 24 = {warm * 1000:.1f} ms   (goal <= 20 ms)")


if __name__ == "__main__":
    main()
