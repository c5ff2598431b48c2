"""How to run a base classifier fastest on this machine: precision and batch size, measured once.

`choose_plan` resolves precision 'auto' and batch None by timing short forward passes of the very
model on noise-shaped inputs, and caches the winner per machine, model structure and input shape in
the user's cache folder, so the measurement is paid once. The precision chosen defines the base
classifier, so it is part of every certification record's key."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from csrs_core.atomic import atomic_write_text
from csrs_core.device import autocast

CPU_BATCHES = (64, 128, 256)
GPU_BATCHES = (1024, 2048, 4096)
DEFAULT_BATCH = {"cpu": 128, "cuda": 2048}


@dataclass
class Plan:
    model: torch.nn.Module
    precision: str
    batch: int
    measured: dict | None = None


def _cache_file() -> Path:
    return Path(os.environ.get("CSRS_CACHE") or Path.home() / ".cache" / "csrs").expanduser() / "autotune.json"


def machine_id(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:
            name = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
    return f"{device.type}:{name}:threads{torch.get_num_threads()}:torch{torch.__version__}"


def model_id(model: torch.nn.Module, image_shape) -> str:
    return hashlib.sha256(f"{model}:{tuple(image_shape)}".encode()).hexdigest()[:16]


def _time_forward(model, device, precision, batch, image_shape, seconds=0.6) -> float:
    """Images per second of `model` at this precision and batch (after one warm-up pass)."""
    x = torch.rand((batch, *image_shape), device=device).contiguous(memory_format=torch.channels_last)
    done, t0 = 0, None
    with torch.inference_mode(), autocast(device, precision):
        model(x).argmax(1)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds or done == 0:
            model(x).argmax(1)
            done += batch
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return done / (time.perf_counter() - t0)


def measure(model, device, image_shape, precisions, batches) -> dict:
    """{'precision/batch': images per second} for every combination."""
    return {f"{p}/{b}": _time_forward(model, device, p, b, image_shape) for p in precisions for b in batches}


def choose_plan(model: torch.nn.Module, device: torch.device, precision: str, batch: int | None, image_shape,
                samples: int = 0, progress=None) -> Plan:
    """The model on `device` (eval, channels-last) with the precision and batch to sample at.
    'auto' precision and/or a None batch are measured once per machine and model and cached."""
    model = model.to(device).eval().to(memory_format=torch.channels_last)
    if precision != "auto" and batch is not None:
        return Plan(model, precision, batch)
    precisions = [precision] if precision != "auto" else (
        ["fp32", "bf16", "fp16"] if device.type == "cuda" else ["fp32", "bf16"])
    batches = GPU_BATCHES if device.type == "cuda" else CPU_BATCHES
    if batch is not None:
        batches = (batch,)
    key = f"{machine_id(device)}|{model_id(model, image_shape)}|{','.join(precisions)}|{batches}"
    path = _cache_file()
    try:
        table = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, json.JSONDecodeError):
        table = {}
    if key not in table:
        if samples and samples < 20 * max(batches):  # too small a job to repay a measurement
            return Plan(model, precisions[0], batches[0] if batch is None else batch)
        table[key] = measure(model, device, image_shape, precisions, batches)
        atomic_write_text(path, json.dumps(table, indent=1))
    rates = table[key]
    best = max(rates, key=rates.get)
    chosen_precision, chosen_batch = best.split("/")
    if progress is not None:
        progress.write("plan", precision=chosen_precision, batch=int(chosen_batch), measured=rates)
    return Plan(model, chosen_precision, int(chosen_batch), rates)
