"""Training smoothed classifiers (Gaussian, Cohen-R, MACER, CS-MACER), resumable and data-parallel.

Every epoch ends with an atomic checkpoint holding the optimizer state; each epoch's data order,
augmentation and noise come from a generator seeded by (seed, epoch), so a killed run restarted
with the same command resumes from its last checkpoint and ends where an uninterrupted run would."""
from __future__ import annotations

import dataclasses
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from csrs_core import CSRSError
from csrs_core.checkpoints import load_model, read_checkpoint, save_checkpoint
from csrs_core.cost import CostMatrix, parse_cost
from csrs_core.data import load_dataset
from csrs_core.device import autocast, distributed_setup, set_threads
from csrs_core.losses import cohen_r_loss, cs_macer_loss, gaussian_loss, macer_loss
from csrs_core.models import build_model
from csrs_core.progress import ProgressLog

METHODS = ("gaussian", "cohen-r", "macer", "cs-macer")


class TrainingError(CSRSError):
    """Training stopped; the message says why (also written to the progress file)."""


@dataclass
class TrainConfig:
    method: str
    dataset: str
    out: str
    arch: str = "resnet20"
    sigma: float = 0.25
    epochs: int = 10
    batch: int = 64
    lr: float = 0.1
    schedule: str = "cosine"          # cosine | step (x0.1 every lr_step epochs)
    lr_step: int = 30
    cost: str = "none"
    weight: float = 1.2
    gauss_num: int = 16
    lam: float | None = None          # default: 12 for macer, 3 for cs-macer
    gamma: float = 8.0
    gamma1: float = 4.0
    gamma2: float = 16.0
    beta: float = 16.0
    init: str | None = None
    seed: int = 0
    image_size: int | None = None
    max_steps_per_epoch: int | None = None
    data_root: str | None = None
    device: str = "auto"
    precision: str = "fp32"
    threads: int | None = None
    progress: str | None = None
    log_every: int = 10

    # settings that may change between a run and its resumption without changing the result
    RUNTIME_ONLY = ("out", "data_root", "device", "threads", "progress", "log_every", "epochs")

    def __post_init__(self):
        if self.method not in METHODS:
            raise TrainingError(f"method must be one of {METHODS}; got {self.method!r}")
        if self.lam is None:
            self.lam = 12.0 if self.method == "macer" else 3.0
        if self.method in ("gaussian", "cohen-r"):
            self.gauss_num = 1
        if self.schedule not in ("cosine", "step"):
            raise TrainingError(f"schedule must be cosine or step; got {self.schedule!r}")
        if self.epochs < 1 or self.batch < 1 or self.lr <= 0 or self.sigma <= 0:
            raise TrainingError("epochs, batch, lr and sigma must be positive")

    @property
    def checkpoint_path(self) -> Path:
        p = Path(self.out)
        return p if p.suffix == ".pt" else p.with_name(p.name + ".pt")

    @property
    def progress_path(self) -> Path:
        return Path(self.progress) if self.progress else self.checkpoint_path.with_suffix(".progress.jsonl")

    def identity(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: v for k, v in d.items() if k not in self.RUNTIME_ONLY}


def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop with padding of size/8 and horizontal flip, batched; images float [B, C, H, W]."""
    B, C, H, W = images.shape
    pad = max(H // 8, 1)
    padded = F.pad(images, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (B,), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (B,), generator=gen)
    rows = (oy[:, None] + torch.arange(H))[:, :, None]
    cols = (ox[:, None] + torch.arange(W))[:, None, :]
    out = padded.permute(0, 2, 3, 1)[torch.arange(B)[:, None, None], rows, cols].permute(0, 3, 1, 2)
    flip = torch.rand(B, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    return out.contiguous()


def learning_rate(cfg: TrainConfig, epoch: int, step: int, steps: int) -> float:
    if cfg.schedule == "step":
        return cfg.lr * 0.1 ** (epoch // cfg.lr_step)
    t = (epoch + step / steps) / cfg.epochs
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))


def compute_loss(cfg: TrainConfig, logits, labels, cost: CostMatrix):
    if cfg.method == "gaussian":
        return gaussian_loss(logits, labels)
    if cfg.method == "cohen-r":
        return cohen_r_loss(logits, labels, cost, weight=cfg.weight)
    if cfg.method == "macer":
        return macer_loss(logits, labels, sigma=cfg.sigma, lam=cfg.lam, gamma=cfg.gamma, beta=cfg.beta)
    return cs_macer_loss(logits, labels, cost, sigma=cfg.sigma, lam=cfg.lam, gamma1=cfg.gamma1,
                         gamma2=cfg.gamma2, beta=cfg.beta)


class _StopFlag:
    """Set by SIGTERM/SIGINT: the run stops at the next step boundary after checkpointing."""

    def __init__(self):
        self.stop = False

    def install(self):
        def handler(signum, frame):
            self.stop = True
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass


def train(cfg: TrainConfig) -> dict:
    """Train (or resume) per cfg; returns the final checkpoint metadata."""
    set_threads(cfg.threads)
    world, rank, device = distributed_setup(cfg.device)
    log = ProgressLog(cfg.progress_path if rank == 0 else None)
    data = load_dataset(cfg.dataset, "train", root=cfg.data_root, image_size=cfg.image_size)
    cost = parse_cost(cfg.cost, data.num_classes, data.classes)

    torch.manual_seed(cfg.seed)  # the initial weights
    model = build_model(cfg.arch, data.num_classes, data.mean, data.std)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=5e-4)
    meta = {"arch": cfg.arch, "classes": data.classes, "dataset": cfg.dataset, "sigma": cfg.sigma,
            "method": cfg.method, "mean": list(data.mean), "std": list(data.std),
            "image_size": list(data.images.shape[-2:]), "cost": cost.to_json(),
            "hyperparameters": cfg.identity(), "epochs": cfg.epochs, "epochs_done": 0, "history": []}
    start_epoch = _resume_or_init(cfg, model, opt, meta, data.num_classes)
    model.to(device).to(memory_format=torch.channels_last)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    stopper = _StopFlag()
    stopper.install()

    n = len(data)
    steps = n // cfg.batch
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)
    if steps < 1:
        raise TrainingError(f"batch {cfg.batch} is larger than the training set ({n} images)")
    if start_epoch >= cfg.epochs:
        log.write("done", epoch=start_epoch, message="already trained: nothing to do")
        return meta
    log.write("start", epoch=start_epoch, epochs=cfg.epochs, steps_per_epoch=steps, method=cfg.method,
              resumed=start_epoch > 0)
    t_run = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        stats = _run_epoch(cfg, net, opt, data, cost, device, epoch, steps, world, rank, log, stopper)
        if stats is None:
            log.write("stopped", epoch=epoch, message=f"stopped on request; resumes from epoch {epoch}")
            return meta
        meta["history"].append(stats)
        meta["epochs_done"] = epoch + 1
        if rank == 0:
            save_checkpoint(cfg.checkpoint_path, model, meta,
                            train_state={"optimizer": opt.state_dict(), "epoch": epoch + 1})
        log.write("epoch", **stats)
        if stopper.stop and epoch + 1 < cfg.epochs:
            log.write("stopped", epoch=epoch + 1, message="stopped on request after checkpointing")
            return meta
    log.write("done", epoch=cfg.epochs, checkpoint=str(cfg.checkpoint_path), seconds=time.time() - t_run)
    return meta


def _resume_or_init(cfg, model, opt, meta, num_classes) -> int:
    """Load the run's own checkpoint to resume (same settings only), else the warm start, if any."""
    path = cfg.checkpoint_path
    if path.exists():
        payload = read_checkpoint(path)
        old = payload["meta"].get("hyperparameters", {})
        diff = {k: (old.get(k), v) for k, v in cfg.identity().items() if old.get(k) != v}
        if diff:
            raise TrainingError(f"{path} exists from a run with other settings {diff}: choose another --out "
                                "or delete it to start over")
        model.load_state_dict(payload["state_dict"])
        state = payload.get("train_state") or {}
        if "optimizer" in state:
            opt.load_state_dict(state["optimizer"])
        meta["history"] = payload["meta"].get("history", [])
        meta["epochs_done"] = payload["meta"].get("epochs_done", 0)
        return meta["epochs_done"]
    if cfg.init:
        init_model, init_meta = load_model(cfg.init, num_classes)
        if init_meta["arch"] != cfg.arch:
            raise TrainingError(f"warm start {cfg.init} is a {init_meta['arch']}, not {cfg.arch}")
        model.load_state_dict(init_model.state_dict())
        meta["init"] = {"checkpoint": str(cfg.init), "method": init_meta["method"],
                        "epochs": init_meta.get("epochs_done")}
    return 0


def _run_epoch(cfg, net, opt, data, cost, device, epoch, steps, world, rank, log, stopper) -> dict | None:
    """One epoch; its statistics, or None when stopped before its end (nothing is saved then)."""
    net.train()
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    noise_gen = torch.Generator(device).manual_seed(cfg.seed * 1_000_003 + epoch)
    order = torch.randperm(len(data), generator=gen)
    totals = {}
    correct = seen = 0
    t0 = time.time()
    k = cfg.gauss_num
    for step in range(steps):
        lr = learning_rate(cfg, epoch, step, steps)
        for group in opt.param_groups:
            group["lr"] = lr
        idx = order[step * cfg.batch:(step + 1) * cfg.batch]
        x = augment(data.float_images(idx), gen)[rank::world].to(device)
        y = data.labels[idx][rank::world].to(device)
        x = x.repeat_interleave(k, 0)
        x = (x + cfg.sigma * torch.randn(x.shape, generator=noise_gen, device=device)).contiguous(
            memory_format=torch.channels_last)
        with autocast(device, cfg.precision):
            logits = net(x).view(len(y), k, -1)
        loss, parts = compute_loss(cfg, logits, y, cost)
        if not torch.isfinite(loss):
            msg = f"loss became {loss.item()} at epoch {epoch}, step {step} ({parts}): lower --lr or --lam"
            log.write("error", epoch=epoch, step=step, message=msg)
            raise TrainingError(msg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for key, v in {"loss": loss.item(), **parts}.items():
            totals[key] = totals.get(key, 0.0) + v
        correct += (logits[:, 0].argmax(-1) == y).sum().item()
        seen += len(y)
        if (step + 1) % cfg.log_every == 0 or step + 1 == steps:
            elapsed = time.time() - t0
            rate = seen * k * world / elapsed
            remaining = (steps - step - 1) + steps * (cfg.epochs - epoch - 1)
            log.write("step", epoch=epoch, step=step + 1, steps=steps, lr=lr,
                      **{key: v / (step + 1) for key, v in totals.items()},
                      acc=correct / seen, images_per_s=rate, eta_s=remaining * elapsed / (step + 1))
        if stopper.stop:
            return None
    elapsed = time.time() - t0
    return {"epoch": epoch + 1, **{key: v / (step + 1) for key, v in totals.items()}, "acc": correct / max(seen, 1),
            "images_per_s": seen * k * world / elapsed, "seconds": elapsed, "lr": lr}
