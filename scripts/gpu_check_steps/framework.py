"""The run and its steps: sizes, the Step record and its decorator, the Check (clock, budget, log,
JSON report), run_step (time share, hard limit, outcome) and the closing summary."""
from __future__ import annotations

import datetime
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]


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
    """One step: fn(ctx, results) with the seconds it needs at least and may take at most."""
    name: str
    title: str
    fn: Callable
    estimate: tuple  # (GPU run, dry run) seconds the step needs at least
    cap: tuple       # (GPU run, dry run) seconds it may take at most
    applies: Callable | None = None  # False: it will skip at once (no time kept for it)

    def needs(self, ctx) -> float:
        """Seconds to keep for this step while earlier ones run (1 when it will skip at once)."""
        if self.applies is not None and not self.applies(ctx):
            return 1.0
        return self.estimate[1] if ctx.dry else self.estimate[0]


def step(name, title, estimate, cap, applies=None):
    """Decorator: the function becomes a Step with this name, title, estimate and cap."""
    def make(fn):
        return Step(name, title, fn, estimate, cap, applies)
    return make


class Check:
    """The run: arguments, sizes, clock and budget, the log and the JSON report."""

    def __init__(self, args):
        self.args, self.dry = args, args.dry_run
        self.sizes = DRY if self.dry else GPU
        self.t0 = time.monotonic()
        self.budget = float(args.budget or (70 if self.dry else 380))
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
        """Seconds since the run started."""
        return time.monotonic() - self.t0

    def left(self) -> float:
        """Seconds to the current step's deadline."""
        return self.deadline - time.monotonic()

    def log(self, msg: str = "", indent: bool = True) -> None:
        """Writes a line to the log file and to stdout."""
        line = ("  " + msg) if indent else msg
        self.logfile.write(line + "\n")
        self.logfile.flush()
        print(line, flush=True)

    def check(self, name: str, passed: bool, detail: str) -> None:
        """A verdict beside the numbers; a failed check does not fail its step."""
        self.report["checks"].append({"step": self.current, "name": name, "passed": bool(passed), "detail": detail})
        self.log(f"CHECK {'PASS' if passed else 'FAIL'}: {name} -- {detail}")

    def save(self) -> None:
        """Rewrites gpu_check.json whole (through a temporary file, so it is never half written)."""
        self.report["elapsed_s"] = round(self.elapsed(), 2)
        tmp = self.out / "gpu_check.json.tmp"
        tmp.write_text(json.dumps(self.report, indent=1, default=_jsonable))
        tmp.replace(self.out / "gpu_check.json")

    def device(self):
        """The torch.device the steps run on."""
        import torch
        return torch.device(self.device_name)


def _jsonable(v):
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    return repr(v)


def free_memory() -> None:
    """Collects garbage and returns cached CUDA memory, if torch is loaded and has a GPU."""
    import gc
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_step(ctx: Check, index: int, total: int, s: Step, reserve: float) -> None:
    """Runs step `index` of `total` within its share of the budget (at most its cap, and no more
    than leaves `reserve` seconds to the steps after it beyond its own estimate); records status,
    reason, seconds, results and any traceback, then saves the report."""
    entry = {"title": s.title, "status": None, "reason": None, "seconds": 0.0, "results": {}, "error": None}
    ctx.report["steps"][s.name] = entry
    ctx.current = s.name
    ctx.log(f"== [{index}/{total}] {s.name}: {s.title} (at +{ctx.elapsed():.1f} s) ==", indent=False)
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
    """Logs each step's status and time, every check's verdict, the total and where the files are."""
    ctx.log("== summary ==", indent=False)
    for name, e in ctx.report["steps"].items():
        ctx.log(f"{name:20s} {e['status']:8s} {e['seconds']:7.1f} s" + (f"  {e['reason']}" if e["reason"] else ""))
    for c in ctx.report["checks"]:
        ctx.log(f"{'PASS' if c['passed'] else 'FAIL'}  [{c['step']}] {c['name']}: {c['detail']}")
    ctx.log(f"total {ctx.elapsed():.1f} s (budget {ctx.budget:.0f} s); {ctx.out / 'gpu_check.log'}, "
            f"{ctx.out / 'gpu_check.json'}")
