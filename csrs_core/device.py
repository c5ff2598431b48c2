"""Device, precision and thread choices shared by sampling and training."""
from __future__ import annotations

import contextlib

import torch

from csrs_core import CSRSError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str | None = "auto") -> torch.device:
    """'auto' is the GPU when one is present, else the CPU."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CSRSError(f"device {name} requested but no CUDA GPU is available; use --device cpu")
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
