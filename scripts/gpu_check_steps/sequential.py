"""Step 6: sequential certification on this device (bench_sequential): samples per image against the cap,
wall time against a fixed-budget run of the same images, and the decisions compared."""
from __future__ import annotations

from types import SimpleNamespace

from gpu_check_steps.framework import Check, step


@step("sequential", "sequential certification vs the fixed budget", estimate=(45, 15), cap=(120, 40))
def step_sequential(ctx: Check, res: dict) -> None:
    """bench_sequential on the shipped CIFAR-10 Cohen model at ε 0.25, 0.5: 100 images with a cap of
    100,000 (dry run: 4 images, cap 2,000), then the first 20 (2) sequentially and at the fixed cap;
    checks ≥ 20× fewer samples than the cap and at most one decision in 20 differing."""
    import bench_sequential
    sizes = SimpleNamespace(examples=4, subset=2, cap=2_000) if ctx.dry else \
        SimpleNamespace(examples=100, subset=20, cap=100_000)
    r = bench_sequential.bench_model("cifar10", "cohen", "seedwise:3", sizes, device=str(ctx.device()))
    res.update(r)
    ctx.log(f"{r['examples']} images on {r['device']} ({r['precision']}): mean {r['mean_samples']:,.0f} estimation "
            f"samples per image, {r['ratio_to_cap']:.1f}x fewer than the cap {r['cap']:,}; first {r['subset']}: "
            f"sequential {r['subset_sequential_s']:.1f} s, fixed {r['subset_fixed_s']:.1f} s "
            f"({r['speedup']:.1f}x), same decisions for {r['same_decisions']} of {r['subset']}")
    if not ctx.dry:
        ctx.check("sequential: >= 20x fewer samples than the cap", r["ratio_to_cap"] >= 20, f"{r['ratio_to_cap']:.1f}x")
        ctx.check("sequential: >= 19 of 20 decisions as the fixed run", r["same_decisions"] >= r["subset"] - 1,
                  f"{r['same_decisions']} of {r['subset']}")
