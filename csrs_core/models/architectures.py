"""Base classifiers by name; each takes images in [0, 1] and normalises inside (first layer).

Besides the built-in networks, a name can be one of the user's own (docs/architectures.md), registered
only in the ways the user chooses, never because a checkpoint names it:
  - an installed package's entry point in the group `csrs.architectures` (name = "pkg.module:factory"),
    imported when that architecture is first built;
  - MODULE:FACTORY asked for by the user (`--arch`; use_architecture), imported then and known by that name;
  - $CSRS_ARCHITECTURES, comma-separated modules (their @register_architecture decorators register) and
    MODULE:FACTORY names, imported at the first lookup.
build_model only looks names up: one it does not know is refused with the way to allow it."""
from __future__ import annotations

import functools
import importlib.metadata
import os
import re
import threading
import warnings
from typing import Callable, Sequence

import torch
from torch import nn

from csrs_core import CSRSError

ENTRY_POINT_GROUP = "csrs.architectures"
ALLOW_VARIABLE = "CSRS_ARCHITECTURES"
FACTORY_HELP = "a function of the number of classes returning a torch.nn.Module from normalised images to logits"
_NAME = re.compile(r"[A-Za-z0-9][\w.+-]*")
_MODULE = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_MODULE_FACTORY = re.compile(rf"({_MODULE}):({_MODULE})")

_REGISTRY: dict[str, Callable[[int], nn.Module]] = {}
_ALIASES: dict[str, str] = {}  # other projects' names for the same network -> the registered name
_ALLOWED: set[str] = set()     # the $CSRS_ARCHITECTURES entries imported so far
_LOCK = threading.RLock()      # one import of the user's modules at a time (the dashboard has threads)


def register_architecture(name: str, *aliases: str):
    """Decorator: register `factory(num_classes) -> nn.Module` (normalised images to logits) under `name`;
    `aliases` (the field's names for the identical network, e.g. cifar_resnet110) resolve to it but are
    not listed by architectures(). A name held by another factory is refused; the same factory again
    (its module imported twice) is not."""
    for n in (name, *aliases):
        if not isinstance(n, str) or not _NAME.fullmatch(n):
            raise CSRSError(f"architecture name {n!r} is not allowed: must be letters, digits and . _ + - "
                            "(no ':'; MODULE:FACTORY names are given with --arch or $CSRS_ARCHITECTURES)")

    def wrap(factory):
        taken = _REGISTRY.get(canonical_arch(name))
        if taken is not None and _origin(taken) != _origin(factory):
            raise CSRSError(f"architecture name {name!r} is taken by {_origin(taken)}: register "
                            f"{_origin(factory)} under another name")
        _REGISTRY[name] = factory
        _ALIASES.update(dict.fromkeys(aliases, name))
        return factory
    return wrap


def _origin(factory) -> str:
    """Where a factory comes from, as module:qualified name (an entry point's own value before it is loaded)."""
    return getattr(factory, "csrs_origin", None) or f"{factory.__module__}:{factory.__qualname__}"


def architectures() -> list[str]:
    """The registered names, sorted: built-in, installed entry points, $CSRS_ARCHITECTURES and the
    MODULE:FACTORY names asked for (aliases are not listed)."""
    _discover()
    return sorted(_REGISTRY)


def canonical_arch(arch: str) -> str:
    """The registered name for `arch` or one of its aliases (unknown names are returned unchanged)."""
    return _ALIASES.get(arch, arch)


def use_architecture(arch: str) -> str:
    """The registered name of an architecture the user asked for (training, importing): a registered name
    or alias, or MODULE:FACTORY, whose module is imported now because the user named it and whose factory
    is then known by that name. CSRSError naming what is allowed otherwise."""
    _discover()
    if canonical_arch(arch) in _REGISTRY:
        return canonical_arch(arch)
    if not _MODULE_FACTORY.fullmatch(arch):
        raise CSRSError(f"unknown architecture {arch!r}; choose one of {', '.join(architectures())}, or give "
                        f"your own as MODULE:FACTORY ({FACTORY_HELP}; docs/architectures.md)")
    with _LOCK:
        _REGISTRY[arch] = _load_factory(arch, f"architecture {arch!r}")
    return arch


def _load_factory(spec: str, named: str):
    """The callable that MODULE:FACTORY names, its module imported; CSRSError saying what failed."""
    factory = _import(spec, named)
    if not callable(factory):
        raise CSRSError(f"{named} is not callable (type {type(factory).__name__!r}): a factory must be "
                        f"{FACTORY_HELP}")
    return factory


def _import(spec: str, named: str):
    """The module `spec` (pkg.module) or the object it names (pkg.module:attr), imported."""
    try:
        return importlib.metadata.EntryPoint(name=spec, value=spec, group=ENTRY_POINT_GROUP).load()
    except Exception as exc:  # the user's own code: any failure is reported as theirs, with its cause
        raise CSRSError(f"{named} cannot be loaded ({type(exc).__name__}: {exc}): the module must be importable "
                        "(installed, or on PYTHONPATH) and define the factory") from exc


@functools.cache
def _entry_points() -> tuple:
    """The installed packages' entry points in the group csrs.architectures, read once per process."""
    return tuple(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def _deferred(entry_point):
    """A factory that imports the entry point's module when first called: listing names imports nothing."""
    def factory(num_classes):
        named = f"the {ENTRY_POINT_GROUP!r} entry point {entry_point.name} = {entry_point.value}"
        return _load_factory(entry_point.value, named)(num_classes)
    factory.csrs_origin = entry_point.value
    return factory


def _discover() -> None:
    """Register what the user allowed: the installed entry points (a name already taken keeps its factory,
    and a warning names the entry point left out) and each $CSRS_ARCHITECTURES entry not imported yet."""
    with _LOCK:
        for ep in _entry_points():
            current = _REGISTRY.get(canonical_arch(ep.name))
            if current is None and _NAME.fullmatch(ep.name):
                _REGISTRY[ep.name] = _deferred(ep)
            elif current is None or _origin(current) != ep.value:
                why = (f"the name is taken by {_origin(current)}" if current
                       else "a name must be letters, digits and . _ + -")
                warnings.warn(f"the {ENTRY_POINT_GROUP!r} entry point {ep.name} = {ep.value} is not used: {why}",
                              stacklevel=3)
        for entry in _allowed_entries():
            if entry not in _ALLOWED:
                _allow(entry)


def _allowed_entries() -> list[str]:
    """The entries of $CSRS_ARCHITECTURES: modules and MODULE:FACTORY names, comma-separated."""
    text = os.environ.get(ALLOW_VARIABLE, "")
    entries = [e.strip() for e in text.split(",") if e.strip()]
    for entry in entries:
        if not (re.fullmatch(_MODULE, entry) or _MODULE_FACTORY.fullmatch(entry)):
            raise CSRSError(f"{ALLOW_VARIABLE} = {text!r} is not allowed: {entry!r} is neither a module "
                            "(pkg.module) nor MODULE:FACTORY (pkg.module:factory); separate entries with commas")
    return entries


def _allow(entry: str) -> None:
    """Import one $CSRS_ARCHITECTURES entry: a module (its decorators register) or MODULE:FACTORY
    (registered under that name). Marked first, so a module that looks names up while importing is
    not imported again."""
    _ALLOWED.add(entry)
    named = f"{ALLOW_VARIABLE} entry {entry!r}"
    try:
        if _MODULE_FACTORY.fullmatch(entry):
            _REGISTRY[entry] = _load_factory(entry, named)
        else:
            _import(entry, named)
    except CSRSError:
        _ALLOWED.discard(entry)
        raise


def _not_registered(arch: str) -> str:
    """Why `arch` cannot be built here, and how the user allows it."""
    spec = _MODULE_FACTORY.fullmatch(arch)
    if spec:
        return (f"architecture {arch!r} is not registered: it names module {spec[1]}, which CSRS imports only "
                f"when you allow it, never because a checkpoint names it. To allow it, set {ALLOW_VARIABLE}={arch} "
                f"(comma-separated with any others), or install a package that declares it in the "
                f"{ENTRY_POINT_GROUP!r} entry-point group (docs/architectures.md)")
    return (f"unknown architecture {arch!r}: registered are {', '.join(architectures())}. One of your own is "
            f"allowed by naming its module in {ALLOW_VARIABLE} (its @register_architecture then registers it) or "
            f"by an installed package's {ENTRY_POINT_GROUP!r} entry point (docs/architectures.md)")


class Normalize(nn.Module):
    """(x - mean) / std per channel, so Gaussian noise can be added in [0, 1] pixel space."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al.'s 6n+2-layer ResNet for small images (16/32/64 channels), any input size."""

    def __init__(self, depth: int, num_classes: int):
        super().__init__()
        if (depth - 2) % 6:
            raise CSRSError(f"CIFAR ResNet depth must be 6n+2; got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        layers, c_in = [], 16
        for c_out, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                layers.append(BasicBlock(c_in, c_out, stride if i == 0 else 1))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@register_architecture("resnet8")
def resnet8(num_classes):
    return CifarResNet(8, num_classes)


@register_architecture("resnet20", "cifar_resnet20")
def resnet20(num_classes):
    return CifarResNet(20, num_classes)


@register_architecture("resnet56", "cifar_resnet56")
def resnet56(num_classes):
    return CifarResNet(56, num_classes)


@register_architecture("resnet110", "cifar_resnet110")
def resnet110(num_classes):
    return CifarResNet(110, num_classes)


def _pooled(depth: int, factor: int):
    """A CIFAR ResNet behind a factor×factor average pool: for larger inputs (HAM10000 at 64×64),
    it sees the image at 1/factor the size, where the smoothing noise has std sigma/factor."""
    return lambda num_classes: nn.Sequential(nn.AvgPool2d(factor), CifarResNet(depth, num_classes))


for _depth in (8, 20):
    for _factor in (2, 4):
        register_architecture(f"resnet{_depth}-pool{_factor}")(_pooled(_depth, _factor))


@register_architecture("resnet18")
def resnet18(num_classes):
    import torchvision  # imported here: it adds seconds to every CLI start
    return torchvision.models.resnet18(weights=None, num_classes=num_classes)


class LogitShift(nn.Module):
    """Adds a fixed vector to the logits: the base model's decision threshold moved toward some classes
    (the cohen-shift baseline). The vector is part of the checkpoint's metadata, not of its weights."""

    def __init__(self, shift: Sequence[float]):
        super().__init__()
        self.register_buffer("shift", torch.tensor([float(v) for v in shift]).view(1, -1), persistent=False)

    def forward(self, logits):
        return logits + self.shift.to(logits.dtype)


def build_model(arch: str, num_classes: int, mean: Sequence[float], std: Sequence[float],
                logit_shift: Sequence[float] | None = None) -> nn.Module:
    """Normalize(mean, std) followed by the registered architecture (aliases accepted), and by
    LogitShift(logit_shift) when one is given. A name that is not registered is refused, never
    imported (it may come from a checkpoint): the message says how to allow it."""
    _discover()
    name = canonical_arch(arch)
    if name not in _REGISTRY:
        raise CSRSError(_not_registered(arch))
    net = _REGISTRY[name](num_classes)
    if not isinstance(net, nn.Module):
        raise CSRSError(f"architecture {arch!r} ({_origin(_REGISTRY[name])}) returned a {type(net).__name__}: "
                        f"a factory must be {FACTORY_HELP}")
    if logit_shift is None:
        return nn.Sequential(Normalize(mean, std), net)
    return nn.Sequential(Normalize(mean, std), net, LogitShift(logit_shift))
