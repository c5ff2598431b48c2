"""Sequential certification against the fixed budget on shipped models (docs/benchmarks.md).

For each model: 100 test images of its shipped sample (a fixed random choice, seed 0), decided at
ε ∈ {0.25, 0.5} with a cap of n = 100,000: the mean estimation samples per image and the ratio to the cap.
On the first 20 of them, a fixed-budget run at n = 100,000 on the same noise: wall time of both and the
decisions compared (each difference printed with both radii). The bar: on CIFAR-10, the first 20 images
use ≤ 5,000 samples each on average at ε = 0.25 and certify every image the shipped n = 1,000 record
certifies at 0.25 (one miss at most).

    python scripts/bench_sequential.py [--examples 100] [--subset 20] [--cap 100000] [--out bench.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from csrs_core import SmoothedClassifier
from csrs_core.certification.certificates import certify_from_counts
from csrs_core.certification.cost import parse_cost
from csrs_core.certification.explain import radius as deciding_radius
from csrs_core.data import load_dataset, select_examples
from csrs_core.models.checkpoints import load_model
from csrs_core.runtime.allocator import retain_freed_memory
from csrs_core.sampling.store import load_record, select_for_comparison

ROOT = Path(__file__).resolve().parents[1] / "checkpoints"
CASES = {"cifar10": ("seedwise:3", ["cohen"]), "ham10000": ("pairwise:1>0", ["cohen", "cs-macer"])}
EPS = (0.25, 0.5)


def decisions(table, eps) -> np.ndarray:
    """bool [N, len(eps)]: the deciding radius exceeds each ε (certified) or not."""
    return deciding_radius(table)[:, None] > np.asarray(eps)[None]


def shipped_certified(case: str, name: str, indices, cost: str, eps: float) -> tuple[np.ndarray, str]:
    """Which of `indices` the shipped record of `case/name` certifies at eps (its own n, Clopper–Pearson),
    and that record's precision."""
    checkpoint = ROOT / case / f"{name}.pt"
    chosen, _, _, _ = select_for_comparison([checkpoint])
    record = load_record(chosen[checkpoint][0].path)
    classes = record.meta["classes"]
    table = certify_from_counts(record.counts0, record.counts, record.labels, parse_cost(cost, len(classes), classes),
                                sigma=record.meta["sigma"])
    position = {int(i): p for p, i in enumerate(record.indices)}
    return deciding_radius(table)[[position[int(i)] for i in indices]] > eps, record.meta["precision"]


def bench_model(case: str, name: str, cost_spec: str, args, device: str = "auto") -> dict:
    """Sequential vs fixed-budget certification of one shipped model (see the module docstring); args holds
    examples, subset and cap."""
    model, meta = load_model(ROOT / case / f"{name}.pt")
    data = load_dataset(f"sample:{ROOT / case / 'test-sample.npz'}")
    chosen = select_examples(data.labels.numpy(), args.examples, None, 0)
    data = data.subset(chosen)
    cost = parse_cost(cost_spec, data.num_classes, data.classes)
    shipped, precision = shipped_certified(case, name, data.indices, cost_spec, EPS[0])
    smooth = SmoothedClassifier(model, num_classes=data.num_classes, sigma=meta["sigma"], precision=precision,
                                device=device)
    x, y, ids = data.images, data.labels.numpy(), data.indices
    t0 = time.perf_counter()
    seq = smooth.certify(x, y, cost, n0=100, n=args.cap, seed=0, indices=ids, sequential=True, eps=list(EPS))
    seq_s = time.perf_counter() - t0
    used = seq["n_used"].to_numpy()
    k = args.subset
    t0 = time.perf_counter()
    sub = smooth.certify(x[:k], y[:k], cost, n0=100, n=args.cap, seed=0, indices=ids[:k], sequential=True,
                         eps=list(EPS))
    sub_seq_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fixed = smooth.certify(x[:k], y[:k], cost, n0=100, n=args.cap, seed=0, indices=ids[:k])
    fixed_s = time.perf_counter() - t0
    d_seq, d_fixed = decisions(sub, EPS), decisions(fixed, EPS)
    r_seq, r_fixed = deciding_radius(sub), deciding_radius(fixed)
    differences = [{"index": int(ids[i]), "eps": EPS[j], "sequential": bool(d_seq[i, j]), "fixed": bool(d_fixed[i, j]),
                    "radius_sequential": float(r_seq[i]), "radius_fixed": float(r_fixed[i]),
                    "n_used": int(sub["n_used"].iloc[i])}
                   for i, j in zip(*np.nonzero(d_seq != d_fixed))]
    missed = int((shipped[:k] & ~d_seq[:, 0]).sum())
    return {"case": case, "checkpoint": name, "cost": cost_spec, "device": smooth.last_plan["device"],
            "precision": smooth.last_plan["precision"],
            "examples": len(used), "cap": args.cap, "mean_samples": float(used.mean()),
            "ratio_to_cap": args.cap / max(float(used.mean()), 1.0), "median_samples": float(np.median(used)),
            "max_samples": int(used.max()), "stopped_at_zero": int((used == 0).sum()),
            "certified_share": {str(e): float(v) for e, v in zip(EPS, decisions(seq, EPS).mean(axis=0))},
            "sequential_s": seq_s, "subset": k, "subset_mean_samples": float(sub["n_used"].mean()),
            "subset_sequential_s": sub_seq_s, "subset_fixed_s": fixed_s, "speedup": fixed_s / sub_seq_s,
            "same_decisions": int((d_seq == d_fixed).all(axis=1).sum()), "differences": differences,
            "shipped_certified_at_0.25": int(shipped[:k].sum()), "shipped_missed_at_0.25": missed}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--subset", type=int, default=20)
    parser.add_argument("--cap", type=int, default=100_000)
    parser.add_argument("--cases", default="cifar10,ham10000")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    retain_freed_memory()
    results = []
    for case in args.cases.split(","):
        cost, names = CASES[case]
        for name in names:
            r = bench_model(case, name, cost, args)
            results.append(r)
            print(f"{case}/{name} ({r['precision']}, {cost}): {r['examples']} images, mean {r['mean_samples']:,.0f} "
                  f"estimation samples per image (median {r['median_samples']:,.0f}, max {r['max_samples']:,}, "
                  f"{r['stopped_at_zero']} decided by their top class alone) = {r['ratio_to_cap']:.0f}× fewer than "
                  f"the cap {r['cap']:,}; certified at ε {EPS}: {r['certified_share']}", flush=True)
            print(f"  first {r['subset']}: sequential {r['subset_sequential_s']:.1f} s (mean "
                  f"{r['subset_mean_samples']:,.0f} samples), fixed n = {r['cap']:,} {r['subset_fixed_s']:.1f} s: "
                  f"{r['speedup']:.1f}× faster; same decisions at both ε for {r['same_decisions']} of {r['subset']}; "
                  f"shipped n = 1,000 record certifies {r['shipped_certified_at_0.25']} at 0.25, the sequential run "
                  f"misses {r['shipped_missed_at_0.25']} of them", flush=True)
            for d in r["differences"]:
                print(f"  differs: example {d['index']} at ε {d['eps']}: sequential {d['sequential']} (radius "
                      f"{d['radius_sequential']:.4f} after {d['n_used']:,} samples), fixed {d['fixed']} (radius "
                      f"{d['radius_fixed']:.4f})", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
