"""Step 1: versions, GPUs, and every package and module the steps import."""
from __future__ import annotations

import importlib
import importlib.util
import os
import platform
import shutil
import sys
import sysconfig
from pathlib import Path

from gpu_check_steps.framework import Check, StepFailed, step
from gpu_check_steps.processes import run_command

# module -> wheel that provides it; what the steps import (streamlit is the dashboard's only)
WHEELS = {"torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "scipy": "scipy", "pandas": "pandas",
          "PIL": "pillow", "pytest": "pytest", "psutil": "psutil", "filelock": "filelock", "tqdm": "tqdm"}
CUDA_WHEELS = {"triton": "triton"}  # torch.compile's GPU code generator
STEP_MODULES = (
    "csrs_core", "csrs_core.models.architectures", "csrs_core.models.checkpoints", "csrs_core.data",
    "csrs_core.sampling.counts", "csrs_core.sampling.plan", "csrs_core.runtime.device",
    "csrs_core.sampling.stage_a", "csrs_core.sampling.store", "csrs_core.certification.certificates",
    "csrs_core.certification.cost", "csrs_core.certification.metrics", "csrs_core.training.losses",
    "csrs_core.training.loop", "csrs_core.cli.commands", "bench_certify", "bench_train")


@step("environment", "versions, GPUs, importable packages", estimate=(5, 3), cap=(40, 12))
def step_environment(ctx: Check, res: dict) -> None:
    """Versions, GPUs and every package the steps import (a missing one named by its wheel); fails
    when a wheel is missing or --device names a GPU torch cannot use."""
    res["python"] = sys.version.split()[0]
    res["platform"] = platform.platform()
    res["cpu_count"] = os.cpu_count()
    wheels = dict(WHEELS, **(CUDA_WHEELS if ctx.device_name.startswith("cuda") else {}))
    versions, missing = {}, []
    for module, wheel in wheels.items():
        try:
            versions[module] = getattr(importlib.import_module(module), "__version__", "?")
        except Exception as exc:
            versions[module] = None
            missing.append(f"{wheel} ({module}: {exc.__class__.__name__}: {exc})")
    res["versions"], res["missing_wheels"] = versions, missing
    ctx.log("packages: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v))
    ctx.log(f"missing wheels: {'; '.join(missing) if missing else 'none'}")
    ctx.log(f"streamlit: {'present' if importlib.util.find_spec('streamlit') else 'absent'} "
            "(needed only by the dashboard and its tests; no step here imports it)")
    broken = {}
    for module in STEP_MODULES:
        try:
            importlib.import_module(module)
        except Exception as exc:
            broken[module] = f"{exc.__class__.__name__}: {exc}"
    res["csrs_import_errors"] = broken
    ctx.log(f"csrs_core modules and bench scripts the steps use: {'all import' if not broken else broken}")
    compiler = shutil.which("gcc") or shutil.which("cc")
    python_h = Path(sysconfig.get_paths()["include"]) / "Python.h"
    res["c_compiler"], res["python_h"] = compiler, python_h.exists()
    ctx.log(f"C compiler (torch.compile/triton build helpers with it): {compiler or 'none'}; "
            f"Python.h: {'present' if python_h.exists() else 'absent'}")
    import torch
    res["torch"] = {"version": torch.__version__, "cuda": torch.version.cuda,
                    "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                    "cuda_available": torch.cuda.is_available(), "device_count": torch.cuda.device_count(),
                    "threads": torch.get_num_threads()}
    gpus = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        gpus.append({"name": p.name, "capability": f"{p.major}.{p.minor}",
                     "memory_gib": round(p.total_memory / 2**30, 1), "multiprocessors": p.multi_processor_count})
    res["gpus"] = gpus
    ctx.log(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {res['torch']['cudnn']}, "
            f"{len(gpus)} GPU(s): {', '.join(g['name'] for g in gpus) or 'none'}")
    for g in gpus:
        ctx.log(f"  {g['name']}: compute capability {g['capability']}, {g['memory_gib']} GiB, "
                f"{g['multiprocessors']} SMs")
    if shutil.which("nvidia-smi"):
        rc, out = run_command(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                               "--format=csv,noheader"], timeout=min(20, ctx.left()))
        res["nvidia_smi"] = out.strip()
        ctx.log(f"nvidia-smi: {out.strip()}")
    if ctx.device_name.startswith("cuda") and not torch.cuda.is_available():
        raise StepFailed(f"--device {ctx.device_name} but torch.cuda.is_available() is False: the steps below "
                         "cannot use a GPU")
    if missing:
        raise StepFailed(f"missing wheels: {', '.join(m.split(' ')[0] for m in missing)}")
