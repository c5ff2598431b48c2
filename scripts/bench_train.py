"""Benchmark training: MACER / CS-MACER steps (k noisy copies) vs a bare forward+backward with plain
cross-entropy on the same number of noisy images, measured interleaved in the same run. Goal >= 0.85.
Usage: python scripts/bench_train.py [--arch resnet20] [--batch 16] [--k 16]"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from csrs_core.certification.cost import CostMatrix
from csrs_core.models.architectures import build_model
from csrs_core.runtime.device import autocast, pick_device
from csrs_core.training.losses import cs_macer_loss, macer_loss


def setup(arch: str, size: int, batch: int, device) -> tuple:
    """(model, SGD optimiser, images [batch, 3, size, size], labels): an untrained 10-class `arch`
    in training mode, channels-last on `device`, and a random batch there."""
    model = build_model(arch, 10, [0.5] * 3, [0.25] * 3).to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    return model, opt, x, y


def step_losses(cost, as_tensors: bool = False) -> dict:
    """{name: loss(logits [B k, m], labels [B], k)}: plain cross-entropy on every noisy copy, MACER
    and CS-MACER with `cost` (a CostMatrix, or cost_tensor(cost) on the device as training passes
    it). as_tensors: the losses report their parts as device tensors, as training calls them; else
    as floats (a host synchronisation per step)."""
    return {
        "bare CE": lambda z, y, k: F.cross_entropy(z.float(), y.repeat_interleave(k)),
        "MACER": lambda z, y, k: macer_loss(z.view(len(y), k, -1), y, sigma=0.25, as_tensors=as_tensors)[0],
        "CS-MACER": lambda z, y, k: cs_macer_loss(z.view(len(y), k, -1), y, cost, sigma=0.25,
                                                  as_tensors=as_tensors)[0],
    }


def run(model, opt, x, y, k, loss_fn, steps, device, precision):
    """Noisy images/s of `steps` training steps (k noisy copies of each image, forward at
    `precision`, loss_fn, backward, SGD step), timed to the last step's end on the device."""
    t = time.perf_counter()
    for _ in range(steps):
        noisy = (x.repeat_interleave(k, 0) + 0.25 * torch.randn(len(x) * k, *x.shape[1:], device=device)
                 ).contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(noisy)
        loss = loss_fn(logits, y, k)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * len(x) * k / (time.perf_counter() - t)


def median_rates(model, opt, x, y, k, losses: dict, steps, rounds, device, precision, warm=("bare CE",)) -> dict:
    """{loss name: median over `rounds` of `run`'s rate for `steps` steps}, the losses taking turns
    within each round, after one warm-up step with each loss named in `warm`."""
    for name in warm:
        run(model, opt, x, y, k, losses[name], 1, device, precision)
    rates = {name: [] for name in losses}
    for _ in range(rounds):
        for name, fn in losses.items():
            rates[name].append(run(model, opt, x, y, k, fn, steps, device, precision))
    return {name: statistics.median(r) for name, r in rates.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="resnet20")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="fp32")
    a = ap.parse_args()
    device = pick_device(a.device)
    model, opt, x, y = setup(a.arch, a.size, a.batch, device)
    losses = step_losses(CostMatrix.seedwise(10, [3]))
    med = median_rates(model, opt, x, y, a.k, losses, a.steps, a.rounds, device, a.precision)
    print(f"device {device}, {a.arch}, {a.size}x{a.size}, batch {a.batch} x k {a.k}, {a.precision}, "
          f"threads {torch.get_num_threads()}")
    for name, r in med.items():
        print(f"{name:9s} {r:9.1f} noisy images/s")
    for name in ("MACER", "CS-MACER"):
        print(f"RATIO {name} / bare CE = {med[name] / med['bare CE']:.3f}   (goal >= 0.85)")


if __name__ == "__main__":
    main()
