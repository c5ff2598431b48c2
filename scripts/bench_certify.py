"""Benchmark stage A against the fastest bare forward this machine runs, and stage B; one run.

1. The limits: bare forward throughput (argmax included) of the model for every precision (fp32,
   bf16; fp16 too on GPUs) x eager / torch.compile x batch size, of the network as built (the
   standard limit) and of its BatchNorm-folded copy, which sampling runs (the strict limit: the
   fastest way this machine runs the same function).
2. Stage A (csrs_core.sampling.counts.sample_counts: per-example noise streams, noise added in fp32,
   counting) at the plan `--precision auto` chooses (csrs_core.sampling.plan), at n = 1,000 and n = 100
   per image. RATIO = stage A / fastest bare forward. Goal >= 0.9.
3. A simple per-image loop for comparison (the structure of Cohen et al.'s Smooth.certify, written
   here: per image, batches of noisy copies, forward, bincount), at the same precision and batch.
4. Decisions: with a trained checkpoint (default: the shipped CIFAR-10 Cohen model) on real test
   images (its shipped sample) and the same noise, how many examples' top class (argmax of n = 1,000
   counts) differs between fp32 and bf16, and the mean total-variation distance between the votes.
5. Stage B: median time of certify_from_counts + summarize on 10,000 examples x 10 classes with a
   fresh random cost matrix each time. Goal <= 20 ms.
6. The whole command (--whole-examples, --whole-n): `csrs certify` at its defaults (precision and
   batch auto) on the shipped sample, start-up, loading, tuning, compiling and sampling included, as
   images/s of its wall time, in --rounds rounds of: the first job with an empty cache; a later job
   planned from that cache; unless --whole-quiet-only, a first job with another CPU-bound process
   running until the plan is made (it measures under load). Each job's ratio is to both limits'
   configurations measured again just before and just after it (the mean of the two), so a machine
   that changes speed during the run (a shared host) moves both sides alike; the median over rounds
   is reported. Goals: >= 0.85 for 100 images x 2,100 samples, >= 0.9 for a job of 10 minutes or more.
Usage: python scripts/bench_certify.py [--arch resnet20] [--size 32] [--device auto] [--no-compile]
       [--whole-examples 100] [--whole-n 2000] [--rounds 2] [--whole-quiet-only] [--first-job-only]
       [--skip-parts]"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from csrs_core.certification.certificates import certify_from_counts
from csrs_core.certification.cost import CostMatrix
from csrs_core.certification.metrics import summarize
from csrs_core.data import load_dataset
from csrs_core.models.architectures import build_model
from csrs_core.models.checkpoints import load_model
from csrs_core.models.folding import fold_batchnorm
from csrs_core.runtime.allocator import retain_freed_memory
from csrs_core.runtime.device import autocast, pick_device
from csrs_core.sampling.counts import sample_counts
from csrs_core.sampling.plan import BATCHES, PRECISIONS, choose_plan, compile_model, forward_rate, machine_id


def stage_a(model, device, precision, batch, size, n, examples):
    images = torch.randint(0, 256, (examples, 3, size, size), dtype=torch.uint8)
    t = time.perf_counter()
    sample_counts(model, images, np.arange(examples), 10, 0.25, n0=0, n=n, batch=batch, device=device,
                  precision=precision)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return examples * n / (time.perf_counter() - t)


@torch.inference_mode()
def per_image_loop(model, device, precision, batch, size, n, examples):
    images = torch.rand(examples, 3, size, size)
    t = time.perf_counter()
    for x in images:
        x = x.to(device)
        counts = torch.zeros(10, dtype=torch.long, device=device)
        remaining = n
        while remaining:
            b = min(batch, remaining)
            noisy = x.repeat(b, 1, 1, 1) + 0.25 * torch.randn(b, *x.shape, device=device)
            with autocast(device, precision):
                pred = model(noisy.contiguous(memory_format=torch.channels_last)).argmax(1)
            counts += torch.bincount(pred, minlength=10)
            remaining -= b
        counts.cpu()
    return examples * n / (time.perf_counter() - t)


def precision_votes(model, data, num_classes: int, sigma: float, n: int, batch: int, device, precisions) -> dict:
    """{precision: vote counts [N, num_classes]} of n noisy copies of each image of `data` (an
    ImageSet), the same noise at every precision."""
    return {p: sample_counts(model, data.images, data.indices, num_classes, sigma, 0, n, batch, device=device,
                             precision=p)[1] for p in precisions}


def vote_difference(a, b, n: int) -> tuple[int, np.ndarray]:
    """(examples whose top class differs between two vote tables [N, m] of n votes per row, each
    example's total-variation distance between the two rows' vote shares)."""
    return int((a.argmax(1) != b.argmax(1)).sum()), np.abs(a - b).sum(1) / 2 / n


def stage_b(rounds=25):
    rng = np.random.default_rng(0)
    N, m, n = 10_000, 10, 10_000
    p = rng.dirichlet(np.full(m, 0.2), size=N)
    counts = np.stack([rng.multinomial(n, q) for q in p])
    counts0 = np.stack([rng.multinomial(100, q) for q in p])
    labels = rng.integers(0, m, N)
    times = []
    for _ in range(rounds):
        matrix = (rng.random((m, m)) < 0.3).astype(int)
        np.fill_diagonal(matrix, 0)
        t = time.perf_counter()
        table = certify_from_counts(counts0, counts, labels, CostMatrix(matrix), sigma=0.25, alpha=0.001)
        summarize(table, 0.25)
        times.append(time.perf_counter() - t)
    return times[0], statistics.median(times[1:])


def whole_command(checkpoint: str, sample: str, examples: int, n: int, cache: Path, load: bool) -> tuple[float, dict]:
    """(images per second of the wall time, the plan event) of `csrs certify` at its defaults on a fresh
    copy of `checkpoint`, with the tuning cache `cache`; with `load`, a CPU-bound process runs until
    the plan is made."""
    with tempfile.TemporaryDirectory() as tmp:
        copy, progress = Path(tmp) / "model.pt", Path(tmp) / "progress.jsonl"
        shutil.copy(checkpoint, copy)
        env = dict(os.environ, CSRS_CACHE=str(cache))
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load else None
        t = time.perf_counter()
        job = subprocess.Popen([sys.executable, "-m", "csrs_core", "certify", "--checkpoint", str(copy), "--dataset",
                                f"sample:{sample}", "--num-examples", str(examples), "--n", str(n), "--quiet",
                                "--progress", str(progress)], env=env, stdout=subprocess.DEVNULL)
        plan = {}
        while job.poll() is None:
            time.sleep(0.05)
            if not plan and progress.exists():
                events = [json.loads(line) for line in progress.read_text().splitlines() if line.endswith("}")]
                plan = next((e for e in events if e["event"] == "plan" and "precision" in e), {})
                if plan and hog is not None:
                    hog.kill()
        wall = time.perf_counter() - t
        if hog is not None:
            hog.kill()
        if job.returncode:
            raise SystemExit(f"csrs certify failed with exit code {job.returncode}")
        if not plan:
            events = [json.loads(line) for line in progress.read_text().splitlines()]
            plan = next((e for e in events if e["event"] == "plan" and "precision" in e), {})
    return examples * (100 + n) / wall, plan


def compiled_rate(compiled, device, precision: str, batch: int, shape, seconds: float = 2.0) -> tuple[float, float]:
    """(seconds of the first calls, in which the compiler runs and CUDA graphs are recorded; images/s
    of `compiled` measured for `seconds` after them) at this precision and batch."""
    t = time.perf_counter()
    forward_rate(compiled, device, precision, batch, shape, seconds=0.1)  # compile outside the timing
    return time.perf_counter() - t, forward_rate(compiled, device, precision, batch, shape, seconds=seconds)


def measure_limits(runnables: dict, device, kind: str, shape, compile_too: bool, batches: tuple | None = None,
                   seconds: float = 2.0) -> dict:
    """{(variant, runtime, precision, batch): images/s}: every precision x batch (BATCHES[kind] unless
    `batches`) eagerly, then each precision compiled at its best eager batch, for each variant ('as
    built', 'folded'), each measured for `seconds`; the compiled module joins `runnables[variant]`."""
    limit = {}
    for variant, modules in runnables.items():
        for p in PRECISIONS[kind]:
            for b in batches or BATCHES[kind]:
                limit[(variant, "eager", p, b)] = forward_rate(modules["eager"], device, p, b, shape, seconds=seconds)
        if compile_too:
            compiled = modules["compiled"] = compile_model(modules["eager"], device)
            for p in PRECISIONS[kind]:
                b = max((k for k in limit if k[:3] == (variant, "eager", p)), key=limit.get)[3]
                limit[(variant, "compiled", p, b)] = compiled_rate(compiled, device, p, b, shape, seconds)[1]
    return limit


def described(config: tuple) -> str:
    """'folded compiled bf16 batch 128' for a limit configuration."""
    variant, runtime, precision, batch = config
    return f"{variant} {runtime} {precision} batch {batch}"


def rate_of(config: tuple, runnables: dict, device, shape, seconds: float = 4.0) -> float:
    """Images/s of one limit configuration now."""
    variant, runtime, precision, batch = config
    return forward_rate(runnables[variant][runtime], device, precision, batch, shape, seconds=seconds)


def whole_rounds(a, runnables: dict, device, shape, references: dict) -> None:
    """The whole command in rounds, each job between two measurements of each reference configuration."""
    scenarios = ["first job, empty cache"] + ([] if a.first_job_only else ["later job, cached plan"])
    scenarios += [] if a.whole_quiet_only else ["first job, another CPU-bound process until the plan is made"]
    ratios = {(s, r): [] for s in scenarios for r in references}
    for round_ in range(a.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            for scenario in scenarios:
                cache = Path(tmp) / ("cache-load" if "CPU-bound" in scenario else "cache")
                before = {r: rate_of(c, runnables, device, shape) for r, c in references.items()}
                rate, plan = whole_command(a.checkpoint, a.sample, a.whole_examples, a.whole_n, cache,
                                           load="CPU-bound" in scenario)
                after = {r: rate_of(c, runnables, device, shape) for r, c in references.items()}
                line = [(f"round {round_ + 1}, {scenario}: {rate:.0f} images/s (plan {plan.get('precision')}, batch "
                         f"{plan.get('batch')}, compiled {plan.get('compiled')}, folded {plan.get('batchnorm_folded')}, "
                         f"cached {plan.get('cached')})")]
                for r, config in references.items():
                    limit = (before[r] + after[r]) / 2
                    ratios[(scenario, r)].append(rate / limit)
                    line.append(f"{r} ({described(config)}: {before[r]:.0f} before, {after[r]:.0f} after) {rate / limit:.3f}")
                print("; ".join(line), flush=True)
    for (scenario, r), values in ratios.items():
        print(f"RATIO whole command, {a.whole_examples} images x {100 + a.whole_n} samples, {scenario} / {r} = "
              f"{statistics.median(values):.3f} (median of {', '.join(f'{v:.3f}' for v in values)})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="resnet20")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-compile", action="store_true", help="leave torch.compile out of the limit")
    ap.add_argument("--examples", type=int, default=None, help="images per stage-A measurement")
    ap.add_argument("--checkpoint", default="checkpoints/cifar10/cohen.pt", help="trained model for the decisions check")
    ap.add_argument("--sample", default="checkpoints/cifar10/test-sample.npz", help="its test images")
    ap.add_argument("--decisions", type=int, default=100, help="images in the decisions check")
    ap.add_argument("--whole-examples", type=int, default=100, help="images for the whole-command check")
    ap.add_argument("--whole-n", type=int, default=2000, help="n for the whole-command check (n0 = 100)")
    ap.add_argument("--skip-parts", action="store_true", help="only the limit and the whole command")
    ap.add_argument("--whole-quiet-only", action="store_true", help="leave out the whole command under load")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of the whole-command jobs")
    ap.add_argument("--first-job-only", action="store_true", help="leave out the later job planned from the cache")
    a = ap.parse_args()
    retain_freed_memory()  # as `csrs` does: the limit is measured with the allocator the jobs run with
    device = pick_device(a.device)
    kind = "cuda" if device.type == "cuda" else "cpu"
    model = build_model(a.arch, 10, [0.5] * 3, [0.25] * 3).to(device).eval().to(memory_format=torch.channels_last)
    shape = (3, a.size, a.size)
    folded, _ = fold_batchnorm(model, shape)
    runnables = {"as built": {"eager": model}, "folded": {"eager": folded.to(memory_format=torch.channels_last)}}
    print(f"{machine_id(device)}; {a.arch} at {a.size}x{a.size}")

    limit = measure_limits(runnables, device, kind, shape, compile_too=not a.no_compile)
    for k, v in sorted(limit.items(), key=lambda kv: -kv[1]):
        print(f"  bare forward {described(k):38s} {v:10.0f} images/s")
    as_built = max((k for k in limit if k[0] == "as built"), key=limit.get)
    references = {"standard limit (network as built)": as_built, "strict limit (folded too)": max(limit, key=limit.get)}
    whole_rounds(a, runnables, device, shape, references)
    if a.skip_parts:
        return

    plan = choose_plan(model, device, "auto", None, shape, samples=10**9, remeasure=True)
    runnable = plan.runnable(device)
    print(f"--precision auto chose {plan.precision}, batch {plan.batch}, "
          f"{'compiled' if plan.compiled else 'eager'}")
    examples = a.examples or (64 if kind == "cpu" else 512)
    for n in (1000, 100):
        count = max(examples, 2 * plan.batch // n + 1) if n == 100 else examples // 4
        stage_a(runnable, device, plan.precision, plan.batch, a.size, n, 2)  # warm-up
        rates = [stage_a(runnable, device, plan.precision, plan.batch, a.size, n, count) for _ in range(2)]
        loop = per_image_loop(plan.model, device, plan.precision, min(plan.batch, n), a.size, n, max(count // 4, 2))
        r = max(rates)
        print(f"n = {n:5d}: stage A {r:10.0f} images/s; per-image loop {loop:10.0f} images/s")
        for name, config in references.items():
            print(f"RATIO stage A / {name} ({described(config)}: {limit[config]:.0f}) at n = {n} = {r / limit[config]:.3f}"
                  "   (goal >= 0.9)")
    trained, meta = load_model(a.checkpoint)
    data = load_dataset(f"sample:{a.sample}").subset(np.arange(a.decisions))
    votes = precision_votes(trained, data, len(meta["classes"]), meta["sigma"], 1000, 128, device, ("fp32", "bf16"))
    differ, tv = vote_difference(votes["fp32"], votes["bf16"], 1000)
    print(f"fp32 vs bf16, {a.checkpoint} on {a.decisions} test images x 1,000 noisy copies (same noise): top class "
          f"differs for {differ} of {a.decisions}; mean total-variation distance between vote shares {tv.mean():.4f}")
    cold, warm = stage_b()
    print(f"stage B, 10,000 examples x 10 classes, fresh random cost matrix each time: first call (cold bound "
          f"tables) {cold * 1000:.1f} ms; median of the next 24 = {warm * 1000:.1f} ms   (goal <= 20 ms)")


if __name__ == "__main__":
    main()
