"""Training smoothed classifiers (Gaussian, Cohen-R, MACER, CS-MACER), resumable and data-parallel.

Every epoch ends with an atomic checkpoint holding the optimizer state; each epoch's data order,
augmentation and noise come from three distinct streams seeded by (purpose, seed, epoch), so a killed
run restarted with the same command resumes from its last checkpoint and ends where an uninterrupted
run would."""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import importlib.util
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from csrs_core import CSRSError
from csrs_core.certification.certificates import certify_from_counts
from csrs_core.certification.cost import parse_cost
from csrs_core.certification.metrics import summarize
from csrs_core.settings import DEFAULT_COPIES, DEFAULT_LAMBDA, TRAIN, SettingError, check_settings
from csrs_core.data import DatasetError, load_dataset, select_examples
from csrs_core.models.architectures import build_model, use_architecture
from csrs_core.models.checkpoints import file_digest, load_model, read_checkpoint, save_checkpoint
from csrs_core.runtime.device import autocast, distributed_setup, pick_device, set_threads
from csrs_core.runtime.atomic import FileWriteError
from csrs_core.runtime.locks import output_lock
from csrs_core.runtime.progress import ProgressLog
from csrs_core.sampling.counts import sample_counts
from csrs_core.training.losses import cohen_r_loss, cost_tensor, cs_macer_loss, gaussian_loss, macer_loss


COSTED = ("cohen-r", "cs-macer")  # the methods whose loss uses the cost matrix


class TrainingError(CSRSError):
    """Training stopped; the message says why (also written to the progress file)."""


@dataclass
class TrainConfig:
    """A training run's settings; names, defaults and ranges are csrs_core.settings.TRAIN's."""
    method: str
    dataset: str
    out: str
    arch: str = TRAIN["arch"].default
    sigma: float = TRAIN["sigma"].default
    epochs: int = TRAIN["epochs"].default
    batch: int = TRAIN["batch"].default
    lr: float = TRAIN["lr"].default
    schedule: str = TRAIN["schedule"].default
    lr_step: int = TRAIN["lr_step"].default
    cost: str = TRAIN["cost"].default
    weight: float = TRAIN["weight"].default
    gauss_num: int = TRAIN["gauss_num"].default
    lam: float | None = TRAIN["lam"].default
    lam_warmup: float = TRAIN["lam_warmup"].default
    gamma: float = TRAIN["gamma"].default
    gamma1: float = TRAIN["gamma1"].default
    gamma2: float = TRAIN["gamma2"].default
    beta: float = TRAIN["beta"].default
    init: str | None = TRAIN["init"].default
    seed: int = TRAIN["seed"].default
    image_size: int | None = TRAIN["image_size"].default
    max_steps_per_epoch: int | None = TRAIN["max_steps_per_epoch"].default
    data_root: str | None = TRAIN["data_root"].default
    device: str = TRAIN["device"].default
    precision: str = TRAIN["precision"].default
    threads: int | None = TRAIN["threads"].default
    progress: str | None = TRAIN["progress"].default
    log_every: int = TRAIN["log_every"].default
    val_examples: int = TRAIN["val_examples"].default
    tensorboard: str | None = TRAIN["tensorboard"].default

    # settings that may change between a run and its resumption without changing the result
    RUNTIME_ONLY = ("out", "data_root", "device", "threads", "progress", "log_every", "val_examples", "tensorboard")

    def __post_init__(self):
        for name, value in check_settings(TRAIN, dataclasses.asdict(self)).items():
            setattr(self, name, value)
        if self.method in COSTED and self.cost.strip().lower() == "none":
            raise SettingError(f"--method {self.method} needs --cost naming the costly mistakes (e.g. seedwise:3 or "
                               "'pairwise:1>0'): without one it has no cost term and trains as "
                               f"{'cohen' if self.method == 'cohen-r' else 'macer'} would")
        if self.lam is None:
            self.lam = DEFAULT_LAMBDA.get(self.method, 0.0)
        if self.gauss_num is None:
            self.gauss_num = DEFAULT_COPIES[self.method]
        if self.method in ("gaussian", "cohen-r"):
            self.lam_warmup = 0.0  # no robustness term to warm up
        elif self.lam_warmup > self.epochs:
            raise SettingError(f"--lam-warmup = {self.lam_warmup:g} is not allowed with --epochs {self.epochs}: λ "
                               "would never reach its value; must be at most the number of epochs")
        pick_device(self.device)  # an unusable --device is refused before anything is written
        if self.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise SettingError(f"--tensorboard {self.tensorboard}: the tensorboard package is not installed here "
                               "(pip install tensorboard), or leave --tensorboard out")
        try:  # MODULE:FACTORY names the user's own module: imported because the user asked for it
            self.arch = use_architecture(self.arch)
        except CSRSError as exc:
            raise TrainingError(f"--arch = {self.arch!r} is not allowed: {exc}") from None

    @property
    def checkpoint_path(self) -> Path:
        p = Path(self.out)
        return p if p.suffix == ".pt" else p.with_name(p.name + ".pt")

    @property
    def progress_path(self) -> Path:
        return Path(self.progress) if self.progress else self.checkpoint_path.with_suffix(".progress.jsonl")

    def identity(self) -> dict:
        """The settings that define the result. The step schedule does not depend on the number of
        epochs, so a step-schedule run may be extended; a cosine one may not (its lr would jump)."""
        d = dataclasses.asdict(self)
        skip = self.RUNTIME_ONLY + (("epochs",) if self.schedule == "step" else ())
        d["init"] = warm_start_identity(d["init"])
        return {k: v for k, v in d.items() if k not in skip}


def warm_start_identity(init: str | None) -> str | None:
    """A warm start as part of a run's identity: its content digest ('sha256:...') when `init` names a
    file (wherever it lies), else `init` as it is (None, a digest already, a file that is gone)."""
    if init and not str(init).startswith("sha256:") and Path(init).is_file():
        return f"sha256:{file_digest(init)}"
    return init


def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop with padding of size/8 and horizontal flip, batched, on the images' device
    (the generator lives there too); images float [B, C, H, W]."""
    B, C, H, W = images.shape
    dev = images.device
    pad = max(H // 8, 1)
    padded = F.pad(images, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (B,), generator=gen, device=dev)
    ox = torch.randint(0, 2 * pad + 1, (B,), generator=gen, device=dev)
    rows = (oy[:, None] + torch.arange(H, device=dev))[:, :, None]
    cols = (ox[:, None] + torch.arange(W, device=dev))[:, None, :]
    out = padded.permute(0, 2, 3, 1)[torch.arange(B, device=dev)[:, None, None], rows, cols].permute(0, 3, 1, 2)
    flip = torch.rand(B, generator=gen, device=dev) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out).contiguous()


def learning_rate(cfg: TrainConfig, epoch: int, step: int, steps: int) -> float:
    if cfg.schedule == "step":
        return cfg.lr * 0.1 ** (epoch // cfg.lr_step)
    t = (epoch + step / steps) / cfg.epochs
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))


def robustness_weight(cfg: TrainConfig, epoch: int, step: int, steps: int) -> float:
    """λ at this step: rising linearly from 0 over the first lam_warmup epochs, then cfg.lam."""
    if cfg.lam_warmup <= 0:
        return cfg.lam
    return cfg.lam * min(1.0, (epoch + step / steps) / cfg.lam_warmup)


def compute_loss(cfg: TrainConfig, logits, labels, cost, lam: float):
    """The method's loss and its parts as device tensors (cost: losses.cost_tensor on the device,
    the bool support of a binary matrix or the float64 costs of a real-valued one; lam: the
    robustness weight at this step)."""
    if cfg.method == "gaussian":
        return gaussian_loss(logits, labels, as_tensors=True)
    if cfg.method == "cohen-r":
        return cohen_r_loss(logits, labels, cost, weight=cfg.weight, as_tensors=True)
    if cfg.method == "macer":
        return macer_loss(logits, labels, sigma=cfg.sigma, lam=lam, gamma=cfg.gamma, beta=cfg.beta,
                          as_tensors=True)
    return cs_macer_loss(logits, labels, cost, sigma=cfg.sigma, lam=lam, gamma1=cfg.gamma1,
                         gamma2=cfg.gamma2, beta=cfg.beta, as_tensors=True)


class TrainingInterrupted(TrainingError):
    """A signal stopped the run after its last complete epoch was checkpointed; rerunning the same
    command resumes. exit_code is 128 + the signal number, as a shell reports it."""

    def __init__(self, signum: int, epoch: int):
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name} in epoch {epoch + 1}; the last "
                         f"checkpoint holds {epoch} epochs; rerun the same command to resume")


class _StopFlag:
    """Records SIGTERM/SIGINT once installed: the run stops at the next step boundary; restore()
    puts back the handlers it replaced."""

    def __init__(self):
        self.signum = None
        self.replaced = {}

    def install(self):
        def handler(signum, frame):
            self.signum = signum
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self.replaced[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass

    def restore(self):
        for sig, previous in self.replaced.items():
            signal.signal(sig, previous)
        self.replaced = {}


def train(cfg: TrainConfig, display=None) -> dict:
    """Train (or resume) per cfg; returns the final checkpoint metadata. One writer per output
    (a lock beside it); a signal raises TrainingInterrupted after the last epoch checkpoint, and the
    signal handlers it replaced are restored when it returns or raises."""
    stopper = _StopFlag()
    try:
        if int(os.environ.get("RANK", "0")) != 0:  # under torchrun rank 0 is the writer
            return _train(cfg, display, stopper)
        with output_lock(cfg.checkpoint_path):
            return _train(cfg, display, stopper)
    finally:
        stopper.restore()  # the caller's own signal handlers again


def _train(cfg: TrainConfig, display, stopper: _StopFlag) -> dict:
    set_threads(cfg.threads)
    world, rank, device = distributed_setup(cfg.device)
    log = ProgressLog(cfg.progress_path if rank == 0 else None, display=display if rank == 0 else None)
    data = load_dataset(cfg.dataset, "train", root=cfg.data_root, image_size=cfg.image_size)
    cost = parse_cost(cfg.cost, data.num_classes, data.classes)
    if cfg.method in COSTED and not cost.matrix.any():
        raise SettingError(f"--cost = {cfg.cost!r} makes no mistake costly: --method {cfg.method} needs at least one")
    val = _val_subset(cfg, data, log) if rank == 0 else None
    board = _board(cfg) if rank == 0 else None

    torch.manual_seed(cfg.seed)  # the initial weights
    model = build_model(cfg.arch, data.num_classes, data.mean, data.std)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=5e-4)
    meta = {"arch": cfg.arch, "classes": data.classes, "dataset": cfg.dataset, "sigma": cfg.sigma,
            "method": cfg.method, "mean": list(data.mean), "std": list(data.std),
            "image_size": list(data.images.shape[-2:]), "cost": cost.to_json(),
            "hyperparameters": cfg.identity(), "epochs": cfg.epochs, "epochs_done": 0, "history": []}
    start_epoch, state = _resume_or_init(cfg, model, opt, meta, data.num_classes)
    model.to(device).to(memory_format=torch.channels_last)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    images, labels = data.images.to(device), data.labels.to(device)   # moved once
    cost_matrix = cost_tensor(cost, device)   # moved once; bool for a binary matrix, as before
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    stopper.install()

    n = len(data)
    steps = n // cfg.batch
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)
    if steps < 1:
        raise TrainingError(f"--batch {cfg.batch} is larger than the training set ({n} images)")
    if start_epoch >= cfg.epochs:
        log.write("done", epoch=start_epoch, message="already trained: nothing to do")
        return meta
    log.write("start", epoch=start_epoch, epochs=cfg.epochs, steps_per_epoch=steps, method=cfg.method,
              resumed=start_epoch > 0)
    t_run = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        stats = _run_epoch(cfg, net, opt, scaler, images, labels, cost_matrix, device, epoch, steps, world, rank,
                           log, stopper)
        if stats is not None:
            if val is not None:
                stats.update(_val_measure(cfg, model, val, cost, device))
            if board is not None:
                for name, value in stats.items():
                    if isinstance(value, (int, float)) and name != "epoch":
                        board.add_scalar(name, value, epoch + 1)
                board.flush()
            meta["history"].append(stats)
            meta["epochs_done"] = epoch + 1
            if rank == 0:
                _save_epoch(cfg, model, meta, {"optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                                               "epoch": epoch + 1}, log)
            log.write("epoch", **stats)
        if stopper.signum is not None and meta["epochs_done"] < cfg.epochs:
            error = TrainingInterrupted(stopper.signum, meta["epochs_done"])
            log.write("interrupted", epoch=meta["epochs_done"], message=str(error))
            raise error
    if board is not None:
        board.close()
    if world > 1:  # every rank waits for rank 0's last checkpoint, so none leaves the group while it works
        dist.barrier()
    log.write("done", epoch=cfg.epochs, checkpoint=str(cfg.checkpoint_path), seconds=time.time() - t_run)
    return meta


def _save_epoch(cfg: TrainConfig, model, meta: dict, train_state: dict, log: ProgressLog) -> None:
    """Write the checkpoint of the epoch just ended (atomically: the one before stays until it is
    replaced). When it cannot be written, a TrainingError (exit code 1, also written to the progress
    file) names the file and says why in words (a full disk, a folder that is not writable), never
    torch's internal text; the previous checkpoint is left intact and rerunning the same command
    resumes from it."""
    path = cfg.checkpoint_path
    try:
        save_checkpoint(path, model, meta, train_state=train_state)
    except FileWriteError as exc:
        kept = (f"the checkpoint of epoch {meta['epochs_done'] - 1} is intact" if meta["epochs_done"] > 1
                else "nothing was saved yet")
        msg = (f"could not write the checkpoint {path} after epoch {meta['epochs_done']}: "
               f"{_write_failure(exc.__cause__)}; {kept}. Free some disk space or make {path.parent} writable, "
               "then rerun the same command to resume")
        with contextlib.suppress(OSError):  # the progress file may lie on the same full disk
            log.write("error", epoch=meta["epochs_done"] - 1, message=msg)
        error = TrainingError(msg)
        error.exit_code = 1
        raise error from None


def _write_failure(cause) -> str:
    """Why a file could not be written, in words: from the OSError's errno where there is one; torch
    reports a failed write as a RuntimeError that does not say why."""
    errors = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
              errno.EACCES: "its folder is not writable", errno.EPERM: "its folder is not writable",
              errno.EROFS: "its folder is on a read-only file system"}
    if isinstance(cause, OSError) and cause.errno in errors:
        return errors[cause.errno]
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return "the disk is full or its folder is not writable"


def _resume_or_init(cfg, model, opt, meta, num_classes) -> tuple[int, dict]:
    """Load the run's own checkpoint to resume (same settings only), else the warm start, if any;
    (first epoch to run, the saved training state)."""
    path = cfg.checkpoint_path
    if path.exists():
        payload = read_checkpoint(path)
        old = dict(payload["meta"].get("hyperparameters", {}))
        old["init"] = warm_start_identity(old.get("init"))  # a run recorded by path: compare the content
        # a setting an older run did not record did not exist then: it ran at that setting's default
        diff = {k: (old.get(k, TRAIN[k].default), v) for k, v in cfg.identity().items()
                if old.get(k, TRAIN[k].default) != v}
        if "epochs" in diff:
            raise TrainingError(f"{path} is a run of {diff['epochs'][0]} epochs with a cosine schedule, which "
                                f"depends on the total: resuming with --epochs {cfg.epochs} would follow neither "
                                "schedule. Rerun with the same --epochs, or train into a new --out (e.g. with "
                                "--init to warm-start), or use --schedule step, which can be extended")
        if diff:
            raise TrainingError(f"{path} exists from a run with other settings {diff}: choose another --out "
                                "or delete it to start over")
        model.load_state_dict(payload["state_dict"])
        state = payload.get("train_state") or {}
        if "optimizer" in state:
            opt.load_state_dict(state["optimizer"])

        meta["history"] = payload["meta"].get("history", [])
        meta["epochs_done"] = payload["meta"].get("epochs_done", 0)
        if "init" in payload["meta"]:  # the warm start the run began from
            meta["init"] = payload["meta"]["init"]
        return meta["epochs_done"], state
    if cfg.init:
        init_model, init_meta = load_model(cfg.init, num_classes)
        if init_meta["arch"] != cfg.arch:
            raise TrainingError(f"warm start {cfg.init} is a {init_meta['arch']}, not {cfg.arch}")
        model.load_state_dict(init_model.state_dict())
        meta["init"] = {"checkpoint": str(cfg.init), "sha256": file_digest(cfg.init), "method": init_meta["method"],
                        "epochs": init_meta.get("epochs_done")}
    return 0, {}


def _should_stop(stopper: _StopFlag, world: int, device, at_log_step: bool) -> bool:
    """Whether to stop now. Alone: as soon as a signal arrived. Under torchrun: all ranks agree at
    log steps (a MAX all-reduce of the signal number), so no rank is left waiting in a gradient
    all-reduce for one that has stopped."""
    if world == 1:
        return stopper.signum is not None
    if not at_log_step:
        return False
    flag = torch.tensor([stopper.signum or 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    stopper.signum = stopper.signum or int(flag.item()) or None
    return stopper.signum is not None


def stream(purpose: str, seed: int, epoch: int, device, rank: int = 0) -> torch.Generator:
    """The random stream of one purpose ('order', 'augment' or 'noise') in one epoch (and, for the
    noise, one rank), on `device`: seeded by a hash of all of them, so no two purposes, epochs or
    ranks share draws, and a resumed epoch draws what the interrupted one drew. Data order and
    augmentation are shared by all ranks (each takes its own rows); the noise is each rank's own."""
    digest = hashlib.sha256(f"csrs-train:{purpose}:{seed}:{epoch}:{rank}".encode()).digest()
    return torch.Generator(device).manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


VAL_N0, VAL_N = 16, 64   # noisy copies per val example after each epoch: a cheap view of progress


def _val_subset(cfg: TrainConfig, data, log: ProgressLog):
    """The fixed val examples measured after each epoch (a stratified choice, seed 0), or None: none asked
    for, or the data set has no val split (said in the log)."""
    if not cfg.val_examples:
        return None
    try:
        val = load_dataset(cfg.dataset, "val", root=cfg.data_root, image_size=cfg.image_size or data.images.shape[-1])
    except DatasetError as exc:
        log.write("note", message=f"no per-epoch val measure: {exc}")
        return None
    return val.subset(select_examples(val.labels.numpy(), cfg.val_examples, None, 0))


def _val_measure(cfg: TrainConfig, model, val, cost, device) -> dict:
    """val_acc and val_rob_cs (at ε = σ) of the smoothed classifier on the val examples, from VAL_N0 + VAL_N
    noisy copies each (noise seed 0, its own streams: training's random streams are untouched). A noisy
    view of progress at a tiny n, not a certificate to report."""
    was_training = model.training
    c0, c = sample_counts(model, val.images, val.indices, val.num_classes, cfg.sigma, VAL_N0, VAL_N, batch=256,
                          seed=0, device=device, precision="fp32")
    model.train(was_training)
    summary = summarize(certify_from_counts(c0, c, val.labels.numpy(), cost, sigma=cfg.sigma), cfg.sigma)
    out = {"val_acc": summary["acc"]}
    if summary["n_sensitive"]:
        out["val_rob_cs"] = summary["rob_cs"]
    return out


def _board(cfg: TrainConfig):
    """A TensorBoard writer for --tensorboard (the package's presence was checked with the settings), or None."""
    if not cfg.tensorboard:
        return None
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter(cfg.tensorboard)


def _run_epoch(cfg, net, opt, scaler, images, labels, cost, device, epoch, steps, world, rank, log,
               stopper) -> dict | None:
    """One epoch; its statistics, or None when stopped before its end (nothing is saved then)."""
    net.train()
    noise_gen = stream("noise", cfg.seed, epoch, device, rank)
    aug_gen = stream("augment", cfg.seed, epoch, device)  # where the images are
    order = torch.randperm(len(labels), generator=stream("order", cfg.seed, epoch, "cpu"))
    totals = {}
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    t0 = time.time()
    k = cfg.gauss_num
    for step in range(steps):
        lr = learning_rate(cfg, epoch, step, steps)
        for group in opt.param_groups:
            group["lr"] = lr
        idx = order[step * cfg.batch:(step + 1) * cfg.batch].to(images.device)
        x = augment(images[idx].float().div_(255.0), aug_gen)[rank::world]
        y = labels[idx][rank::world]
        x = x.repeat_interleave(k, 0)
        x = (x + cfg.sigma * torch.randn(x.shape, generator=noise_gen, device=device)).contiguous(
            memory_format=torch.channels_last)
        with autocast(device, cfg.precision):
            logits = net(x).view(len(y), k, -1)
        lam = robustness_weight(cfg, epoch, step, steps)
        loss, parts = compute_loss(cfg, logits, y, cost, lam)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        for key, v in {"loss": loss.detach(), **parts}.items():
            totals[key] = totals[key] + v if key in totals else v
        correct += (logits[:, 0].argmax(-1) == y).sum()
        seen += len(y)
        if (step + 1) % cfg.log_every == 0 or step + 1 == steps:  # the only host synchronisation
            means = {key: v.item() / (step + 1) for key, v in totals.items()}
            if not math.isfinite(means["loss"]):
                msg = f"loss became {means['loss']} at epoch {epoch}, step {step + 1} ({means}): lower --lr or --lam"
                log.write("error", epoch=epoch, step=step + 1, message=msg)
                error = TrainingError(msg)
                error.exit_code = 1
                raise error
            elapsed = time.time() - t0
            rate = seen * k * world / elapsed
            remaining = (steps - step - 1) + steps * (cfg.epochs - epoch - 1)
            log.write("step", epoch=epoch, step=step + 1, steps=steps, lr=lr, lam=lam, **means,
                      acc=correct.item() / seen, images_per_s=rate, eta_s=remaining * elapsed / (step + 1))
        if _should_stop(stopper, world, device, (step + 1) % cfg.log_every == 0 or step + 1 == steps):
            return None
    elapsed = time.time() - t0
    return {"epoch": epoch + 1, **means, "acc": correct.item() / max(seen, 1),
            "images_per_s": seen * k * world / elapsed, "seconds": elapsed, "lr": lr,
            "noisy_images": steps * cfg.batch * k}  # the epoch's training compute: forward and backward passes
