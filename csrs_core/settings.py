"""Every user-facing setting, defined once: name, type, default, allowed range and help text.

The CLI builds its parsers from these definitions (csrs_core.cli.options), the dashboard its
widgets, and the library checks values through them before any work starts, so a setting is
refused with the same message wherever it comes from."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Iterable

from csrs_core import CSRSError


class SettingError(CSRSError, ValueError):
    """A setting outside its allowed range; the message names the setting, the value and the range."""


@dataclass(frozen=True)
class Option:
    """One setting. `low`/`high` bound numbers (strictly when `*_open`); `choices` bound strings."""
    name: str
    type: type
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple = ()
    optional: bool = False   # None allowed (means "not given": see help)
    required: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def text(self, value) -> str:
        """A value as the command line writes it: '0.25,0.5' for a list, 'on'/'off' for a switch."""
        if self.type is tuple:
            return ",".join(f"{v:g}" for v in value)
        if self.type is bool:
            return "on" if value else "off"
        return str(value)

    def allowed(self) -> str:
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        def number(x):
            return f"{int(x):,}" if float(x).is_integer() and abs(x) >= 10_000 else f"{x:g}"
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '≥'} {number(self.low)}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '≤'} {number(self.high)}")
        kind = {int: "a whole number", float: "a finite number", tuple: "one or more finite numbers, comma-separated,",
                bool: "true or false"}.get(self.type, "text")
        return kind + (" " + " and ".join(parts) if parts else "")

    def check(self, value, source: str | None = None):
        """`value` converted to the option's type; SettingError when it is outside the allowed range."""
        label = source or self.flag
        if self.type is tuple and value is not None:
            return self._check_list(value, label)
        if value is None:
            if self.optional or (not self.required and self.default is None):
                return None
            raise SettingError(f"{label} is required ({self.help})")
        try:
            if self.type is bool:
                if not isinstance(value, bool):
                    raise ValueError
                return value
            if isinstance(value, bool) and self.type is not str:
                raise ValueError
            if self.type is int:
                if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) \
                        and not float(value).is_integer():
                    raise ValueError
                converted = int(value)
            elif self.type is float:
                converted = float(value)
            else:
                converted = str(value)
        except (TypeError, ValueError):
            raise SettingError(f"{label} = {value!r} is not allowed: must be {self.allowed()}") from None
        bad = False
        if self.type is float and not math.isfinite(converted):
            bad = True
        elif self.type in (int, float):
            if self.low is not None and (converted < self.low or (self.low_open and converted == self.low)):
                bad = True
            if self.high is not None and (converted > self.high or (self.high_open and converted == self.high)):
                bad = True
        elif self.choices and converted not in self.choices:
            bad = True
        elif "\x00" in converted:
            raise SettingError(f"{label} contains a NUL character")
        if bad:
            raise SettingError(f"{label} = {value!r} is not allowed: must be {self.allowed()}")
        return converted


    def _check_list(self, value, label: str) -> tuple:
        """A list setting: every entry checked as a number of this option's range; none is refused."""
        items = value.split(",") if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) \
            else [value]
        items = [i.strip() if isinstance(i, str) else i for i in items]
        if not items or any(i == "" for i in items):
            raise SettingError(f"{label} = {value!r} is not allowed: must be {self.allowed()}")
        entry = Option(self.name, float, None, self.help, self.low, self.high, self.low_open, self.high_open)
        try:
            return tuple(entry.check(i, label) for i in items)
        except SettingError:
            raise SettingError(f"{label} = {value!r} is not allowed: must be {self.allowed()}") from None


def _opt(name, type_, default, help_, **kw) -> Option:
    return Option(name, type_, default, help_, **kw)


def positive_int(name, default, help_, **kw):
    return _opt(name, int, default, help_, low=1, **kw)


def positive_float(name, default, help_, **kw):
    return _opt(name, float, default, help_, low=0, low_open=True, **kw)


PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
MAX_SIGMA = 4.0  # noise std in [0, 1] pixel units: beyond this an image is pure noise (the literature uses ≤ 1)
MAX_SAMPLES = 10_000_000  # noisy copies per example: 100x the largest n in the literature (Cohen et al.: 100,000)
DEVICE_HELP = "auto (the GPU when one is present, else the CPU), cpu, cuda or cuda:N"

# ------------------------------------------------------------------------------------ certify
CERTIFY = {o.name: o for o in (
    _opt("checkpoint", str, None, "the checkpoint to certify (a CSRS .pt file; see `csrs import`)", required=True),
    _opt("dataset", str, None, "cifar10, cifar10-jpeg, imagenette, ham10000, imagefolder:PATH, "
         "sample:PATH.npz or synthetic", required=True),
    _opt("split", str, "test", "which split of the data set to certify", choices=("test", "val", "train")),
    _opt("data_root", str, None, "folder holding the data sets (default: $CSRS_DATA, else ./data)"),
    positive_int("image_size", None, "resize images to this square size (default: the data set's own)"),
    positive_int("num_examples", None, "certify a fixed random sample of this many examples (default: all)"),
    positive_int("per_class", None, "certify a stratified sample of this many examples per class"),
    _opt("sample_seed", int, 0, "seed of the fixed example sample (--num-examples / --per-class)", low=0,
         high=2**32 - 1),
    positive_int("n0", 100, "selection samples per example: noisy copies whose majority vote picks "
                 "the top class (paper's n0)", high=MAX_SAMPLES),
    positive_int("n", 10000, "estimation samples per example: fresh noisy copies that bound the top "
                 "class's probability (paper's n); larger n allows larger radii", high=MAX_SAMPLES),
    _opt("alpha", float, 0.001, "failure probability: each certificate holds with probability ≥ 1 − alpha",
         low=0, high=1, low_open=True, high_open=True),
    positive_int("batch", None, "noisy copies per forward pass (default: chosen for the device and model)"),
    positive_float("sigma", None, "noise level σ of the smoothed classifier (default: the checkpoint's "
                   "training σ)", high=MAX_SIGMA),
    _opt("seed", int, 0, "seed of the certification noise (each example draws from its own stream)", low=0,
         high=2**32 - 1),
    _opt("cost", str, "overall", "cost matrix: overall, seedwise:3, seedwise:2,4, pairwise:3>5, "
         "pairwise:3>2,4,5 (rows joined by ;), the JSON of a CostMatrix, or a path to a file holding it"),
    _opt("mode", str, "sound", "sound: radius max(R1(α/2), R2), valid with probability ≥ 1−α; paper: "
         "max(R1(α), R2) as Algorithm 1 prints it (≥ 1−1.5α)", choices=("sound", "paper")),
    _opt("eps", tuple, (0.25,), "perturbation sizes ε (ℓ2, in [0,1] pixel units, comma-separated) at which the "
         "metrics are reported, and with --sequential the radii every example is decided at", low=0),
    _opt("sequential", bool, False, "stop each example as soon as every --eps is decided (certified, or out "
         "of reach within --n samples, which is then the cap), reading confidence sequences instead of "
         "Clopper–Pearson bounds: 53–435× fewer samples on the shipped models; answers the chosen radii, sound mode only"),
    _opt("device", str, "auto", DEVICE_HELP),
    _opt("precision", str, "auto", "arithmetic of the base classifier: auto picks the fastest this machine "
         "runs (measured once, cached); it is part of the certification's key", choices=PRECISION_CHOICES),
    positive_int("threads", None, "CPU threads for PyTorch (default: PyTorch's choice)"),
    _opt("out", str, None, "write the per-example table to this CSV file"),
    _opt("save_sample", str, None, "also write the selected examples as a .npz sample (dataset sample:PATH)"),
    _opt("progress", str, None, "append machine-readable progress events to this JSON-lines file"),
    _opt("shard", str, None, "I/K: sample only share I of K (every K-th example from the I-th; 0 ≤ I < K) into a "
         "shard beside the record, e.g. one Slurm array task each; the same command without --shard merges the "
         "shards, sampling only what they lack (needs an explicit --precision)"),
)}

# -------------------------------------------------------------------------------------- train
METHODS = ("gaussian", "cohen-r", "macer", "cs-macer")
DEFAULT_LAMBDA = {"macer": 12.0, "cs-macer": 3.0}
DEFAULT_COPIES = {"gaussian": 1, "cohen-r": 1, "macer": 16, "cs-macer": 16}  # k where --gauss-num is not given

TRAIN = {o.name: o for o in (
    _opt("method", str, None, "gaussian (Cohen et al.), cohen-r (reweighted), macer, cs-macer (the paper's)",
         choices=METHODS, required=True),
    _opt("dataset", str, None, "training data: cifar10, cifar10-jpeg, imagenette, ham10000, "
         "imagefolder:PATH or synthetic", required=True),
    _opt("out", str, None, "checkpoint to write (NAME or NAME.pt); rerunning the same command resumes it",
         required=True),
    _opt("arch", str, "resnet20", "architecture: resnet8|20|56|110, resnet8-pool2|4, resnet20-pool2|4, resnet18, "
         "one registered by $CSRS_ARCHITECTURES or an installed package, or MODULE:FACTORY for your own "
         "(docs/architectures.md)"),
    positive_float("sigma", 0.25, "noise level σ used in training (and by default in certification)",
                   high=MAX_SIGMA),
    positive_int("epochs", 10, "passes over the training set"),
    positive_int("batch", 64, "images per step (each used gauss_num times with noise)"),
    positive_float("lr", 0.1, "SGD learning rate at the start of the schedule"),
    _opt("schedule", str, "cosine", "learning-rate schedule: cosine over all epochs, or step (×0.1 every "
         "lr_step epochs)", choices=("cosine", "step")),
    positive_int("lr_step", 30, "epochs between ×0.1 steps (step schedule)"),
    _opt("cost", str, "none", "cost matrix for cohen-r and cs-macer (same forms as certify --cost; none: "
         "no sensitive class)"),
    positive_float("weight", 1.2, "cohen-r: cross-entropy weight of sensitive examples"),
    positive_int("gauss_num", None, "noisy copies per image k (default: 16 for macer and cs-macer, 1 for gaussian "
                 "and cohen-r, as the papers train them; with k > 1 gaussian and cohen-r average their cross-entropy "
                 "over the copies, e.g. to give them MACER's budget)"),
    _opt("lam", float, None, "macer/cs-macer: weight λ of the robustness terms (default: 12 for macer, "
         "3 for cs-macer)", low=0),
    _opt("lam_warmup", float, 0.0, "macer/cs-macer: epochs over which λ rises linearly from 0 to its value "
         "(0: full λ from the first step)", low=0),
    positive_float("gamma", 8.0, "macer: hinge threshold γ on the margin"),
    positive_float("gamma1", 4.0, "cs-macer: hinge threshold γ1 for normal examples"),
    positive_float("gamma2", 16.0, "cs-macer: hinge threshold γ2 for sensitive examples"),
    positive_float("beta", 16.0, "macer/cs-macer: inverse temperature β of the soft votes"),
    _opt("init", str, None, "warm start from this checkpoint (same architecture)"),
    _opt("seed", int, 0, "seed of initial weights, data order, augmentation and noise", low=0, high=2**24),
    positive_int("image_size", None, "resize images to this square size (default: the data set's own)"),
    positive_int("max_steps_per_epoch", None, "cap the steps per epoch (quick runs)"),
    _opt("data_root", str, None, "folder holding the data sets (default: $CSRS_DATA, else ./data)"),
    _opt("device", str, "auto", DEVICE_HELP),
    _opt("precision", str, "fp32", "training arithmetic (fp16 uses gradient scaling)",
         choices=("fp32", "bf16", "fp16")),
    positive_int("threads", None, "CPU threads for PyTorch (default: PyTorch's choice)"),
    _opt("progress", str, None, "progress file (default: OUT.progress.jsonl)"),
    positive_int("log_every", 10, "steps between progress lines"),
    _opt("val_examples", int, 100, "examples of the val split certified after every epoch with 16 + 64 noisy copies "
         "(accuracy and Rob_cs at ε = σ, in the history the Checkpoints page plots; 0: none)", low=0, high=10_000),
    _opt("tensorboard", str, None, "also log every epoch's numbers to this TensorBoard folder (needs the tensorboard "
         "package)"),
)}

# ------------------------------------------------------------------------------------- import
NORMALISATION = {o.name: o for o in (
    _opt("mean", tuple, None, "normalisation mean per channel, comma-separated (default: the format's)",
         low=0, high=1),
    _opt("std", tuple, None, "normalisation std per channel, comma-separated (default: the format's)",
         low=0.001, high=10),
)}

# ------------------------------------------------------------------------------------- report
REPORT = {o.name: o for o in (
    _opt("checkpoints", str, None, "folder of checkpoints whose cached certifications are compared",
         required=True),
    CERTIFY["cost"], CERTIFY["alpha"], CERTIFY["mode"],
    _opt("eps", tuple, CERTIFY["eps"].default, "perturbation sizes ε (ℓ2, in [0,1] pixel units, comma-separated) "
         "at which the metrics are reported: with several, one column of certified accuracy and one of Rob_cs per "
         "ε (Cohen et al.'s tables), the paired tests at the first", low=CERTIFY["eps"].low),
    _opt("format", str, "text", "output format (markdown: the README's tables)",
         choices=("text", "csv", "latex", "markdown")),
    _opt("cost_threshold", float, None, "τ: also report the certified expected cost at ε and Rob_cs(ε, τ), the "
         "share of sensitive examples whose certified worst-case cost is ≤ τ, with paired sign-flip "
         "permutation tests of the per-example costs (default: only for a real-valued cost matrix, with τ = 0)",
         low=0),
    _opt("examples", str, None, "a sample file (.npz, as --dataset sample:PATH reads it): compare only records of "
         "exactly its examples (default: the examples that the most checkpoints have records of)"),
    _opt("seeds", str, None, "other folders (comma-separated) holding the same recipes trained at other seeds, "
         "certified on the same examples: the table then gives each checkpoint name's mean ± sd over --checkpoints and "
         "these folders, with each seed's paired test and a t-test over seeds (at the first ε)"),
    _opt("baseline", str, None, "checkpoint (its name in the table: relative to --checkpoints, without .pt) "
         "that paired tests (exact McNemar on the same examples) compare every other against; default: "
         "the one trained with method gaussian if exactly one is, else the Gaussian one named cohen, else the first row"),
)}


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """(I, K) of a --shard value 'I/K' with 0 ≤ I < K; None for none; SettingError otherwise."""
    if text is None:
        return None
    try:
        i, k = (int(part) for part in str(text).split("/"))
    except ValueError:
        i = k = -1
    if not 0 <= i < k:
        raise SettingError(f"--shard = {text!r} is not allowed: must be I/K with whole numbers 0 ≤ I < K, e.g. 0/4")
    return i, k


def check_settings(options: dict[str, Option], values: dict, names: Iterable[str] | None = None) -> dict:
    """The values converted and checked against their options (all of `values` that are options,
    or only `names`); raises SettingError naming the first setting that is not allowed."""
    out = dict(values)
    for name in (names if names is not None else [k for k in values if k in options]):
        out[name] = options[name].check(values.get(name))
    return out
