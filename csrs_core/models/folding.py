"""BatchNorm folded into the convolution before it, for inference.

In eval mode a BatchNorm after a convolution is an affine map per channel, so it can be folded into
the convolution's weights and bias: the same function up to floating-point rounding, with one pass
over the activations less per layer (ResNet-20 ran 1.2-1.3x faster in bf16 on 2 EPYC cores).
Sampling runs the folded copy; training never sees it."""
from __future__ import annotations

import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _norm_layers(model: nn.Module) -> int:
    return sum(isinstance(m, _NORMS) for m in model.modules())


def fold_batchnorm(model: nn.Module, image_shape) -> tuple[nn.Module, bool]:
    """(module, folded): an eval-mode copy of `model` in which every BatchNorm that is the only user
    of a convolution's (or linear layer's) output is folded into that layer, and True; or `model`
    itself and False when it has no such BatchNorm, torch.fx cannot trace it (data-dependent
    control flow in a user's model), or the copy's fp32 logits on random images of `image_shape`
    differ from the model's by more than rounding. `model` is never changed."""
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (running statistics, not batch ones)")
    before = _norm_layers(model)
    if before == 0:
        return model, False
    try:
        folded = fuse(model).eval()
        same = _norm_layers(folded) < before and same_function(model, folded, image_shape)
    except Exception:  # not traceable symbolically, or not a network of images to logits: run it as it is
        return model, False
    return (folded, True) if same else (model, False)


def same_function(model: nn.Module, other: nn.Module, image_shape, tolerance: float = 1e-4) -> bool:
    """Whether `other` gives `model`'s fp32 logits, within `tolerance` relative to their scale, on
    eight random images in [0, 1] of `image_shape` (on the model's device)."""
    device = next(model.parameters()).device
    x = torch.rand((8, *image_shape), generator=torch.Generator().manual_seed(0)).to(device)
    with torch.inference_mode():
        a, b = model(x).float(), other(x).float()
    return bool((a - b).abs().max() <= tolerance * max(1.0, float(a.abs().max())))
