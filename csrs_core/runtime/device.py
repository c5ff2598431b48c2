"""Device, precision and thread choices shared by sampling and training."""
from __future__ import annotations

import atexit
import contextlib
import os
from datetime import timedelta

import torch
import torch.distributed as dist

from csrs_core import CSRSError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str | None = "auto") -> torch.device:
    """'auto' is the GPU when one is present, else the CPU."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise CSRSError(f"--device = {name!r} is not allowed: must be auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise CSRSError(f"--device = {name!r} is not allowed: must be auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CSRSError(f"device {name} requested but no CUDA GPU is available; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise CSRSError(f"device {name} requested but this machine has {torch.cuda.device_count()} GPU(s)")
    return dev


def autocast(device: torch.device, precision: str):
    """A mixed-precision context for `precision` (fp32: none)."""
    if precision not in PRECISIONS:
        raise CSRSError(f"precision must be one of {sorted(PRECISIONS)}; got {precision!r}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(int(threads))


def _leave_process_group() -> None:
    """Leave the process group before the interpreter shuts down: left to the interpreter's teardown,
    gloo's threads were sometimes destroyed while joinable and the rank aborted (SIGABRT) after
    finishing its work."""
    if dist.is_initialized():
        dist.destroy_process_group()


def distributed_setup(device_name: str | None = "auto") -> tuple[int, int, torch.device]:
    """(world size, rank, device) under torchrun (process group joined: NCCL on GPUs, gloo on the
    CPU), or (1, 0, device) in a plain run. On GPUs each rank binds its LOCAL_RANK GPU before the
    process group exists, so NCCL's collectives run there (not all on cuda:0); a rank without a GPU
    of its own is refused with a message."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_name)
    if device.type == "cuda" and world > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise CSRSError(f"rank {local} of this machine has no GPU of its own ({torch.cuda.device_count()} "
                            "GPU(s)): start at most one process per GPU (--nproc-per-node), or pass --device cpu")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        # ranks may finish their shares hours apart: a long timeout instead of NCCL's 10 minutes
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=24))
        atexit.register(_leave_process_group)
    rank = dist.get_rank() if world > 1 else 0
    return world, rank, device
