"""How to run a base classifier fastest on this machine: precision, batch size, eager or compiled.

`choose_plan` resolves precision 'auto' and batch None by timing short forward passes of the very
model, and caches the measurements per machine, model structure and input shape in the user's
cache folder, so they are paid once. Every candidate, eager or compiled, is timed while no other
CSRS job on the machine measures (a machine-wide lock); a timing taken while other processes load
the CPU, or whose repeated rounds disagree, serves its job only and is not cached. CPUs differ
(bf16 is 2-3x faster than fp32 with AVX-512 BF16 and 10-30x slower without), so nothing is assumed.
torch.compile is used when it repays its start-up by the compile time last measured on this machine
(a few seconds with a warm compiler cache), and before any was measured only for jobs that run five
minutes eagerly. BatchNorm layers are folded into the convolutions before them (the same function
up to rounding; csrs_core.models.folding). The precision chosen defines the base classifier, so it
is part of every certification record's key; eager or compiled and folded or not, which change
floating-point rounding only, are recorded beside it."""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import torch

from csrs_core.data import cache_dir
from csrs_core.models.folding import fold_batchnorm
from csrs_core.runtime.atomic import atomic_write_text
from csrs_core.runtime.device import autocast
from csrs_core.runtime.locks import OutputBusyError, output_lock

BATCHES = {"cpu": (64, 128, 256, 512), "cuda": (1024, 2048, 4096)}
PRECISIONS = {"cpu": ("fp32", "bf16"), "cuda": ("bf16", "fp16", "fp32")}
# Before a compile time is known, compile only jobs whose eager run would take longer: a first compile
# of ResNet-20 took ~19 s on 2 CPU cores and made it ~8 % faster, so it repays in ~4 minutes.
COMPILE_WORTH_S = {"cpu": 300.0, "cuda": 120.0}
MEASURE_WORTH_SAMPLES = 50_000  # smaller jobs, unmeasured so far, run fp32 at the middle batch size
BUSY_CORES = 0.5          # other processes using this many cores or more make a measurement "under load"
STABLE = 0.8              # the best candidate's two rounds must agree within this ratio to be cached
COMPARE_ROUNDS = 3        # alternating rounds of compiled and eager when a first compile is measured
DRIFT = (0.6, 1.4)        # a job's own rate outside this share of the cached rate discards the cache entry


def middle_batch(batches: tuple) -> int:
    """Where measuring starts, and the batch of a job too small to measure for."""
    return batches[(len(batches) - 1) // 2]


@dataclass
class Plan:
    """How stage A runs: the model (BatchNorm folded when `folded`), its precision and batch, and
    whether to compile it."""
    model: torch.nn.Module
    precision: str
    batch: int
    compiled: bool = False
    folded: bool = False
    rates: dict | None = None
    expected: float | None = None   # images per second the plan's measurement promises
    cache_key: str | None = None    # where its measurement is cached, when it came from the cache
    image_shape: tuple | None = None
    compiled_model: torch.nn.Module | None = field(default=None, repr=False)
    compile_seconds: float | None = None  # what compiling took for this job (None: not compiled)

    def runnable(self, device: torch.device) -> torch.nn.Module:
        """The model to call. When the plan compiles: compiled on first use, the time it took noted in
        the cache entry the plan came from (the figure the next plan weighs compiling by)."""
        if not self.compiled:
            return self.model
        if self.compiled_model is None:
            self.compiled_model, self.compile_seconds = compile_timed(self.model, device, self.precision, self.batch,
                                                                      self.image_shape)
            if self.cache_key is not None:
                _note_compile_seconds(self.cache_key, f"{self.precision}/{self.batch}", self.compile_seconds)
        return self.compiled_model

    def expected_seconds(self, samples: int) -> float | None:
        """How long sampling `samples` noisy images should take by the measurements, compiling
        included; None when nothing was measured."""
        if not self.expected:
            return None
        compiling = self.compiled and self.compiled_model is None
        compile_s = (self.rates or {}).get(_compile_key(f"{self.precision}/{self.batch}"), 0.0) if compiling else 0.0
        return samples / self.expected + compile_s


def _cache_file() -> Path:
    return cache_dir() / "autotune.json"


def machine_id(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = "cpu"
        try:
            with open("/proc/cpuinfo") as fh:
                name = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
    return f"{device.type}:{name}:threads{torch.get_num_threads()}:torch{torch.__version__}"


def model_id(model: torch.nn.Module, image_shape) -> str:
    """Names the structure of `model` (not its weights) and the input shape; its measurements are of
    the model with BatchNorm folded."""
    return hashlib.sha256(f"{model}:{tuple(image_shape)}:batchnorm-folded".encode()).hexdigest()[:16]


def forward_rate(model, device, precision, batch, image_shape, seconds=0.6) -> float:
    """Images per second of `model` (argmax included) at this precision and batch, after a warm-up."""
    x = torch.rand((batch, *image_shape), device=device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device, precision):
        model(x).argmax(1)
        _sync(device)
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or done == 0:
            model(x).argmax(1)
            done += batch
        _sync(device)
    return done / (time.perf_counter() - t0)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compile_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """torch.compile with CUDA graphs on GPUs (fixed batch shapes make them pay off)."""
    return torch.compile(model, mode="reduce-overhead" if device.type == "cuda" else None, dynamic=False)


def compile_timed(model, device, precision: str, batch: int, image_shape) -> tuple[torch.nn.Module, float]:
    """(`model` compiled for batches of `batch` channels-last images at `precision`, the seconds that
    took): compile_model, then one forward pass, which is when the compiler runs."""
    t = time.perf_counter()
    compiled = compile_model(model, device)
    x = torch.zeros((batch, *image_shape), device=device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device, precision):
        compiled(x)
    _sync(device)
    return compiled, time.perf_counter() - t


def _compile_key(setting: str) -> str:
    """Where a cache entry keeps the compile time of `setting` ('precision/batch')."""
    return f"compile-seconds/{setting}"


def measure_eager(model, device, image_shape, precisions, batches, seconds: float = 0.3) -> tuple[dict, bool]:
    """({'eager/precision/batch': images per second}, stable), measured where it matters: every
    precision at the middle batch size; then each precision within 10 % of the best there at the
    other batch sizes, outward from the middle, each direction stopping at the first that is slower
    (a precision several times slower, such as bf16 without native support, costs one measurement);
    then the two best candidates again: stable when each agrees with its first measurement within
    STABLE. A rate is the better of its measurements."""
    def measure(p, b):
        return forward_rate(model, device, p, b, image_shape, seconds=seconds)

    middle = batches.index(middle_batch(batches))
    rates = {f"eager/{p}/{batches[middle]}": measure(p, batches[middle]) for p in precisions}
    best = max(rates.values())
    for p in precisions:
        if rates[f"eager/{p}/{batches[middle]}"] < 0.9 * best:
            continue
        for step in (-1, 1):
            previous, i = rates[f"eager/{p}/{batches[middle]}"], middle + step
            while 0 <= i < len(batches):
                rates[f"eager/{p}/{batches[i]}"] = rate = measure(p, batches[i])
                if rate < previous:
                    break
                previous, i = rate, i + step
    again = {k: measure(k.split("/")[1], int(k.split("/")[2])) for k in sorted(rates, key=rates.get)[-2:]}
    stable = all(_steady((v, rates[k])) for k, v in again.items())
    return {k: max(v, again.get(k, 0.0)) for k, v in rates.items()}, stable


def _steady(rates) -> bool:
    """Whether repeated measurements of one candidate agree within STABLE (slowest / fastest)."""
    return min(rates) >= STABLE * max(rates)


def others_busy(device: torch.device) -> bool:
    """Whether other processes keep BUSY_CORES or more of this CPU busy (sampled for 0.3 s while
    this process waits), so that a CPU measurement now would be of a shared machine."""
    if device.type == "cuda":
        return False
    return psutil.cpu_percent(interval=0.3) / 100 * (psutil.cpu_count() or 1) >= BUSY_CORES


def _load_table() -> dict:
    try:
        return json.loads(_cache_file().read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _store(key: str, rates: dict | None) -> None:
    """Cache `rates` under `key` (None: forget the entry)."""
    table = _load_table()
    if table.get(key) == rates:
        return
    if rates is None:
        table.pop(key, None)
    else:
        table[key] = rates
    atomic_write_text(_cache_file(), json.dumps(table, indent=1))


def _note_compile_seconds(key: str, setting: str, seconds: float) -> None:
    """Record what compiling `setting` ('precision/batch') took this time in the cache entry `key`."""
    entry = _load_table().get(key)
    if isinstance(entry, dict):
        _store(key, {**entry, _compile_key(setting): round(seconds, 2)})


def review(plan: Plan, images_per_s: float, progress=None) -> None:
    """Compare a job's own measured rate with what its cached plan promised: outside DRIFT the cached
    measurement was made on a machine in another state (busy then, or busy now), so it is forgotten
    and the next job measures again."""
    if plan.cache_key is None or not plan.expected:
        return
    share = images_per_s / plan.expected
    if not DRIFT[0] <= share <= DRIFT[1]:
        _store(plan.cache_key, None)
        plan.cache_key = None
        if progress is not None:
            progress.write("plan", message=f"this job runs at {share:.2f} of the cached measurement; "
                                           "it is discarded and the next job measures again")


def _search(model, device, precision: str, batch: int | None, image_shape) -> tuple[str, tuple, tuple, str]:
    """(device kind, precisions, batches) that 'auto' and None leave to measure, and their cache key."""
    kind = "cuda" if device.type == "cuda" else "cpu"
    precisions = PRECISIONS[kind] if precision == "auto" else (precision,)
    batches = BATCHES[kind] if batch is None else (batch,)
    key = f"{machine_id(device)}|{model_id(model, image_shape)}|{','.join(precisions)}|{batches}"
    return kind, precisions, batches, key


def _worth_compiling(rates: dict, samples: int, kind: str) -> bool:
    """Whether a job of `samples` noisy images runs long enough eagerly to repay compiling."""
    return samples / max(v for k, v in rates.items() if k.startswith("eager/")) > COMPILE_WORTH_S[kind]


def _best(rates: dict, samples: int, kind: str) -> str:
    """The measured plan ('runtime/precision/batch') that samples `samples` noisy images soonest:
    eager at its rate; compiled at its rate after the compile time last measured on this machine,
    or, where none was, only when the eager run would take over COMPILE_WORTH_S."""
    worth_compiling = _worth_compiling(rates, samples, kind)

    def seconds(k: str) -> float:
        runtime, setting = k.split("/", 1)
        compile_s = rates.get(_compile_key(setting))
        if runtime == "eager":
            return samples / rates[k]
        if compile_s is None:
            return samples / rates[k] if worth_compiling else math.inf
        return compile_s + samples / rates[k]
    return min((k for k, v in rates.items() if k.startswith(("eager/", "compiled/")) and v > 0), key=seconds)


def choose_plan(model: torch.nn.Module, device: torch.device, precision: str, batch: int | None, image_shape,
                samples: int = 0, progress=None, remeasure: bool = False) -> Plan:
    """The model on `device` (eval, channels-last) with the precision, batch and eager/compiled
    choice to sample `samples` noisy images at. Given precision and batch are used as they are;
    'auto' and None are resolved by measurement, cached per machine and model (remeasure, or
    CSRS_REMEASURE=1, measures again). The plan's model is a BatchNorm-folded copy where folding
    applies; `model` is put in eval mode and channels-last, its weights untouched."""
    network = model.to(device).eval().to(memory_format=torch.channels_last)
    model, folded = fold_batchnorm(network, image_shape)
    model = model.to(memory_format=torch.channels_last)
    if precision != "auto" and batch is not None:
        return Plan(model, precision, batch, folded=folded)
    kind, precisions, batches, key = _search(network, device, precision, batch, image_shape)
    remeasure = remeasure or os.environ.get("CSRS_REMEASURE") == "1"
    rates = None if remeasure else _load_table().get(key)
    if rates is None and samples < MEASURE_WORTH_SAMPLES:
        fallback = "fp32" if precision == "auto" else precision
        return Plan(model, fallback, middle_batch(batches) if batch is None else batch, folded=folded)
    cacheable = True
    if rates is None:
        rates, cacheable = _measure_alone(model, device, image_shape, precisions, batches, key, remeasure, progress)
    just_compiled = {}
    if _worth_compiling(rates, samples, kind) and not any(k.startswith("compiled/") for k in rates):
        eager = rates
        rates, just_compiled, steady = _compile_alone(model, device, image_shape, rates, key, remeasure, progress)
        if cacheable and not steady:
            _store(key, eager)  # the eager rates are sound; the compiled timing is measured again next time
        cacheable = cacheable and steady
    if cacheable:
        _store(key, rates)
    best = _best(rates, samples, kind)
    runtime, chosen_precision, chosen_batch = best.split("/")
    compiled = runtime == "compiled"
    plan = Plan(model, chosen_precision, int(chosen_batch), compiled, folded, rates, expected=rates[best],
                cache_key=key if cacheable else None, image_shape=tuple(image_shape))
    if best in just_compiled:  # compiled while measuring: the job runs that very module
        plan.compiled_model = just_compiled[best]
        plan.compile_seconds = rates[_compile_key(f"{chosen_precision}/{chosen_batch}")]
    if progress is not None:
        progress.write("plan", precision=plan.precision, batch=plan.batch, compiled=compiled,
                       batchnorm_folded=folded, images_per_s=round(rates[best]), cached=cacheable,
                       measured={k: round(v) for k, v in rates.items()})
    return plan


@contextmanager
def _measuring(progress):
    """Hold the machine-wide measuring lock for the block, so that no other CSRS job on this machine
    measures meanwhile (waiting, and saying so, while one does)."""
    with ExitStack() as held:
        try:
            held.enter_context(output_lock(cache_dir() / "autotune-measure", timeout=0))
        except OutputBusyError:
            if progress is not None:
                progress.write("plan", message="waiting while another CSRS job measures this machine")
            held.enter_context(output_lock(cache_dir() / "autotune-measure", timeout=3600))
        yield


def _say_not_cached(progress, busy: bool) -> None:
    """Tell the job that its measurement, taken under load (`busy`) or with unsteady timings, is not cached."""
    if progress is not None:
        progress.write("plan", message="measured " + ("while other processes kept the CPU busy" if busy else
                                                      "with unsteady timings") + ": used for this job, not cached")


def _measure_alone(model, device, image_shape, precisions, batches, key, remeasure, progress) -> tuple[dict, bool]:
    """(rates, cacheable): eager rates measured under the measuring lock (a job that waited takes the
    measurement just cached by the one before it). A measurement taken while other processes load the
    CPU, or whose rounds disagree, serves this job only and is not cached."""
    with _measuring(progress):
        if not remeasure and (rates := _load_table().get(key)) is not None:
            return rates, True
        busy = others_busy(device)
        rates, stable = measure_eager(model, device, image_shape, precisions, batches)
    if busy or not stable:
        _say_not_cached(progress, busy)
    return rates, stable and not busy


def _compile_alone(model, device, image_shape, rates: dict, key: str, remeasure: bool,
                   progress) -> tuple[dict, dict, bool]:
    """(rates with the compiled candidate's, {'compiled/p/b': the compiled model}, cacheable):
    _measure_compiled under the measuring lock, cacheable by the same rule as the eager rates (no
    other process loading the CPU, rounds that agree). A job that waited takes the compiled
    measurement just cached by the one before it."""
    with _measuring(progress):
        cached = _load_table().get(key)
        if not remeasure and isinstance(cached, dict) and any(k.startswith("compiled/") for k in cached):
            return cached, {}, True
        busy = others_busy(device)
        measured, compiled, stable = _measure_compiled(model, device, image_shape, rates, progress)
    if busy or not stable:
        _say_not_cached(progress, busy)
    return {**rates, **measured}, compiled, stable and not busy


def _measure_compiled(model, device, image_shape, rates: dict, progress) -> tuple[dict, dict, bool]:
    """({'compiled/p/b': images per second, 'compile-seconds/p/b': seconds, 'eager/p/b': ...},
    {'compiled/p/b': the compiled model}, stable) for the best eager precision p at its best batch b;
    a rate of 0 and no model where this machine has no working compiler (a signal is never taken for
    that: it stops the job). Compiled and eager are measured in COMPARE_ROUNDS alternating rounds, each
    rate the best of its rounds, so that a machine whose speed drifts favours neither; stable when the
    rounds of each agree within STABLE."""
    best = max((k for k in rates if k.startswith("eager/")), key=rates.get)
    key = best.replace("eager/", "compiled/", 1)
    p, b = best.split("/")[1], int(best.split("/")[2])
    try:
        compiled, seconds = compile_timed(model, device, p, b, image_shape)
        rounds = [(forward_rate(compiled, device, p, b, image_shape, seconds=0.3),
                   forward_rate(model, device, p, b, image_shape, seconds=0.3)) for _ in range(COMPARE_ROUNDS)]
    except Exception as exc:  # no compiler on this machine: eager it is
        if progress is not None:
            progress.write("plan", message=f"torch.compile unavailable ({exc.__class__.__name__})")
        return {key: 0.0}, {}, True
    compiled_rates, eager_rates = [c for c, _ in rounds], [e for _, e in rounds]
    measured = {key: max(compiled_rates), best: max(rates[best], *eager_rates),
                _compile_key(f"{p}/{b}"): round(seconds, 2)}
    return measured, {key: compiled}, _steady(compiled_rates) and _steady(eager_rates)


def cached_rate(model: torch.nn.Module, device: torch.device, precision: str, batch: int | None, image_shape,
                samples: int) -> float | None:
    """Images per second at which choose_plan would run a job of `samples` noisy images with these
    settings, from the tuning cache alone: it never measures and never writes. None when the cache
    holds no measurement of this model and input shape on this machine for these settings. With
    precision and batch both given (choose_plan measures nothing then), any cached measurement of
    that precision and batch counts."""
    table = _load_table()
    table = table if isinstance(table, dict) else {}
    if precision != "auto" and batch is not None:
        prefix = f"{machine_id(device)}|{model_id(model, image_shape)}|"
        wanted = f"eager/{precision}/{batch}"
        return max((rates[wanted] for k, v in table.items() if k.startswith(prefix)
                    and wanted in (rates := _rates(v))), default=None)
    kind, _, _, key = _search(model, device, precision, batch, image_shape)
    rates = _rates(table.get(key))
    if not any(k.startswith("eager/") for k in rates):
        return None
    return rates[_best(rates, samples, kind)]


def _rates(entry) -> dict:
    """The positive numbers of a cache entry, rates and compile seconds ({} for an entry that is not
    such a table)."""
    if not isinstance(entry, dict):
        return {}
    return {k: float(v) for k, v in entry.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0}
