"""Step 3: the fastest bare forward (bench_certify's limit) and stage A against it."""
from __future__ import annotations

import time

from gpu_check_steps.framework import Check, free_memory, step

BIG_JOB = (10_000, 100, 100_000)  # images, n0, n: the certification the extrapolation is for
SHAPE = (3, 32, 32)


def random_checkpoint(path, arch: str, num_classes: int = 10):
    """An untrained `arch` saved as a CSRS checkpoint at `path` (what counts_record takes); returns `path`."""
    from csrs_core.models.architectures import build_model
    from csrs_core.models.checkpoints import save_checkpoint
    model = build_model(arch, num_classes, [0.5] * 3, [0.25] * 3)
    save_checkpoint(path, model, {"arch": arch, "classes": [f"c{i}" for i in range(num_classes)],
                                  "dataset": "gpu-check-random", "sigma": 0.25, "method": "untrained",
                                  "mean": [0.5] * 3, "std": [0.25] * 3})
    return path


def random_images(count: int, first_index: int, num_classes: int = 10):
    """An ImageSet of random uint8 32x32 images (indices from first_index, so two sets never share a key)."""
    import numpy as np
    import torch

    from csrs_core.data import ImageSet
    gen = torch.Generator().manual_seed(first_index)
    images = torch.randint(0, 256, (count, *SHAPE), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, num_classes, (count,), generator=gen)
    return ImageSet("gpu-check-random", "test", images, labels, [f"c{i}" for i in range(num_classes)],
                    indices=np.arange(first_index, first_index + count))


@step("throughput", "bare forward (ResNet-110 on the GPU) and stage A (counts_record, precision auto)",
      estimate=(90, 6), cap=(230, 20))
def step_throughput(ctx: Check, res: dict) -> None:
    """The limit (fastest bare forward over precision x eager/compiled x batch, measured by
    bench_certify), then stage A through csrs_core.sampling.stage_a.counts_record at precision
    auto, its ratio to the limit, and the wall time it implies for BIG_JOB."""
    import bench_certify
    import torch

    from csrs_core.models.architectures import build_model
    from csrs_core.sampling.plan import PRECISIONS
    s, dev = ctx.sizes, ctx.device()
    kind = "cuda" if dev.type == "cuda" else "cpu"
    precisions = PRECISIONS[kind]
    model = build_model(s.arch, 10, [0.5] * 3, [0.25] * 3).to(dev).eval().to(memory_format=torch.channels_last)
    ctx.log(f"{s.arch}, 10 classes, 32x32, channels-last; precisions {', '.join(precisions)}; "
            f"batches {', '.join(map(str, s.batches))}; {s.bare_seconds:.2f} s per measurement after a warm-up call")
    limits = bench_certify.measure_limits({"as built": {"eager": model}}, dev, kind, SHAPE, compile_too=False,
                                          batches=s.batches, seconds=s.bare_seconds)
    rates = {f"eager/{p}/{b}": r for (_, _, p, b), r in limits.items()}
    for (_, _, p, b), r in limits.items():
        ctx.log(f"bare forward eager    {p:4s} batch {b:5d}: {r:10.0f} images/s")
    eager_best = max(rates, key=rates.get)
    stage_a_reserve = s.stage_a_seconds * 2 + (20 if kind == "cuda" else 2)  # warm-up, plan, timed run
    res["bare_images_per_s"] = rates  # the same dict: compiled and plan rates join it below
    res["compile_seconds"] = _compiled_rates(ctx, model, dev, precisions, rates, stage_a_reserve)
    fastest = max(rates, key=rates.get)
    res["fastest"] = {"setting": fastest, "images_per_s": rates[fastest]}
    ctx.log(f"FASTEST bare forward: {fastest} = {rates[fastest]:.0f} images/s (best eager: {eager_best} = "
            f"{rates[eager_best]:.0f})")
    del model
    free_memory()
    _stage_a(ctx, res, dev, rates, eager_best, fastest)


def _compiled_rates(ctx, model, dev, precisions, rates, reserve) -> dict:
    """Adds 'compiled/p/b' rates (each precision at its best eager batch, best precisions first,
    measured by bench_certify.compiled_rate) while the step's time allows; returns each compile's
    seconds (or why there is none)."""
    import bench_certify
    import torch

    from csrs_core.sampling.plan import compile_model
    s = ctx.sizes
    order = sorted(precisions, key=lambda p: -max(v for k, v in rates.items() if k.split("/")[1] == p))
    order = order[:s.compile_precisions]
    seconds, guess = {}, 60.0 if dev.type == "cuda" else 10.0
    label = ("CUDA graphs (torch.compile mode=reduce-overhead)" if s.compile_backend == "project" and
             dev.type == "cuda" else f"torch.compile ({s.compile_backend} backend)")
    for p in order:
        if ctx.left() - reserve < guess:
            ctx.log(f"compiled {p}: skipped, {ctx.left():.0f} s left in this step and ~{guess:.0f} s needed "
                    f"(stage A keeps {reserve:.0f} s)")
            seconds[p] = None
            continue
        b = int(max((k for k in rates if k.startswith(f"eager/{p}/")), key=rates.get).split("/")[2])
        torch._dynamo.reset()
        compiled = (compile_model(model, dev) if s.compile_backend == "project"
                    else torch.compile(model, backend="eager", dynamic=False))
        t = time.monotonic()
        key = f"compiled/{p}/{b}"
        try:
            first, rates[key] = bench_certify.compiled_rate(compiled, dev, p, b, SHAPE, s.bare_seconds)
        except Exception as exc:  # no compiler here: recorded, and eager stays the limit
            seconds[p] = f"failed after {time.monotonic() - t:.0f} s: {exc.__class__.__name__}: {str(exc)[:300]}"
            ctx.log(f"compiled {p}: {seconds[p]}")
            break
        seconds[p] = round(first, 1)
        guess = max(seconds[p] * 1.2, 5.0)
        ctx.log(f"bare forward compiled {p:4s} batch {b:5d}: {rates[key]:10.0f} images/s   "
                f"[{label}; compile + warm-up {seconds[p]:.1f} s]")
        del compiled
    torch._dynamo.reset()
    return seconds


def _stage_a(ctx, res, dev, rates, eager_best, fastest) -> None:
    """counts_record on random images with a random-weight checkpoint of the same architecture:
    a warm-up job large enough to be measured (the plan is cached), then the timed job; checks
    its ratio to the fastest bare forward."""
    import torch

    from csrs_core.models.checkpoints import load_model
    from csrs_core.sampling.plan import MEASURE_WORTH_SAMPLES, forward_rate
    from csrs_core.sampling.stage_a import counts_record
    s = ctx.sizes
    per_image = s.stage_a_n0 + s.stage_a_n
    ckpt = random_checkpoint(ctx.tmp / f"{s.arch}-random.pt", s.arch)
    warm = max(2, -(-MEASURE_WORTH_SAMPLES // per_image)) if not ctx.dry else 2
    t = time.monotonic()
    counts_record(ckpt, random_images(warm, 10**6), s.stage_a_n0, s.stage_a_n, device=str(dev), precision="auto")
    res["warmup_seconds"] = round(time.monotonic() - t, 1)
    ctx.log(f"stage A warm-up: {warm} images x {per_image} (measures and caches the auto plan) "
            f"{res['warmup_seconds']:.1f} s")
    expected = rates[eager_best]  # a job this size runs eager (compiling pays only beyond COMPILE_WORTH_S)
    fits = max(ctx.left() - 5, 1) * 0.6 * expected / per_image
    count = int(min(max(s.stage_a_seconds * expected / per_image, s.stage_a_images[0]), s.stage_a_images[1], fits))
    count = max(count, 1)
    data = random_images(count, 0)
    t = time.perf_counter()
    record = counts_record(ckpt, data, s.stage_a_n0, s.stage_a_n, device=str(dev), precision="auto")
    wall = time.perf_counter() - t  # the counts are on the host: the device's work is done
    rate = count * per_image / wall
    meta = record.meta
    plan = f"{meta['runtime']}/{meta['precision']}/{meta['batch']}"
    if plan not in rates:  # the plan's batch may lie outside the sweep
        model = load_model(ckpt)[0].to(dev).eval().to(memory_format=torch.channels_last)
        rates[plan] = forward_rate(model, dev, meta["precision"], meta["batch"], SHAPE, seconds=s.bare_seconds)
    ratio, own = rate / rates[fastest], rate / rates[plan]
    samples = BIG_JOB[0] * (BIG_JOB[1] + BIG_JOB[2])
    best_compiled = max((v for k, v in rates.items() if k.startswith("compiled/")), default=None)
    res["stage_a"] = {"images": count, "n0": s.stage_a_n0, "n": s.stage_a_n, "seconds": round(wall, 2),
                      "images_per_s": rate, "plan": plan, "bare_at_plan": rates[plan],
                      "ratio_to_fastest": ratio, "ratio_to_bare_at_plan": own,
                      "big_job": dict(zip(("images", "n0", "n"), BIG_JOB)),
                      "big_job_hours_at_this_rate": samples / rate / 3600,
                      "big_job_hours_compiled_projection":
                          samples / (best_compiled * own) / 3600 if best_compiled else None}
    ctx.shared["stage_a_rate"] = rate
    ctx.log(f"stage A (counts_record, precision auto -> {plan}): {count} images x (n0 {s.stage_a_n0} + n "
            f"{s.stage_a_n}) in {wall:.1f} s = {rate:.0f} images/s")
    ctx.log(f"RATIO stage A / fastest bare forward ({fastest}) = {ratio:.3f}; / bare forward at its own plan "
            f"({plan}, {rates[plan]:.0f}/s) = {own:.3f}")
    a = res["stage_a"]
    ctx.log(f"extrapolated: {BIG_JOB[0]:,} images x (n0 {BIG_JOB[1]} + n {BIG_JOB[2]:,}) = {samples:.3g} samples: "
            f"{a['big_job_hours_at_this_rate']:.2f} h at this rate"
            + (f"; {a['big_job_hours_compiled_projection']:.2f} h projected compiled (such a job compiles: "
               f"fastest compiled bare forward x the overhead ratio {own:.3f})" if best_compiled else ""))
    ctx.check("stage A / fastest bare forward >= 0.9", ratio >= 0.9, f"{ratio:.3f} ({plan} vs {fastest})")
