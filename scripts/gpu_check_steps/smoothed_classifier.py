"""Step 5: csrs_core.SmoothedClassifier on this device, against stage A and certify_from_counts."""
from __future__ import annotations

import time

from gpu_check_steps.framework import ROOT, Check, step


@step("smoothed_classifier", "csrs_core.SmoothedClassifier on this device", estimate=(8, 4), cap=(45, 12))
def step_smoothed_classifier(ctx: Check, res: dict) -> None:
    """docs/design.md section 5's API on the shipped model: sample (timed), then checks: counts' shapes
    and sums, the same counts for the same seed, the same counts as stage A's sample_counts at the
    plan it ran, certify == certify_from_counts of those counts, predict in {-1, 0..m-1}."""
    import numpy as np
    import torch

    from csrs_core import SmoothedClassifier
    from csrs_core.certification.certificates import certify_from_counts
    from csrs_core.certification.cost import CostMatrix
    from csrs_core.data import load_dataset
    from csrs_core.models.checkpoints import load_model
    from csrs_core.sampling.counts import sample_counts
    s, dev = ctx.sizes, ctx.device()
    model, meta = load_model(ROOT / ctx.args.checkpoint)
    m, sigma = len(meta["classes"]), meta["sigma"]
    data = load_dataset(f"sample:{ROOT / ctx.args.sample}").subset(np.arange(s.smooth_images))
    smooth = SmoothedClassifier(model, num_classes=m, sigma=sigma, device=str(dev))
    ctx.log(f"{smooth!r}")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t = time.perf_counter()
    c0, c = smooth.sample(data.images, n0=100, n=s.smooth_n, seed=0)
    wall = time.perf_counter() - t  # the counts are on the host: the device's work is done
    plan = smooth.last_plan
    rate = s.smooth_images * (100 + s.smooth_n) / wall
    res.update(images=s.smooth_images, n=s.smooth_n, sample_seconds=round(wall, 2), images_per_s=rate, plan=plan)
    if dev.type == "cuda":
        res["peak_cuda_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
    ctx.log(f"sample: {s.smooth_images} images x (100 + {s.smooth_n}) in {wall:.2f} s = {rate:.0f} images/s"
            + (f" (stage A: {ctx.shared['stage_a_rate']:.0f}, another model)" if "stage_a_rate" in ctx.shared else "")
            + (f"; peak CUDA memory {res['peak_cuda_mib']:.0f} MiB" if "peak_cuda_mib" in res else "")
            + f"; plan {plan}")
    c0, c = np.asarray(c0), np.asarray(c)
    ctx.check("sample: shapes [N, m] and sums n0, n", c0.shape == c.shape == (s.smooth_images, m)
              and (c0.sum(1) == 100).all() and (c.sum(1) == s.smooth_n).all(), f"shapes {c0.shape}, {c.shape}")
    again0, again = smooth.sample(data.images, n0=100, n=s.smooth_n, seed=0)
    ctx.check("sample: same seed, same counts", np.array_equal(c, np.asarray(again))
              and np.array_equal(c0, np.asarray(again0)), "two calls with seed 0")
    ref0, ref = sample_counts(model, data.images, np.arange(s.smooth_images), m, sigma, 100, s.smooth_n,
                              plan["batch"], 0, dev, plan["precision"])
    ctx.check("sample == stage A's sample_counts at the same plan", np.array_equal(c, ref)
              and np.array_equal(c0, ref0), f"{int((c == ref).all(1).sum())} of {len(c)} rows identical")
    cost = CostMatrix.seedwise(m, [3])
    table = smooth.certify(data.images, data.labels.numpy(), cost, n0=100, n=s.smooth_n, alpha=0.001, seed=0)
    expected = certify_from_counts(c0, c, data.labels.numpy(), cost, sigma=sigma, alpha=0.001)
    cols = ["label", "pred_std", "r1", "sensitive", "r2", "cost_robust_radius", "pred"]
    same = all(col in table and _same_column(table[col], expected[col]) for col in cols)
    ctx.check("certify == certify_from_counts(sample(...)) for the same seed", same,
              f"columns missing: {', '.join(c for c in cols if c not in table) or 'none'}")
    pred = np.asarray(smooth.predict(data.images, n=min(1000, s.smooth_n), alpha=0.001, seed=0))
    res["predict"] = pred.tolist()
    ctx.check("predict: one class or -1 per image", pred.shape == (s.smooth_images,)
              and bool(((pred >= -1) & (pred < m)).all()), f"abstained on {int((pred == -1).sum())} of {len(pred)}")


def _same_column(a, b) -> bool:
    """Whether two table columns hold equal values."""
    import numpy as np
    try:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        return True
    except AssertionError:
        return False

