"""Step 4: fp32 vs the other precisions on the same noise (bench_certify's decisions check), and
this device's counts vs the stored CPU counts, tested for agreement up to sampling error."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from gpu_check_steps.framework import ROOT, Check, StepFailed, free_memory, step

FAMILY_ALPHA = 0.001  # family-wise error of the agreement tests (Bonferroni)


def compare_votes(a, b, n_a: int, n_b: int, alpha: float = FAMILY_ALPHA, seed: int = 0) -> dict:
    """Do two count tables [N, m] come from the same per-example vote distributions?

    Per example and class, the two-proportion z statistic |p_a - p_b| / sqrt(p(1-p)(1/n_a + 1/n_b))
    (p: pooled share; a normal approximation, sound for n in the hundreds) against the Bonferroni
    bound z* = Phi^-1(1 - alpha / (2 N m)). A top class that differs is beyond sampling error only
    when the share of one of the two classes involved differs beyond z*. The mean total-variation
    distance is set against its distribution when both tables are drawn from the pooled shares
    (200 simulations)."""
    import numpy as np
    from scipy.stats import norm
    a, b = np.asarray(a, float), np.asarray(b, float)
    N, m = a.shape
    pa, pb, pooled = a / n_a, b / n_b, (a + b) / (n_a + n_b)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    z = np.divide(np.abs(pa - pb), se, out=np.zeros_like(se), where=se > 0)
    z_star = float(norm.isf(alpha / (2 * N * m)))
    top_a, top_b = a.argmax(1), b.argmax(1)
    rows = np.arange(N)
    differ = top_a != top_b
    beyond = differ & ((z[rows, top_a] > z_star) | (z[rows, top_b] > z_star))
    tv = 0.5 * np.abs(pa - pb).sum(1)
    rng = np.random.default_rng(seed)
    p = pooled / pooled.sum(1, keepdims=True)
    null = [0.5 * np.abs(rng.multinomial(n_a, p) / n_a - rng.multinomial(n_b, p) / n_b).sum(1).mean()
            for _ in range(200)]
    return {"examples": N, "classes": m, "z_star": z_star, "max_z": float(z.max()),
            "examples_outside_bound": int((z > z_star).any(1).sum()),
            "top_class_differs": int(differ.sum()), "top_class_differs_beyond_error": int(beyond.sum()),
            "identical_rows": int((a == b).all(1).sum()), "mean_tv": float(tv.mean()), "max_tv": float(tv.max()),
            "null_mean_tv": float(np.mean(null)), "null_mean_tv_q995": float(np.quantile(null, 0.995))}


def log_comparison(ctx: Check, label: str, c: dict) -> None:
    """Logs one compare_votes result on one line."""
    ctx.log(f"{label}: top class differs for {c['top_class_differs']} of {c['examples']} "
            f"({c['top_class_differs_beyond_error']} beyond sampling error); identical rows {c['identical_rows']}; "
            f"max z {c['max_z']:.2f} (bound z* {c['z_star']:.2f}, {c['examples_outside_bound']} examples outside); "
            f"mean TV {c['mean_tv']:.4f} (same-distribution simulation: mean {c['null_mean_tv']:.4f}, "
            f"99.5% {c['null_mean_tv_q995']:.4f})")


@step("decisions", "fp32 vs the chosen precision; this device's counts vs the stored CPU counts",
      estimate=(25, 6), cap=(90, 20))
def step_decisions(ctx: Check, res: dict) -> None:
    """On the shipped checkpoint and its test sample: how often the top class differs between fp32
    and the other precisions with the same noise, then a certification on this device compared
    with the stored CPU record (same examples, n0, n, seed, precision; other noise generator)."""
    import bench_certify
    import numpy as np

    from csrs_core.data import load_dataset
    from csrs_core.models.checkpoints import load_model
    from csrs_core.sampling.plan import PRECISIONS, choose_plan
    s, dev = ctx.sizes, ctx.device()
    ckpt, sample = ROOT / ctx.args.checkpoint, ROOT / ctx.args.sample
    model, meta = load_model(ckpt)
    m, sigma = len(meta["classes"]), meta["sigma"]
    data = load_dataset(f"sample:{sample}")
    part = data.subset(np.arange(s.decision_images))
    plan = choose_plan(model, dev, "auto", None, tuple(part.images.shape[1:]),
                       samples=s.decision_images * s.decision_copies)
    ctx.log(f"{ckpt.relative_to(ROOT)} ({meta['arch']}, sigma {sigma}) on {s.decision_images} images of "
            f"{sample.relative_to(ROOT)} x {s.decision_copies} noisy copies, same noise for every precision; "
            f"auto chose {plan.precision}, batch {plan.batch}")
    votes = bench_certify.precision_votes(plan.model, part, m, sigma, s.decision_copies, plan.batch, dev,
                                          PRECISIONS["cuda" if dev.type == "cuda" else "cpu"])
    res["chosen_precision"], res["precision_vs_fp32"] = plan.precision, {}
    for p, counts in votes.items():
        if p == "fp32":
            continue
        differ, tv = bench_certify.vote_difference(counts, votes["fp32"], s.decision_copies)
        res["precision_vs_fp32"][p] = {"top_class_differs": differ, "mean_tv": float(tv.mean()),
                                       "max_tv": float(tv.max())}
        ctx.log(f"fp32 vs {p}{' (chosen)' if p == plan.precision else ''}: top class differs for {differ} of "
                f"{s.decision_images}; mean total-variation distance {tv.mean():.4f} (max {tv.max():.4f})")
    if plan.precision != "fp32":
        chosen = res["precision_vs_fp32"][plan.precision]
        ctx.check(f"fp32 vs {plan.precision}: top class differs for at most 2% of examples",
                  chosen["top_class_differs"] <= 0.02 * s.decision_images,
                  f"{chosen['top_class_differs']} of {s.decision_images}, mean TV {chosen['mean_tv']:.4f}")
    del model, plan
    free_memory()
    _against_stored(ctx, res, dev, ckpt, data)


def _against_stored(ctx, res, dev, ckpt: Path, data) -> None:
    """counts_record on this device (a copy of the checkpoint, so nothing is written beside the
    shipped one) with the stored CPU record's settings, then compare_votes on the two and checks
    that they agree up to sampling error."""
    from csrs_core.certification.certificates import certify_from_counts
    from csrs_core.certification.cost import CostMatrix
    from csrs_core.certification.metrics import summarize
    from csrs_core.sampling.stage_a import counts_record
    from csrs_core.sampling.store import list_records, load_record
    s = ctx.sizes
    stored = [r for r in list_records(ckpt) if r.status == "valid" and r.meta.get("device_type") == "cpu"]
    if not stored:
        res["against_stored"] = "no valid CPU record beside the checkpoint"
        ctx.log("CUDA vs stored CPU counts: no valid CPU record beside the checkpoint; not compared")
        return
    info = max(stored, key=lambda r: (r.meta["n"], r.meta["num_examples"]))
    record = load_record(info.path)
    keep = slice(None) if s.cert_examples is None else slice(0, s.cert_examples)
    position = {int(i): p for p, i in enumerate(data.indices)}
    missing = [int(i) for i in record.indices[keep] if int(i) not in position]
    if missing:
        raise StepFailed(f"{len(missing)} examples of {info.path.name} are not in {ctx.args.sample}")
    part = data.subset([position[int(i)] for i in record.indices[keep]])
    if s.cert_examples is None and part.content_digest() != info.meta["content_sha256"]:
        raise StepFailed(f"the sample's images are not the ones {info.path.name} was made from")
    rm = record.meta
    precision = s.cert_precision or rm["precision"]
    n0, n = s.cert_n0_n or (rm["n0"], rm["n"])
    copy = ctx.tmp / "stored-check" / ckpt.name
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ckpt, copy)
    t = time.perf_counter()
    new = counts_record(copy, part, n0, n, seed=rm["seed"], device=str(dev), precision=precision)
    wall = time.perf_counter() - t
    ctx.log(f"certified {len(part)} examples x (n0 {n0} + n {n}) on {dev} at {precision} (stored record "
            f"{info.path.name}: {rm['device']}, {rm['precision']}, n0 {rm['n0']}, n {rm['n']}) in {wall:.1f} s")
    old0, old = record.counts0[keep], record.counts[keep]
    counts = compare_votes(old, new.counts, rm["n"], n)
    selection = compare_votes(old0, new.counts0, rm["n0"], n0)
    cost = CostMatrix.seedwise(len(rm["classes"]), [3])
    summaries = {name: summarize(certify_from_counts(c0, c, record.labels[keep], cost, sigma=rm["sigma"],
                                                     alpha=0.001), 0.25)
                 for name, (c0, c) in (("stored_cpu", (old0, old)), ("this_run", (new.counts0, new.counts)))}
    res["against_stored"] = {"record": info.path.name, "precision": precision, "seconds": round(wall, 2),
                             "counts": counts, "counts0": selection, "summary_seedwise3_eps025": summaries}
    log_comparison(ctx, f"counts (n = {n})", counts)
    log_comparison(ctx, f"counts0 (n0 = {n0})", selection)
    for name, sm in summaries.items():
        ctx.log(f"{name}: Acc {sm['acc']:.3f}, Rob_cs {sm['rob_cs']:.3f} (seedwise:3, eps 0.25)")
    ctx.log(f"test: per example and class, two-proportion z against z* = Phi^-1(1 - {FAMILY_ALPHA}/(2 N m)) "
            f"(Bonferroni, family-wise error {FAMILY_ALPHA}); a differing top class is beyond sampling error when "
            "either class's share differs beyond z*; TV: against 200 draws of both tables from the pooled shares")
    here = f"{dev.type.upper()} vs stored CPU counts"
    ctx.check(f"{here}: every class share within the two-proportion bound",
              counts["examples_outside_bound"] == 0, f"{counts['examples_outside_bound']} examples outside, "
              f"max z {counts['max_z']:.2f} vs z* {counts['z_star']:.2f}")
    ctx.check(f"{here}: same top class, up to sampling error", counts["top_class_differs_beyond_error"] == 0,
              f"{counts['top_class_differs']} differ, {counts['top_class_differs_beyond_error']} beyond sampling error")
    ctx.check(f"{here}: mean TV within the same-distribution simulation's 99.5% quantile",
              counts["mean_tv"] <= counts["null_mean_tv_q995"],
              f"{counts['mean_tv']:.4f} vs {counts['null_mean_tv_q995']:.4f}")
