"""Time a dashboard rerun after one click on the cost-matrix grid, with 4 checkpoints x 1,000 cached
examples x 10 classes (random counts), under Streamlit's AppTest (script, stage B and figure
building; not the browser's drawing). Goal: under 0.5 s.  Usage: python scripts/bench_dashboard.py"""
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
from csrs_core.checkpoints import file_digest, save_checkpoint
from csrs_core.sampling import SAMPLING_SCHEME
from csrs_core.store import cert_dir, write_record
from csrs_core.models import build_model


def build(root: Path, checkpoints=4, examples=1000, m=10, n=1000):
    rng = np.random.default_rng(0)
    classes = [f"class{i}" for i in range(m)]
    for c in range(checkpoints):
        path = root / "bench" / f"model{c}.pt"
        meta = {"arch": "resnet8", "classes": classes, "dataset": "synthetic", "sigma": 0.25, "method": "gaussian",
                "mean": [0.5] * 3, "std": [0.25] * 3}
        save_checkpoint(path, build_model("resnet8", m, meta["mean"], meta["std"]), meta)
        labels = np.repeat(np.arange(m), examples // m)
        p = rng.dirichlet(np.full(m, 0.3), size=examples)
        p[np.arange(examples), labels] += 2.0
        p /= p.sum(1, keepdims=True)
        counts = np.stack([rng.multinomial(n, q) for q in p])
        counts0 = np.stack([rng.multinomial(100, q) for q in p])
        meta = {"checkpoint_sha256": file_digest(path), "dataset": "synthetic", "split": "test",
                "indices_sha256": "bench", "content_sha256": "bench", "sigma": 0.25, "n0": 100, "n": n, "seed": 0,
                "precision": "fp32", "device_type": "cpu", "scheme": SAMPLING_SCHEME, "num_examples": examples,
                "classes": classes, "method": "gaussian", "created": time.time(), "key": f"bench{c}"}
        write_record(cert_dir(path) / "bench.npz", counts0, counts, labels, np.arange(examples), meta)


def main():
    from streamlit.testing.v1 import AppTest
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp))
        os.environ["CSRS_CHECKPOINTS"] = tmp
        at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=120)
        at.run()
        assert not at.exception, at.exception
        times = []
        for i in range(8):
            box = at.checkbox(key=f"cell::bench::{i % 10}::{(i + 1) % 10}")
            box.uncheck() if box.value else box.check()
            t = time.perf_counter()
            at.run()
            times.append(time.perf_counter() - t)
            assert not at.exception, at.exception
        print(f"rerun after a grid click, 4 checkpoints x 1,000 examples: median {statistics.median(times):.3f} s, "
              f"max {max(times):.3f} s over {len(times)} clicks   (goal < 0.5 s)")


if __name__ == "__main__":
    main()
