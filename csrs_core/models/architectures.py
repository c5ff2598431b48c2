"""Base classifiers by name; each takes images in [0, 1] and normalises inside (first layer)."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from csrs_core import CSRSError

_REGISTRY: dict[str, Callable[[int], nn.Module]] = {}
_ALIASES: dict[str, str] = {}  # other projects' names for the same network -> the registered name


def register(name: str, *aliases: str):
    """Register an architecture under `name`; `aliases` (the field's names for the identical
    network, e.g. cifar_resnet110) resolve to it but are not listed by architectures()."""
    def wrap(fn):
        _REGISTRY[name] = fn
        _ALIASES.update(dict.fromkeys(aliases, name))
        return fn
    return wrap


def architectures() -> list[str]:
    return sorted(_REGISTRY)


def canonical_arch(arch: str) -> str:
    """The registered name for `arch` or one of its aliases (unknown names are returned unchanged)."""
    return _ALIASES.get(arch, arch)


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


@register("resnet8")
def resnet8(num_classes):
    return CifarResNet(8, num_classes)


@register("resnet20", "cifar_resnet20")
def resnet20(num_classes):
    return CifarResNet(20, num_classes)


@register("resnet56", "cifar_resnet56")
def resnet56(num_classes):
    return CifarResNet(56, num_classes)


@register("resnet110", "cifar_resnet110")
def resnet110(num_classes):
    return CifarResNet(110, num_classes)


def _pooled(depth: int, factor: int):
    """A CIFAR ResNet behind a factor×factor average pool: for larger inputs (HAM10000 at 64×64),
    it sees the image at 1/factor the size, where the smoothing noise has std sigma/factor."""
    return lambda num_classes: nn.Sequential(nn.AvgPool2d(factor), CifarResNet(depth, num_classes))


for _depth in (8, 20):
    for _factor in (2, 4):
        register(f"resnet{_depth}-pool{_factor}")(_pooled(_depth, _factor))


@register("resnet18")
def resnet18(num_classes):
    import torchvision  # imported here: it adds seconds to every CLI start
    return torchvision.models.resnet18(weights=None, num_classes=num_classes)


def build_model(arch: str, num_classes: int, mean: Sequence[float], std: Sequence[float]) -> nn.Module:
    """Normalize(mean, std) followed by the registered architecture (aliases accepted)."""
    arch = canonical_arch(arch)
    if arch not in _REGISTRY:
        raise CSRSError(f"unknown architecture {arch!r}; choose one of {', '.join(architectures())}")
    return nn.Sequential(Normalize(mean, std), _REGISTRY[arch](num_classes))
