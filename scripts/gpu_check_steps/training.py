"""Step 7: MACER / CS-MACER training steps against a bare cross-entropy step (bench_train)."""
from __future__ import annotations

from gpu_check_steps.framework import Check, free_memory, step


@step("training", "MACER / CS-MACER step vs bare cross-entropy step", estimate=(20, 2), cap=(60, 12))
def step_training(ctx: Check, res: dict) -> None:
    """bench_train's interleaved rounds of training steps (noise, forward, loss, backward, SGD step)
    with the losses as training calls them (parts as device tensors, cost matrix on the device),
    plus MACER as bench_train's command line calls it (parts as floats: a host synchronisation per
    step); checks each MACER / CS-MACER rate against the bare step's."""
    import bench_train

    from csrs_core.certification.cost import CostMatrix
    from csrs_core.training.losses import cost_tensor
    s, dev = ctx.sizes, ctx.device()
    cost = CostMatrix.seedwise(10, [3])
    losses = {**bench_train.step_losses(cost_tensor(cost, dev), as_tensors=True),
              "MACER, float parts": bench_train.step_losses(cost)["MACER"]}
    for arch in s.train_archs:
        model, opt, x, y = bench_train.setup(arch, 32, s.train_batch, dev)
        med = bench_train.median_rates(model, opt, x, y, s.train_k, losses, s.train_steps, s.train_rounds, dev,
                                       s.train_precision, warm=tuple(losses))
        ratios = {name: med[name] / med["bare CE"] for name in losses if name != "bare CE"}
        res[arch] = {"noisy_images_per_s": med, "ratio_to_bare_ce": ratios}
        ctx.log(f"{arch}, batch {s.train_batch} x k {s.train_k}, {s.train_precision}, {s.train_steps} steps x "
                f"{s.train_rounds} interleaved rounds (median):")
        for name, r in med.items():
            ratio = f"   ratio {ratios[name]:.3f}" if name in ratios else ""
            ctx.log(f"  {name:20s} {r:10.0f} noisy images/s{ratio}")
        for name in ("MACER", "CS-MACER"):
            ctx.check(f"{arch}: {name} step / bare CE step >= 0.85", ratios[name] >= 0.85, f"{ratios[name]:.3f}")
        del model, opt
        free_memory()
