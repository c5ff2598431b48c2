"""Sampling runs a BatchNorm-folded copy of the network: the same function up to rounding, the same
votes, the original untouched, and anything that cannot be folded run as it is."""
import numpy as np
import pytest
import torch
from torch import nn

from csrs_core.data import load_dataset
from csrs_core.models.architectures import architectures, build_model
from csrs_core.models import folding
from csrs_core.models.checkpoints import load_model
from csrs_core.models.folding import fold_batchnorm, same_function
from csrs_core.sampling.counts import sample_counts
from csrs_core.sampling.plan import choose_plan

CPU = torch.device("cpu")


def _with_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """`model` in eval mode with BatchNorm statistics and affine terms far from the identity, so that
    folding them wrongly would show."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2 + 0.2)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.3)
    return model.eval()


@pytest.mark.parametrize("arch", [a for a in architectures() if a not in ("resnet56", "resnet110")] + ["resnet56"])
def test_every_architecture_folds_every_batchnorm_into_the_same_function(arch):
    size = 64 if "pool" in arch else 32
    model = _with_statistics(build_model(arch, 10, [0.5] * 3, [0.25] * 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded, done = fold_batchnorm(model, (3, size, size))
    assert done and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(16, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        a, b = model(x), folded(x)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max()))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched


class _Branching(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 3)

    def forward(self, x):
        y = self.bn(self.conv(x))
        if y.mean() > 0:
            y = -y
        return self.head(y.mean((2, 3)))


def test_what_cannot_be_folded_runs_as_it_is():
    branching = _Branching().eval()
    assert fold_batchnorm(branching, (3, 8, 8)) == (branching, False)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    assert fold_batchnorm(plain, (3, 8, 8)) == (plain, False)
    no_conv = nn.Sequential(nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 64, 2)).eval()  # nothing before it
    assert fold_batchnorm(no_conv, (3, 8, 8)) == (no_conv, False)
    training = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(training, (3, 8, 8))


def test_a_copy_that_is_not_the_same_function_is_refused(monkeypatch):
    """The comparison on random images is what stands between a wrong fold and the certificates."""
    model = _with_statistics(build_model("resnet8", 10, [0.5] * 3, [0.25] * 3))
    wrong = build_model("resnet8", 10, [0.5] * 3, [0.25] * 3).eval()
    assert same_function(model, model, (3, 32, 32)) and not same_function(model, wrong, (3, 32, 32))
    monkeypatch.setattr(folding, "fuse", lambda m: wrong)
    assert fold_batchnorm(model, (3, 32, 32)) == (model, False)


def test_the_plan_samples_with_the_folded_copy_and_says_so(synthetic_checkpoint):
    """fp32 votes of the folded copy equal the network's on the same noise; the plan says it folded."""
    model, meta = load_model(synthetic_checkpoint)
    data = load_dataset("synthetic").subset(np.arange(12))
    plan = choose_plan(model, CPU, "fp32", 64, tuple(data.images.shape[1:]))
    assert plan.folded and not any(isinstance(m, nn.BatchNorm2d) for m in plan.model.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    args = (data.images, data.indices, len(meta["classes"]), meta["sigma"], 10, 300, 64)
    c0, c = sample_counts(model, *args, precision="fp32")
    f0, f = sample_counts(plan.model, *args, precision="fp32")
    assert (c.argmax(1) == f.argmax(1)).all()
    assert np.abs(c - f).sum() + np.abs(c0 - f0).sum() <= 2  # rounding may move a vote, rarely
