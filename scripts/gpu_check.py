"""One run that measures and verifies CSRS's CUDA paths on a GPU machine.

    PYTHONPATH=. python scripts/gpu_check.py OUTDIR              # on the GPU machine, <= 7 minutes
    PYTHONPATH=. python scripts/gpu_check.py --dry-run OUTDIR    # every step on the CPU, tiny sizes

Writes OUTDIR/gpu_check.log (readable: each step named, with timings) and OUTDIR/gpu_check.json
(machine-readable), both rewritten after every step, so a run cut short keeps what it measured.

Steps: 1 environment, 2 the CUDA tests (pytest), 3 bare forward of ResNet-110 and stage A,
4 fp32 vs the chosen precision and CUDA vs the stored CPU counts, 5 SmoothedClassifier on CUDA,
6 MACER / CS-MACER training step vs a bare cross-entropy step, 7 a 2-rank torchrun certification.
A step that fails is recorded with its traceback and the next one runs. Every step has an estimate
and a cap: one that cannot get its estimate from what is left of the time budget is recorded as
skipped, and no step may eat the estimates of the steps after it beyond its own estimate.
Verdicts (ratios against goals, statistical agreement) are recorded as checks beside the numbers;
a failed check does not fail its step."""
from __future__ import annotations

import argparse
import ast
import datetime
import importlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# module -> wheel that provides it; what the steps import (streamlit is the dashboard's only)
WHEELS = {"torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "scipy": "scipy", "pandas": "pandas",
          "PIL": "pillow", "pytest": "pytest", "psutil": "psutil", "filelock": "filelock", "tqdm": "tqdm"}
CUDA_WHEELS = {"triton": "triton"}  # torch.compile's GPU code generator
CSRS_MODULES = (
    "csrs_core", "csrs_core.models.architectures", "csrs_core.models.checkpoints", "csrs_core.data",
    "csrs_core.sampling.counts", "csrs_core.sampling.plan", "csrs_core.runtime.device",
    "csrs_core.sampling.stage_a", "csrs_core.sampling.store", "csrs_core.certification.certificates",
    "csrs_core.certification.cost", "csrs_core.certification.metrics", "csrs_core.training.losses",
    "csrs_core.training.loop", "csrs_core.cli.commands")
BIG_JOB = (10_000, 100, 100_000)  # images, n0, n: the certification the extrapolation is for
FAMILY_ALPHA = 0.001              # family-wise error of the agreement tests (Bonferroni)


@dataclass
class Sizes:
    """How big each step's work is: the GPU run's sizes, or the dry run's tiny ones."""
    arch: str
    batches: tuple
    bare_seconds: float
    compile_backend: str          # "project": csrs_core.sampling.plan.compile_model; "eager": dynamo only
    compile_precisions: int       # at most this many precisions compiled (best eager first)
    stage_a_n0: int
    stage_a_n: int
    stage_a_seconds: float        # stage A is sized to take about this long
    stage_a_images: tuple         # (fewest, most)
    decision_images: int
    decision_copies: int
    cert_examples: int | None     # examples of the stored record certified again (None: all)
    cert_n0_n: tuple | None       # (n0, n) of that certification (None: the stored record's)
    cert_precision: str | None    # None: the stored record's precision
    smooth_images: int
    smooth_n: int
    train_archs: tuple
    train_batch: int
    train_k: int
    train_steps: int
    train_rounds: int
    train_precision: str
    dist_examples: int
    dist_n0: int
    dist_n: int


GPU = Sizes("resnet110", (256, 512, 1024, 2048, 4096), 1.0, "project", 3, 100, 10_000, 35.0, (20, 2_000),
            100, 1_000, None, None, None, 50, 10_000, ("resnet20", "resnet110"), 64, 16, 10, 3, "bf16",
            200, 100, 1_000)
DRY = Sizes("resnet8", (16, 32), 0.1, "eager", 1, 10, 50, 0.5, (2, 4),
            4, 50, 2, (10, 50), "fp32", 2, 50, ("resnet8",), 4, 2, 1, 1, "fp32", 4, 10, 20)


class Skip(Exception):
    """The step does not apply here; the message says why."""


class StepFailed(Exception):
    """The step ran but its outcome is a failure (e.g. a test failed); no traceback needed."""


class StepTimeout(BaseException):
    """Raised by the alarm when a step overruns its hard limit (BaseException: not swallowed by
    an `except Exception` inside the code under test)."""


@dataclass
class Step:
    name: str
    title: str
    fn: Callable
    estimate: tuple  # (GPU run, dry run) seconds the step needs at least
    cap: tuple       # (GPU run, dry run) seconds it may take at most
    applies: Callable | None = None  # False: it will skip at once (no time kept for it)

    def needs(self, ctx) -> float:
        if self.applies is not None and not self.applies(ctx):
            return 1.0
        return self.estimate[1] if ctx.dry else self.estimate[0]


STEPS: list[Step] = []


def step(name, title, estimate, cap, applies=None):
    def register(fn):
        STEPS.append(Step(name, title, fn, estimate, cap, applies))
        return fn
    return register


class Check:
    """The run: arguments, sizes, clock and budget, the log and the JSON report."""

    def __init__(self, args):
        self.args, self.dry = args, args.dry_run
        self.sizes = DRY if self.dry else GPU
        self.t0 = time.monotonic()
        self.budget = float(args.budget or (50 if self.dry else 380))
        self.out = Path(args.outdir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix="gpu_check-"))
        os.environ["CSRS_CACHE"] = str(self.tmp / "cache")  # fresh autotune measurements, none of ~/.cache
        self.device_name = "cpu" if self.dry else args.device
        self.deadline = self.t0 + self.budget
        self.current = None     # the step running (checks name it)
        self.shared: dict = {}  # numbers a later step reuses (e.g. stage A's rate)
        self.logfile = open(self.out / "gpu_check.log", "w")
        self.report = {"script": "scripts/gpu_check.py", "argv": sys.argv[1:], "dry_run": self.dry,
                       "device": self.device_name, "started": datetime.datetime.now().isoformat(timespec="seconds"),
                       "budget_s": self.budget, "sizes": asdict(self.sizes), "steps": {}, "checks": []}

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        """Seconds to the current step's deadline."""
        return self.deadline - time.monotonic()

    def log(self, msg: str = "", indent: bool = True) -> None:
        line = ("  " + msg) if indent else msg
        self.logfile.write(line + "\n")
        self.logfile.flush()
        print(line, flush=True)

    def check(self, name: str, passed: bool, detail: str) -> None:
        """A verdict beside the numbers; a failed check does not fail its step."""
        self.report["checks"].append({"step": self.current, "name": name, "passed": bool(passed), "detail": detail})
        self.log(f"CHECK {'PASS' if passed else 'FAIL'}: {name} -- {detail}")

    def save(self) -> None:
        self.report["elapsed_s"] = round(self.elapsed(), 2)
        tmp = self.out / "gpu_check.json.tmp"
        tmp.write_text(json.dumps(self.report, indent=1, default=_jsonable))
        tmp.replace(self.out / "gpu_check.json")

    def device(self):
        import torch
        return torch.device(self.device_name)


def _jsonable(v):
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    return repr(v)


# ------------------------------------------------------------------------------------- helpers
def sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory() -> None:
    import gc
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_command(cmd: list[str], timeout: float, env: dict | None = None) -> tuple[int, str]:
    """(exit code, stdout+stderr) of `cmd` run from the repository root in its own process group,
    which is killed as a whole when it outlives `timeout` (exit code 124, what it printed so far
    kept) or the step is stopped (torchrun's workers included)."""
    env = {**os.environ, **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=max(timeout, 1.0))
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        _stop_group(proc)
        return 124, _rest(proc) + f"\n[stopped: still running after {max(timeout, 1.0):.0f} s]"
    except BaseException:
        _stop_group(proc)
        _rest(proc)
        raise


def _rest(proc) -> str:
    """What a stopped command printed; a stray grandchild holding the pipe open is not waited for."""
    try:
        return proc.communicate(timeout=5)[0] or ""
    except subprocess.TimeoutExpired:
        proc.stdout.close()
        return "[output pipe still held open by a leftover process]"


def _stop_group(proc) -> None:
    """SIGTERM to the command's process group (torchrun passes it on to its workers, which run in
    sessions of their own), then SIGKILL to whatever of the group is left after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        if wait:
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bare_rate(model, device, precision: str, batch: int, seconds: float, warmup: int = 3, size: int = 32) -> float:
    """Images/s of model(x).argmax(1) on a fixed batch, after `warmup` calls (a compiled model
    compiles and records its CUDA graphs there), timed between two synchronisations."""
    import torch

    from csrs_core.runtime.device import autocast
    x = torch.rand((batch, 3, size, size), device=device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device, precision):
        for _ in range(warmup):
            model(x).argmax(1)
        sync(device)
        done, t0 = 0, time.perf_counter()
        while done == 0 or time.perf_counter() - t0 < seconds:
            model(x).argmax(1)
            done += batch
        sync(device)
    return done / (time.perf_counter() - t0)


def random_checkpoint(path: Path, arch: str, num_classes: int = 10):
    """An untrained `arch` saved as a CSRS checkpoint (what counts_record takes)."""
    from csrs_core.models.architectures import build_model
    from csrs_core.models.checkpoints import save_checkpoint
    model = build_model(arch, num_classes, [0.5] * 3, [0.25] * 3)
    save_checkpoint(path, model, {"arch": arch, "classes": [f"c{i}" for i in range(num_classes)],
                                  "dataset": "gpu-check-random", "sigma": 0.25, "method": "untrained",
                                  "mean": [0.5] * 3, "std": [0.25] * 3})
    return path


def random_images(count: int, first_index: int, size: int = 32, num_classes: int = 10):
    """An ImageSet of random uint8 images (indices from first_index, so two sets never share a key)."""
    import numpy as np
    import torch

    from csrs_core.data import ImageSet
    gen = torch.Generator().manual_seed(first_index)
    images = torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, num_classes, (count,), generator=gen)
    return ImageSet("gpu-check-random", "test", images, labels, [f"c{i}" for i in range(num_classes)],
                    indices=np.arange(first_index, first_index + count))


def compare_votes(a, b, n_a: int, n_b: int, alpha: float = FAMILY_ALPHA, seed: int = 0) -> dict:
    """Do two count tables [N, m] come from the same per-example vote distributions?

    Per example and class, the two-proportion z statistic |p_a - p_b| / sqrt(p(1-p)(1/n_a + 1/n_b))
    (p: pooled share; a normal approximation, sound for n in the hundreds) against the Bonferroni
    bound z* = Phi^-1(1 - alpha / (2 N m)). A top class that differs is beyond sampling error only
    when the share of one of the two classes involved differs beyond z*. The mean total-variation
    distance is set against its distribution when both tables are drawn from the pooled shares
    (200 simulations)."""
    import numpy as np
    from scipy.stats import norm
    a, b = np.asarray(a, float), np.asarray(b, float)
    N, m = a.shape
    pa, pb, pooled = a / n_a, b / n_b, (a + b) / (n_a + n_b)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    z = np.divide(np.abs(pa - pb), se, out=np.zeros_like(se), where=se > 0)
    z_star = float(norm.isf(alpha / (2 * N * m)))
    top_a, top_b = a.argmax(1), b.argmax(1)
    rows = np.arange(N)
    differ = top_a != top_b
    beyond = differ & ((z[rows, top_a] > z_star) | (z[rows, top_b] > z_star))
    tv = 0.5 * np.abs(pa - pb).sum(1)
    rng = np.random.default_rng(seed)
    p = pooled / pooled.sum(1, keepdims=True)
    null = [0.5 * np.abs(rng.multinomial(n_a, p) / n_a - rng.multinomial(n_b, p) / n_b).sum(1).mean()
            for _ in range(200)]
    return {"examples": N, "classes": m, "z_star": z_star, "max_z": float(z.max()),
            "examples_outside_bound": int((z > z_star).any(1).sum()),
            "top_class_differs": int(differ.sum()), "top_class_differs_beyond_error": int(beyond.sum()),
            "identical_rows": int((a == b).all(1).sum()), "mean_tv": float(tv.mean()), "max_tv": float(tv.max()),
            "null_mean_tv": float(np.mean(null)), "null_mean_tv_q995": float(np.quantile(null, 0.995))}


def log_comparison(ctx: Check, label: str, c: dict) -> None:
    ctx.log(f"{label}: top class differs for {c['top_class_differs']} of {c['examples']} "
            f"({c['top_class_differs_beyond_error']} beyond sampling error); identical rows {c['identical_rows']}; "
            f"max z {c['max_z']:.2f} (bound z* {c['z_star']:.2f}, {c['examples_outside_bound']} examples outside); "
            f"mean TV {c['mean_tv']:.4f} (same-distribution simulation: mean {c['null_mean_tv']:.4f}, "
            f"99.5% {c['null_mean_tv_q995']:.4f})")


# --------------------------------------------------------------------------------------- steps
@step("environment", "versions, GPUs, importable packages", estimate=(5, 3), cap=(40, 12))
def step_environment(ctx: Check, res: dict) -> None:
    """Versions, GPUs and every package the steps import (a missing one named by its wheel)."""
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
    for module in CSRS_MODULES:
        try:
            importlib.import_module(module)
        except Exception as exc:
            broken[module] = f"{exc.__class__.__name__}: {exc}"
    res["csrs_import_errors"] = broken
    ctx.log(f"csrs_core modules the steps use: {'all import' if not broken else broken}")
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


def find_gpu_tests(tests_dir: Path, streamlit_present: bool) -> tuple[list, list, dict]:
    """(tests that skip without a GPU, tests that run differently on one, files left out and why).

    A test skips without a GPU when a decorator of it (or the file's pytestmark) mentions cuda; it
    runs differently when it launches torchrun, itself or through a helper function of its file
    (device auto gives NCCL and a GPU per rank there).
    Files that import Streamlit (or the dashboard) at module level are left out when it is absent."""
    needs_gpu, sensitive, excluded = [], [], {}
    for path in sorted(tests_dir.glob("test_*.py")):
        src = path.read_text()
        tree = ast.parse(src)
        rel = path.relative_to(ROOT).as_posix()
        imported = set()
        for node in tree.body:
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported |= set(node.module.split("."))
        needs = imported & {"streamlit", "dashboard", "dashboard_fixtures"}
        if needs and not streamlit_present:
            excluded[rel] = f"imports {', '.join(sorted(needs))} (Streamlit is not installed)"
            continue
        file_mark = any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
                        and "cuda" in (ast.get_source_segment(src, n) or "") for n in tree.body)
        launchers = {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("test")
                     and "torch.distributed.run" in (ast.get_source_segment(src, n) or "")}
        for node, prefix in _test_functions(tree):
            decorators = " ".join(ast.get_source_segment(src, d) or "" for d in node.decorator_list)
            calls = {c.func.id for c in ast.walk(node) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
            node_id = f"{rel}::{prefix}{node.name}"
            if file_mark or "cuda" in decorators:
                needs_gpu.append(node_id)
            elif "torch.distributed.run" in (ast.get_source_segment(src, node) or "") or calls & launchers:
                sensitive.append(node_id)
    return needs_gpu, sensitive, excluded


def _test_functions(tree):
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
            yield node, ""
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for sub in node.body:
                if isinstance(sub, ast.FunctionDef) and sub.name.startswith("test"):
                    yield sub, f"{node.name}::"


@step("cuda_tests", "pytest on the tests that skip without a GPU", estimate=(40, 4), cap=(100, 20))
def step_cuda_tests(ctx: Check, res: dict) -> None:
    """Runs the tests that skip without a GPU, then (a second pytest, so a hang there cannot hide
    the first group's result) those that run differently on one (torchrun with device auto). The
    dry run runs the first group only (on a CPU they skip at once) and lists the second."""
    streamlit_present = importlib.util.find_spec("streamlit") is not None
    needs_gpu, sensitive, excluded = find_gpu_tests(ROOT / "tests", streamlit_present)
    res.update(skip_without_gpu=needs_gpu, differ_on_gpu=sensitive, excluded_files=excluded)
    ctx.log("grep -n cuda tests/*.py:")
    for path in sorted((ROOT / "tests").glob("*.py")):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if "cuda" in line:
                ctx.log(f"  {path.relative_to(ROOT)}:{i}: {line.strip()[:110]}")
    for f, why in excluded.items():
        ctx.log(f"left out: {f}: {why}")
    ctx.log(f"skip without a GPU ({len(needs_gpu)}): {', '.join(needs_gpu) or 'none'}")
    ctx.log(f"run differently on a GPU, torchrun on device auto ({len(sensitive)}): {', '.join(sensitive) or 'none'}")
    if not needs_gpu and not sensitive:
        raise Skip("no test in tests/ skips without a GPU or launches torchrun")
    failed = []
    if needs_gpu:
        failed += _pytest(ctx, res, "skip_without_gpu", needs_gpu)
    if sensitive and ctx.dry:
        ctx.log("dry run: the torchrun tests are only listed (on a CPU they are the ordinary CPU tests)")
    elif sensitive:
        failed += _pytest(ctx, res, "differ_on_gpu", sensitive)
    if failed:
        raise StepFailed("; ".join(failed))


def _pytest(ctx: Check, res: dict, group: str, node_ids: list) -> list:
    """Runs pytest on node_ids within the step's time; returns a failure message, if any."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *node_ids]
    ctx.log(f"$ python {' '.join(cmd[1:])}")
    t = time.monotonic()
    rc, out = run_command(cmd, timeout=ctx.left() - 2)
    lines = out.strip().splitlines()
    res[group + "_run"] = {"command": " ".join(cmd[1:]), "rc": rc, "seconds": round(time.monotonic() - t, 1),
                           "summary": lines[-1] if lines else "", "output": out[-20_000:]}
    for line in lines[-40:]:
        ctx.log(f"| {line}")
    return [] if rc == 0 else [f"{group}: pytest exit code {rc}: {lines[-1] if lines else ''}"]


@step("throughput", "bare forward (ResNet-110 on the GPU) and stage A (counts_record, precision auto)",
      estimate=(90, 6), cap=(230, 20))
def step_throughput(ctx: Check, res: dict) -> None:
    """The limit (fastest bare forward over precision x eager/compiled x batch), then stage A
    through csrs_core.sampling.stage_a.counts_record at precision auto, its ratio to the limit, and the
    wall time it implies for BIG_JOB."""
    import torch

    from csrs_core.models.architectures import build_model
    from csrs_core.sampling.plan import PRECISIONS
    s, dev = ctx.sizes, ctx.device()
    kind = "cuda" if dev.type == "cuda" else "cpu"
    precisions = PRECISIONS[kind]
    model = build_model(s.arch, 10, [0.5] * 3, [0.25] * 3).to(dev).eval().to(memory_format=torch.channels_last)
    ctx.log(f"{s.arch}, 10 classes, 32x32, channels-last; precisions {', '.join(precisions)}; "
            f"batches {', '.join(map(str, s.batches))}; {s.bare_seconds:.2f} s per measurement after 3 warm-up calls")
    rates = {}
    for p in precisions:
        for b in s.batches:
            rates[f"eager/{p}/{b}"] = r = bare_rate(model, dev, p, b, s.bare_seconds)
            ctx.log(f"bare forward eager    {p:4s} batch {b:5d}: {r:10.0f} images/s")
    eager_best = max(rates, key=rates.get)
    stage_a_reserve = s.stage_a_seconds * 2 + (20 if kind == "cuda" else 2)  # warm-up, plan, timed run
    res["bare_images_per_s"] = rates  # the same dict: compiled and plan rates join it below
    res["compile_seconds"] = _compiled_rates(ctx, model, dev, precisions, rates, stage_a_reserve)
    fastest = max(rates, key=rates.get)
    res["fastest"] = {"setting": fastest, "images_per_s": rates[fastest]}
    ctx.log(f"FASTEST bare forward: {fastest} = {rates[fastest]:.0f} images/s (best eager: {eager_best} = "
            f"{rates[eager_best]:.0f})")
    del model
    free_memory()
    _stage_a(ctx, res, dev, rates, eager_best, fastest)


def _compiled_rates(ctx, model, dev, precisions, rates, reserve) -> dict:
    """Adds 'compiled/p/b' rates (each precision at its best eager batch, best precisions first)
    while the step's time allows; returns each compile's seconds (or why there is none)."""
    import torch

    from csrs_core.sampling.plan import compile_model
    s = ctx.sizes
    order = sorted(precisions, key=lambda p: -max(v for k, v in rates.items() if k.split("/")[1] == p))
    order = order[:s.compile_precisions]
    seconds, guess = {}, 60.0 if dev.type == "cuda" else 10.0
    for p in order:
        if ctx.left() - reserve < guess:
            ctx.log(f"compiled {p}: skipped, {ctx.left():.0f} s left in this step and ~{guess:.0f} s needed "
                    f"(stage A keeps {reserve:.0f} s)")
            seconds[p] = None
            continue
        b = int(max((k for k in rates if k.startswith(f"eager/{p}/")), key=rates.get).split("/")[2])
        torch._dynamo.reset()
        compiled = (compile_model(model, dev) if s.compile_backend == "project"
                    else torch.compile(model, backend="eager", dynamic=False))
        t = time.monotonic()
        key = f"compiled/{p}/{b}"
        try:
            bare_rate(compiled, dev, p, b, 0.0, warmup=3)  # compiles, records the CUDA graphs
            seconds[p] = round(time.monotonic() - t, 1)
            rates[key] = bare_rate(compiled, dev, p, b, s.bare_seconds, warmup=2)
        except Exception as exc:  # no compiler here: recorded, and eager stays the limit
            seconds[p] = f"failed after {time.monotonic() - t:.0f} s: {exc.__class__.__name__}: {str(exc)[:300]}"
            ctx.log(f"compiled {p}: {seconds[p]}")
            break
        guess = max(seconds[p] * 1.2, 5.0)
        label = ("CUDA graphs (torch.compile mode=reduce-overhead)" if s.compile_backend == "project" and
                 dev.type == "cuda" else f"torch.compile ({s.compile_backend} backend)")
        ctx.log(f"bare forward compiled {p:4s} batch {b:5d}: {rates[key]:10.0f} images/s   "
                f"[{label}; compile + warm-up {seconds[p]:.1f} s]")
        del compiled
    torch._dynamo.reset()
    return seconds


def _stage_a(ctx, res, dev, rates, eager_best, fastest) -> None:
    """counts_record on random images with a random-weight checkpoint of the same architecture:
    a warm-up job large enough to be measured (the plan is cached), then the timed job."""
    from csrs_core.sampling.plan import MEASURE_WORTH_SAMPLES
    from csrs_core.sampling.stage_a import counts_record
    s = ctx.sizes
    per_image = s.stage_a_n0 + s.stage_a_n
    ckpt = random_checkpoint(ctx.tmp / f"{s.arch}-random.pt", s.arch)
    warm = max(2, -(-MEASURE_WORTH_SAMPLES // per_image)) if not ctx.dry else 2
    t = time.monotonic()
    counts_record(ckpt, random_images(warm, 10**6), s.stage_a_n0, s.stage_a_n, device=str(dev), precision="auto")
    res["warmup_seconds"] = round(time.monotonic() - t, 1)
    ctx.log(f"stage A warm-up: {warm} images x {per_image} (measures and caches the auto plan) "
            f"{res['warmup_seconds']:.1f} s")
    expected = rates[eager_best]  # a job this size runs eager (compiling pays only beyond COMPILE_WORTH_S)
    fits = max(ctx.left() - 5, 1) * 0.6 * expected / per_image
    count = int(min(max(s.stage_a_seconds * expected / per_image, s.stage_a_images[0]), s.stage_a_images[1], fits))
    count = max(count, 1)
    data = random_images(count, 0)
    t = time.perf_counter()
    record = counts_record(ckpt, data, s.stage_a_n0, s.stage_a_n, device=str(dev), precision="auto")
    sync(dev)
    wall = time.perf_counter() - t
    rate = count * per_image / wall
    meta = record.meta
    plan = f"{meta['runtime']}/{meta['precision']}/{meta['batch']}"
    if plan not in rates:  # the plan's batch may lie outside the sweep
        rates[plan] = bare_rate(_plan_model(ckpt, dev), dev, meta["precision"], meta["batch"], s.bare_seconds)
    ratio, own = rate / rates[fastest], rate / rates[plan]
    samples = BIG_JOB[0] * (BIG_JOB[1] + BIG_JOB[2])
    best_compiled = max((v for k, v in rates.items() if k.startswith("compiled/")), default=None)
    res["stage_a"] = {"images": count, "n0": s.stage_a_n0, "n": s.stage_a_n, "seconds": round(wall, 2),
                      "images_per_s": rate, "plan": plan, "bare_at_plan": rates[plan],
                      "ratio_to_fastest": ratio, "ratio_to_bare_at_plan": own,
                      "big_job": dict(zip(("images", "n0", "n"), BIG_JOB)),
                      "big_job_hours_at_this_rate": samples / rate / 3600,
                      "big_job_hours_compiled_projection":
                          samples / (best_compiled * own) / 3600 if best_compiled else None}
    ctx.shared["stage_a_rate"] = rate
    ctx.log(f"stage A (counts_record, precision auto -> {plan}): {count} images x (n0 {s.stage_a_n0} + n "
            f"{s.stage_a_n}) in {wall:.1f} s = {rate:.0f} images/s")
    ctx.log(f"RATIO stage A / fastest bare forward ({fastest}) = {ratio:.3f}; / bare forward at its own plan "
            f"({plan}, {rates[plan]:.0f}/s) = {own:.3f}")
    a = res["stage_a"]
    ctx.log(f"extrapolated: {BIG_JOB[0]:,} images x (n0 {BIG_JOB[1]} + n {BIG_JOB[2]:,}) = {samples:.3g} samples: "
            f"{a['big_job_hours_at_this_rate']:.2f} h at this rate"
            + (f"; {a['big_job_hours_compiled_projection']:.2f} h projected compiled (such a job compiles: "
               f"fastest compiled bare forward x the overhead ratio {own:.3f})" if best_compiled else ""))
    ctx.check("stage A / fastest bare forward >= 0.9", ratio >= 0.9, f"{ratio:.3f} ({plan} vs {fastest})")


def _plan_model(ckpt, dev):
    import torch

    from csrs_core.models.checkpoints import load_model
    return load_model(ckpt)[0].to(dev).eval().to(memory_format=torch.channels_last)


@step("decisions", "fp32 vs the chosen precision; this device's counts vs the stored CPU counts",
      estimate=(25, 6), cap=(90, 20))
def step_decisions(ctx: Check, res: dict) -> None:
    """On the shipped checkpoint and its test sample: how often the top class differs between fp32
    and the other precisions with the same noise, then a certification on this device compared
    with the stored CPU record (same examples, n0, n, seed, precision; other noise generator)."""
    import numpy as np

    from csrs_core.data import load_dataset
    from csrs_core.models.checkpoints import load_model
    from csrs_core.sampling.counts import sample_counts
    from csrs_core.sampling.plan import PRECISIONS, choose_plan
    s, dev = ctx.sizes, ctx.device()
    ckpt, sample = ROOT / ctx.args.checkpoint, ROOT / ctx.args.sample
    model, meta = load_model(ckpt)
    m, sigma = len(meta["classes"]), meta["sigma"]
    data = load_dataset(f"sample:{sample}")
    part = data.subset(np.arange(s.decision_images))
    plan = choose_plan(model, dev, "auto", None, tuple(part.images.shape[1:]),
                       samples=s.decision_images * s.decision_copies)
    ctx.log(f"{ckpt.relative_to(ROOT)} ({meta['arch']}, sigma {sigma}) on {s.decision_images} images of "
            f"{sample.relative_to(ROOT)} x {s.decision_copies} noisy copies, same noise for every precision; "
            f"auto chose {plan.precision}, batch {plan.batch}")
    votes = {p: sample_counts(plan.model, part.images, part.indices, m, sigma, 0, s.decision_copies, plan.batch,
                              device=dev, precision=p)[1] for p in PRECISIONS["cuda" if dev.type == "cuda" else "cpu"]}
    res["chosen_precision"], res["precision_vs_fp32"] = plan.precision, {}
    for p, counts in votes.items():
        if p == "fp32":
            continue
        differ = int((counts.argmax(1) != votes["fp32"].argmax(1)).sum())
        tv = np.abs(counts - votes["fp32"]).sum(1) / 2 / s.decision_copies
        res["precision_vs_fp32"][p] = {"top_class_differs": differ, "mean_tv": float(tv.mean()),
                                       "max_tv": float(tv.max())}
        ctx.log(f"fp32 vs {p}{' (chosen)' if p == plan.precision else ''}: top class differs for {differ} of "
                f"{s.decision_images}; mean total-variation distance {tv.mean():.4f} (max {tv.max():.4f})")
    if plan.precision != "fp32":
        chosen = res["precision_vs_fp32"][plan.precision]
        ctx.check(f"fp32 vs {plan.precision}: top class differs for at most 2% of examples",
                  chosen["top_class_differs"] <= 0.02 * s.decision_images,
                  f"{chosen['top_class_differs']} of {s.decision_images}, mean TV {chosen['mean_tv']:.4f}")
    del model, plan
    free_memory()
    _against_stored(ctx, res, dev, ckpt, data)


def _against_stored(ctx, res, dev, ckpt: Path, data) -> None:
    """counts_record on this device (a copy of the checkpoint, so nothing is written beside the
    shipped one) with the stored CPU record's settings, then compare_votes on the two."""
    from csrs_core.certification.certificates import certify_from_counts
    from csrs_core.certification.cost import CostMatrix
    from csrs_core.certification.metrics import summarize
    from csrs_core.sampling.stage_a import counts_record
    from csrs_core.sampling.store import list_records, load_record
    s = ctx.sizes
    stored = [r for r in list_records(ckpt) if r.status == "valid" and r.meta.get("device_type") == "cpu"]
    if not stored:
        res["against_stored"] = "no valid CPU record beside the checkpoint"
        ctx.log("CUDA vs stored CPU counts: no valid CPU record beside the checkpoint; not compared")
        return
    info = max(stored, key=lambda r: (r.meta["n"], r.meta["num_examples"]))
    record = load_record(info.path)
    keep = slice(None) if s.cert_examples is None else slice(0, s.cert_examples)
    position = {int(i): p for p, i in enumerate(data.indices)}
    missing = [int(i) for i in record.indices[keep] if int(i) not in position]
    if missing:
        raise StepFailed(f"{len(missing)} examples of {info.path.name} are not in {ctx.args.sample}")
    part = data.subset([position[int(i)] for i in record.indices[keep]])
    if s.cert_examples is None and part.content_digest() != info.meta["content_sha256"]:
        raise StepFailed(f"the sample's images are not the ones {info.path.name} was made from")
    rm = record.meta
    precision = s.cert_precision or rm["precision"]
    n0, n = s.cert_n0_n or (rm["n0"], rm["n"])
    copy = ctx.tmp / "stored-check" / ckpt.name
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ckpt, copy)
    t = time.perf_counter()
    new = counts_record(copy, part, n0, n, seed=rm["seed"], device=str(dev), precision=precision)
    wall = time.perf_counter() - t
    ctx.log(f"certified {len(part)} examples x (n0 {n0} + n {n}) on {dev} at {precision} (stored record "
            f"{info.path.name}: {rm['device']}, {rm['precision']}, n0 {rm['n0']}, n {rm['n']}) in {wall:.1f} s")
    old0, old = record.counts0[keep], record.counts[keep]
    counts = compare_votes(old, new.counts, rm["n"], n)
    selection = compare_votes(old0, new.counts0, rm["n0"], n0)
    cost = CostMatrix.seedwise(len(rm["classes"]), [3])
    summaries = {name: summarize(certify_from_counts(c0, c, record.labels[keep], cost, sigma=rm["sigma"],
                                                     alpha=0.001), 0.25)
                 for name, (c0, c) in (("stored_cpu", (old0, old)), ("this_run", (new.counts0, new.counts)))}
    res["against_stored"] = {"record": info.path.name, "precision": precision, "seconds": round(wall, 2),
                             "counts": counts, "counts0": selection, "summary_seedwise3_eps025": summaries}
    log_comparison(ctx, f"counts (n = {n})", counts)
    log_comparison(ctx, f"counts0 (n0 = {n0})", selection)
    for name, sm in summaries.items():
        ctx.log(f"{name}: Acc {sm['acc']:.3f}, Rob_cs {sm['rob_cs']:.3f} (seedwise:3, eps 0.25)")
    ctx.log(f"test: per example and class, two-proportion z against z* = Phi^-1(1 - {FAMILY_ALPHA}/(2 N m)) "
            f"(Bonferroni, family-wise error {FAMILY_ALPHA}); a differing top class is beyond sampling error when "
            "either class's share differs beyond z*; TV: against 200 draws of both tables from the pooled shares")
    here = f"{dev.type.upper()} vs stored CPU counts"
    ctx.check(f"{here}: every class share within the two-proportion bound",
              counts["examples_outside_bound"] == 0, f"{counts['examples_outside_bound']} examples outside, "
              f"max z {counts['max_z']:.2f} vs z* {counts['z_star']:.2f}")
    ctx.check(f"{here}: same top class, up to sampling error", counts["top_class_differs_beyond_error"] == 0,
              f"{counts['top_class_differs']} differ, {counts['top_class_differs_beyond_error']} beyond sampling error")
    ctx.check(f"{here}: mean TV within the same-distribution simulation's 99.5% quantile",
              counts["mean_tv"] <= counts["null_mean_tv_q995"],
              f"{counts['mean_tv']:.4f} vs {counts['null_mean_tv_q995']:.4f}")


@step("smoothed_classifier", "csrs_core.SmoothedClassifier on this device", estimate=(8, 4), cap=(45, 12))
def step_smoothed_classifier(ctx: Check, res: dict) -> None:
    """design.md section 5's API on the shipped model: sample (timed), then checks: counts' shapes
    and sums, the same counts for the same seed, the same counts as stage A's sample_counts at the
    plan it ran, certify == certify_from_counts of those counts, predict in {-1, 0..m-1}."""
    import inspect

    import numpy as np
    import torch

    import csrs_core
    from csrs_core.certification.certificates import certify_from_counts
    from csrs_core.certification.cost import CostMatrix
    from csrs_core.data import load_dataset
    from csrs_core.models.checkpoints import load_model
    from csrs_core.sampling.counts import sample_counts
    cls = getattr(csrs_core, "SmoothedClassifier", None)
    if cls is None:
        ctx.log("csrs_core.SmoothedClassifier is absent")
        raise Skip("csrs_core.SmoothedClassifier is absent (design.md section 5 names it)")
    s, dev = ctx.sizes, ctx.device()
    model, meta = load_model(ROOT / ctx.args.checkpoint)
    m, sigma = len(meta["classes"]), meta["sigma"]
    data = load_dataset(f"sample:{ROOT / ctx.args.sample}").subset(np.arange(s.smooth_images))
    kw = {"device": str(dev)} if "device" in inspect.signature(cls).parameters else {}
    smooth = cls(model, num_classes=m, sigma=sigma, **kw)
    ctx.log(f"{smooth!r}")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t = time.perf_counter()
    c0, c = smooth.sample(data.images, n0=100, n=s.smooth_n, seed=0)
    sync(dev)
    wall = time.perf_counter() - t
    plan = getattr(smooth, "last_plan", None) or {}
    rate = s.smooth_images * (100 + s.smooth_n) / wall
    res.update(images=s.smooth_images, n=s.smooth_n, sample_seconds=round(wall, 2), images_per_s=rate, plan=plan)
    if dev.type == "cuda":
        res["peak_cuda_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
    ctx.log(f"sample: {s.smooth_images} images x (100 + {s.smooth_n}) in {wall:.2f} s = {rate:.0f} images/s"
            + (f" (stage A: {ctx.shared['stage_a_rate']:.0f}, another model)" if "stage_a_rate" in ctx.shared else "")
            + (f"; peak CUDA memory {res['peak_cuda_mib']:.0f} MiB" if "peak_cuda_mib" in res else "")
            + f"; plan {plan or 'not reported'}")
    c0, c = np.asarray(c0), np.asarray(c)
    ctx.check("sample: shapes [N, m] and sums n0, n", c0.shape == c.shape == (s.smooth_images, m)
              and (c0.sum(1) == 100).all() and (c.sum(1) == s.smooth_n).all(), f"shapes {c0.shape}, {c.shape}")
    again0, again = smooth.sample(data.images, n0=100, n=s.smooth_n, seed=0)
    ctx.check("sample: same seed, same counts", np.array_equal(c, np.asarray(again))
              and np.array_equal(c0, np.asarray(again0)), "two calls with seed 0")
    if plan.get("precision") and plan.get("batch"):
        ref0, ref = sample_counts(model, data.images, np.arange(s.smooth_images), m, sigma, 100, s.smooth_n,
                                  plan["batch"], 0, dev, plan["precision"])
        ctx.check("sample == stage A's sample_counts at the same plan", np.array_equal(c, ref)
                  and np.array_equal(c0, ref0), f"{int((c == ref).all(1).sum())} of {len(c)} rows identical")
    cost = CostMatrix.seedwise(m, [3])
    table = smooth.certify(data.images, data.labels.numpy(), cost, n0=100, n=s.smooth_n, alpha=0.001, seed=0)
    expected = certify_from_counts(c0, c, data.labels.numpy(), cost, sigma=sigma, alpha=0.001)
    cols = ["label", "pred_std", "r1", "sensitive", "r2", "cost_robust_radius", "pred"]
    same = all(col in table and _same_column(table[col], expected[col]) for col in cols)
    ctx.check("certify == certify_from_counts(sample(...)) for the same seed", same,
              f"columns missing: {', '.join(c for c in cols if c not in table) or 'none'}")
    pred = np.asarray(smooth.predict(data.images, n=min(1000, s.smooth_n), alpha=0.001, seed=0))
    res["predict"] = pred.tolist()
    ctx.check("predict: one class or -1 per image", pred.shape == (s.smooth_images,)
              and bool(((pred >= -1) & (pred < m)).all()), f"abstained on {int((pred == -1).sum())} of {len(pred)}")


def _same_column(a, b) -> bool:
    import numpy as np
    try:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        return True
    except AssertionError:
        return False


@step("training", "MACER / CS-MACER step vs bare cross-entropy step", estimate=(20, 2), cap=(60, 12))
def step_training(ctx: Check, res: dict) -> None:
    """scripts/bench_train.py's `run` (noise, forward, loss, backward, SGD step) with the losses as
    training calls them (parts as device tensors, cost matrix on the device), interleaved rounds;
    also MACER as bench_train.py calls it (parts as floats: a host synchronisation per step)."""
    import torch
    import torch.nn.functional as F

    from csrs_core.certification.cost import CostMatrix
    from csrs_core.models.architectures import build_model
    from csrs_core.training.losses import cs_macer_loss, macer_loss
    bench = _load_script("bench_train")
    s, dev = ctx.sizes, ctx.device()
    cost = torch.as_tensor(CostMatrix.seedwise(10, [3]).matrix, device=dev)
    losses = {
        "bare CE": lambda z, y, k: F.cross_entropy(z.float(), y.repeat_interleave(k)),
        "MACER": lambda z, y, k: macer_loss(z.view(len(y), k, -1), y, sigma=0.25, as_tensors=True)[0],
        "CS-MACER": lambda z, y, k: cs_macer_loss(z.view(len(y), k, -1), y, cost, sigma=0.25, as_tensors=True)[0],
        "MACER, float parts": lambda z, y, k: macer_loss(z.view(len(y), k, -1), y, sigma=0.25)[0],
    }
    for arch in s.train_archs:
        model = build_model(arch, 10, [0.5] * 3, [0.25] * 3).to(dev).to(memory_format=torch.channels_last).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = torch.rand(s.train_batch, 3, 32, 32, device=dev)
        y = torch.randint(0, 10, (s.train_batch,), device=dev)
        for fn in losses.values():  # warm-up: every loss's kernels once
            bench.run(model, opt, x, y, s.train_k, fn, 1, dev, s.train_precision)
        rates = {name: [] for name in losses}
        for _ in range(s.train_rounds):
            for name, fn in losses.items():
                rates[name].append(bench.run(model, opt, x, y, s.train_k, fn, s.train_steps, dev, s.train_precision))
        med = {name: statistics.median(r) for name, r in rates.items()}
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


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"_csrs_script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _two_ranks_possible(ctx) -> bool:
    import torch
    return ctx.dry or torch.cuda.device_count() >= 2


@step("distributed", "2-rank certification via torchrun (NCCL on GPUs)", estimate=(40, 12), cap=(120, 25),
      applies=_two_ranks_possible)
def step_distributed(ctx: Check, res: dict) -> None:
    """`python -m torch.distributed.run --nproc-per-node 2 -m csrs_core -- certify ...` on two GPUs
    (NCCL); the merged record must equal counts sampled in one process. The dry run runs it on
    the CPU with gloo."""
    import numpy as np
    import torch

    from csrs_core.data import load_dataset, select_examples
    from csrs_core.models.checkpoints import load_model
    from csrs_core.sampling.counts import sample_counts
    from csrs_core.sampling.store import cert_dir, list_records, load_record
    s, dev = ctx.sizes, ctx.device()
    gpus = torch.cuda.device_count()
    if dev.type == "cuda" and gpus < 2:
        ctx.log(f"skipped: torch.cuda.device_count() = {gpus}; a 2-rank NCCL run needs 2 GPUs")
        raise Skip(f"torch.cuda.device_count() = {gpus}: a 2-rank NCCL run needs 2 GPUs")
    backend = "NCCL" if dev.type == "cuda" else "gloo (dry run: CPU ranks)"
    copy = ctx.tmp / "distributed" / Path(ctx.args.checkpoint).name
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / ctx.args.checkpoint, copy)
    sample = ROOT / ctx.args.sample
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
           "-m", "csrs_core", "--", "certify", "--checkpoint", str(copy), "--dataset", f"sample:{sample}",
           "--num-examples", str(s.dist_examples), "--n0", str(s.dist_n0), "--n", str(s.dist_n), "--quiet"]
    cmd += ["--precision", "bf16"] if dev.type == "cuda" else ["--device", "cpu", "--precision", "fp32",
                                                               "--batch", "16", "--threads", "1"]
    res["command"] = " ".join(cmd[1:])
    ctx.log(f"{backend}: $ python {res['command']}")
    t = time.monotonic()
    rc, out = run_command(cmd, timeout=ctx.left() - 5)
    res.update(rc=rc, seconds=round(time.monotonic() - t, 1), output=out[-8_000:])
    for line in out.strip().splitlines()[-8:]:
        ctx.log(f"| {line}")
    if rc != 0:
        raise StepFailed(f"torchrun exit code {rc}")
    [info] = [r for r in list_records(copy) if r.status == "valid"]
    merged = info.meta
    data = load_dataset(f"sample:{sample}")
    data = data.subset(select_examples(data.labels.numpy(), s.dist_examples))
    model, meta = load_model(copy)
    one0, one = sample_counts(model, data.images, data.indices, len(meta["classes"]), meta["sigma"], s.dist_n0,
                              s.dist_n, merged["batch"], device=dev, precision=merged["precision"])
    record = load_record(info.path)
    same = int((record.counts == one).all(1).sum())
    res.update(merged_record=info.path.name, identical_rows=same, examples=len(one),
               leftover_shards=[p.name for p in cert_dir(copy).glob("*rank*-of-*.npz")])
    ctx.log(f"merged record {info.path.name} ({merged['device']}, {merged['precision']}, batch {merged['batch']}): "
            f"{same} of {len(one)} rows equal to one process on {dev}; torchrun took {res['seconds']} s")
    ctx.check("2 ranks merge into the counts one process samples", same == len(one) and np.array_equal(
        record.counts0, one0) and not res["leftover_shards"], f"{same} of {len(one)} rows identical")


# -------------------------------------------------------------------------------------- runner
def run_step(ctx: Check, index: int, s: Step, reserve: float) -> None:
    """Runs one step within its share of the budget; records status, reason, seconds, results
    and any traceback, then saves the report."""
    entry = {"title": s.title, "status": None, "reason": None, "seconds": 0.0, "results": {}, "error": None}
    ctx.report["steps"][s.name] = entry
    ctx.current = s.name
    ctx.log(f"== [{index}/{len(STEPS)}] {s.name}: {s.title} (at +{ctx.elapsed():.1f} s) ==", indent=False)
    left = ctx.budget - ctx.elapsed()
    estimate, cap = (s.estimate[1], s.cap[1]) if ctx.dry else (s.estimate[0], s.cap[0])
    if ctx.args.steps and s.name not in ctx.args.steps:
        entry.update(status="skipped", reason="not selected (--steps)")
    elif left < estimate:
        entry.update(status="skipped", reason=f"would exceed the time budget: needs ~{estimate:.0f} s, "
                                              f"{left:.0f} s left of {ctx.budget:.0f} s")
    if entry["status"]:
        ctx.log(f"-- {s.name}: skipped ({entry['reason']})", indent=False)
        ctx.save()
        return
    allowed = min(cap, max(estimate, left - reserve), left)
    ctx.deadline = time.monotonic() + allowed
    grace = 5.0 if ctx.dry else 10.0
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, allowed + grace)
    t = time.monotonic()
    try:
        s.fn(ctx, entry["results"])
        entry["status"] = "ok"
    except Skip as exc:
        entry.update(status="skipped", reason=str(exc))
    except StepFailed as exc:
        entry.update(status="failed", reason=str(exc), error=str(exc))
    except StepTimeout:
        entry.update(status="timeout", reason=f"stopped after {allowed + grace:.0f} s (its share of the budget)",
                     error=traceback.format_exc())
    except Exception as exc:
        entry.update(status="failed", reason=f"{exc.__class__.__name__}: {exc}", error=traceback.format_exc())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        entry["seconds"] = round(time.monotonic() - t, 2)
    if entry["error"] and entry["error"].startswith("Traceback"):
        for line in entry["error"].rstrip().splitlines():
            ctx.log(f"! {line}")
    try:
        free_memory()
    except Exception:
        pass
    tail = f" ({entry['reason']})" if entry["reason"] else ""
    ctx.log(f"-- {s.name}: {entry['status']} in {entry['seconds']:.1f} s{tail}", indent=False)
    ctx.save()


def _on_alarm(signum, frame):
    raise StepTimeout()


def summarize_run(ctx: Check) -> None:
    ctx.log("== summary ==", indent=False)
    for name, e in ctx.report["steps"].items():
        ctx.log(f"{name:20s} {e['status']:8s} {e['seconds']:7.1f} s" + (f"  {e['reason']}" if e["reason"] else ""))
    for c in ctx.report["checks"]:
        ctx.log(f"{'PASS' if c['passed'] else 'FAIL'}  [{c['step']}] {c['name']}: {c['detail']}")
    ctx.log(f"total {ctx.elapsed():.1f} s (budget {ctx.budget:.0f} s); {ctx.out / 'gpu_check.log'}, "
            f"{ctx.out / 'gpu_check.json'}")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", help="folder for gpu_check.log and gpu_check.json")
    ap.add_argument("--device", default="cuda", help="cuda or cuda:N (default cuda; --dry-run uses cpu)")
    ap.add_argument("--dry-run", action="store_true", help="every step on the CPU at tiny sizes (< 60 s)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for all steps (default 380; dry run 50)")
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
            run_step(ctx, i, s, reserve)
        summarize_run(ctx)
    finally:
        ctx.save()
        ctx.logfile.close()
        shutil.rmtree(ctx.tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
