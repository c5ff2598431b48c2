"""One run that measures and verifies CSRS's CUDA paths on a GPU machine.

    PYTHONPATH=. python scripts/gpu_check.py OUTDIR              # on the GPU machine, <= 7 minutes
    PYTHONPATH=. python scripts/gpu_check.py --dry-run OUTDIR    # every step on the CPU, tiny sizes

Writes OUTDIR/gpu_check.log (readable: each step named, with timings) and OUTDIR/gpu_check.json
(machine-readable), both rewritten after every step, so a run cut short keeps what it measured.

Steps: 1 environment, 2 the CUDA tests (pytest), 3 bare forward of ResNet-110 and stage A,
4 fp32 vs the chosen precision and CUDA vs the stored CPU counts, 5 SmoothedClassifier on CUDA,
6 sequential certification against the fixed budget, 7 MACER / CS-MACER training step vs a bare
cross-entropy step, 8 a 2-rank torchrun certification.
A step that fails is recorded with its traceback and the next one runs. Every step has an estimate
and a cap: one that cannot get its estimate from what is left of the time budget is recorded as
skipped, and no step may eat the estimates of the steps after it beyond its own estimate.
Verdicts (ratios against goals, statistical agreement) are recorded as checks beside the numbers;
a failed check does not fail its step.

The steps live in scripts/gpu_check_steps/, one module each; they measure with the functions of
scripts/bench_certify.py, scripts/bench_train.py and scripts/bench_sequential.py."""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gpu_check_steps import (cuda_tests, decisions, distributed, environment,  # noqa: E402 (after sys.path)
                             sequential, smoothed_classifier, throughput, training)
from gpu_check_steps.framework import Check, run_step, summarize_run  # noqa: E402

STEPS = [environment.step_environment, cuda_tests.step_cuda_tests, throughput.step_throughput,
         decisions.step_decisions, smoothed_classifier.step_smoothed_classifier, sequential.step_sequential,
         training.step_training, distributed.step_distributed]


def parse_args(argv=None):
    """The command line; --steps must name known steps."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", help="folder for gpu_check.log and gpu_check.json")
    ap.add_argument("--device", default="cuda", help="cuda or cuda:N (default cuda; --dry-run uses cpu)")
    ap.add_argument("--dry-run", action="store_true", help="every step on the CPU at tiny sizes (< 80 s)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for all steps (default 380; dry run 70)")
    ap.add_argument("--steps", type=lambda v: v.split(","), default=None,
                    help=f"comma-separated subset of: {', '.join(s.name for s in STEPS)}")
    ap.add_argument("--checkpoint", default="checkpoints/cifar10/cohen.pt", help="trained model (repo-relative)")
    ap.add_argument("--sample", default="checkpoints/cifar10/test-sample.npz", help="its test sample")
    args = ap.parse_args(argv)
    unknown = set(args.steps or ()) - {s.name for s in STEPS}
    if unknown:
        ap.error(f"--steps: unknown step(s) {', '.join(sorted(unknown))}")
    return args


def main(argv=None) -> int:
    """Runs the selected steps in order, each keeping time for the ones after it; returns 0 (the
    outcome is in the log and the JSON report)."""
    args = parse_args(argv)
    ctx = Check(args)
    if ctx.dry:  # a code-path check on a shared CPU: one thread does not fight other jobs for cores
        import torch
        torch.set_num_threads(1)
    ctx.log(f"gpu_check {'DRY RUN (CPU, tiny sizes) ' if ctx.dry else ''}on {ctx.device_name}, "
            f"budget {ctx.budget:.0f} s, started {ctx.report['started']}", indent=False)
    try:
        for i, s in enumerate(STEPS, 1):
            reserve = sum(t.needs(ctx) for t in STEPS[i:] if not args.steps or t.name in args.steps)
            run_step(ctx, i, len(STEPS), s, reserve)
        summarize_run(ctx)
    finally:
        ctx.save()
        ctx.logfile.close()
        shutil.rmtree(ctx.tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
