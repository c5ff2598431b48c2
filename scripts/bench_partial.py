"""What saving a finished chunk of a certification costs as the data grows (docs/benchmarks.md).

Stage A saves each chunk of 32 finished examples as a file of its own (csrs_core.sampling.store.write_chunk).
This times that save for N = 50 and N = 20,000 examples with m = 1,000 classes, against rewriting the whole
N x m partial record per chunk (what a single partial file costs), and reports the per-chunk times and their
ratio. Goal: the N = 20,000 save within 2x of the N = 50 one.

    python scripts/bench_partial.py [--chunks 20]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from csrs_core.runtime.atomic import atomic_write_npz
from csrs_core.sampling.store import read_chunks, write_chunk

CHUNK, CLASSES = 32, 1_000


def per_chunk(N: int, chunks: int, whole: bool) -> float:
    """Median seconds to save one chunk of CHUNK finished examples of N (m = CLASSES, n = 1,000 votes each)."""
    rng = np.random.default_rng(0)
    counts0 = rng.multinomial(100, np.full(CLASSES, 1 / CLASSES), size=N)
    counts = rng.multinomial(1000, np.full(CLASSES, 1 / CLASSES), size=N)
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        partial = Path(tmp) / "key.partial"
        for i in range(chunks):
            rows = (np.arange(CHUNK) + i * CHUNK) % N
            t0 = time.perf_counter()
            if whole:
                atomic_write_npz(Path(tmp) / "key.partial.npz", counts0=counts0, counts=counts)
            else:
                write_chunk(partial, "key", rows, counts0[rows], counts[rows])
            times.append(time.perf_counter() - t0)
        if not whole:
            _, got, done, notes = read_chunks(partial, "key", counts.shape)
            assert not notes and np.array_equal(got[done], counts[done])
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=20)
    args = parser.parse_args(argv)
    small, large = per_chunk(50, args.chunks, False), per_chunk(20_000, args.chunks, False)
    whole_small, whole_large = per_chunk(50, 5, True), per_chunk(20_000, 5, True)
    print(f"save of a {CHUNK}-example chunk, m = {CLASSES:,}: N = 50 {small * 1e3:.1f} ms, N = 20,000 "
          f"{large * 1e3:.1f} ms: ratio {large / small:.2f} (goal ≤ 2)")
    print(f"rewriting the whole partial record instead: N = 50 {whole_small * 1e3:.1f} ms, N = 20,000 "
          f"{whole_large * 1e3:.0f} ms ({whole_large / whole_small:.0f}×)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
