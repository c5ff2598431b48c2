"""Importing Cohen et al. / MACER / CS-RS / torchvision checkpoints: each source file is built here from
scratch in the project's own module layout (names, forward, normalisation), saved with torch.save,
imported, and must give the same logits as the original network."""
import argparse
import hashlib
import math

import pytest
import torch
from torch import nn

from csrs_core.interop.importers import COHEN_CIFAR10_MEAN, COHEN_CIFAR10_STD, detect_format, import_checkpoint
from csrs_core.models.architectures import architectures, build_model, canonical_arch
from csrs_core.models.checkpoints import CheckpointError, load_model, save_checkpoint
from csrs_core.sampling.counts import sample_counts

# --- the source projects' networks, rebuilt -------------------------------------------------------

class NormalizeLayer(nn.Module):
    """Cohen et al.'s / CS-RS's normaliser: mean and std are plain attributes, not in state_dict."""

    def __init__(self, means, sds):
        super().__init__()
        self.means, self.sds = torch.tensor(means), torch.tensor(sds)

    def forward(self, x):
        b, _, h, w = x.shape
        means = self.means.repeat((b, h, w, 1)).permute(0, 3, 1, 2)
        sds = self.sds.repeat((b, h, w, 1)).permute(0, 3, 1, 2)
        return (x - means) / sds


class TheirBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += residual
        return self.relu(out)


class TheirCifarResNet(nn.Module):
    """bearpaw's CIFAR ResNet as Cohen et al. and CS-RS use it (AvgPool2d(8)); MACER's ResNet_Cifar
    is the same with AvgPool2d(8, stride=1)."""

    def __init__(self, depth, num_classes=10, pool_stride=None):
        super().__init__()
        n = (depth - 2) // 6
        self.inplanes = 16
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(16, n)
        self.layer2 = self._make_layer(32, n, stride=2)
        self.layer3 = self._make_layer(64, n, stride=2)
        self.avgpool = nn.AvgPool2d(8) if pool_stride is None else nn.AvgPool2d(8, stride=pool_stride)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.data.normal_(0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes))
        layers = [TheirBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [TheirBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).view(x.size(0), -1))


class TorchvisionPreprocessed(nn.Module):
    """A torchvision ResNet whose inputs were normalised with ImageNet statistics before the network."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        return self.net((x - mean) / std)


def _randomise_bn(model, seed):
    """Non-trivial BatchNorm affine parameters and running statistics; eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.3)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
                m.num_batches_tracked.fill_(123)
    return model.eval()


def _inputs(size=32, count=6):
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(7))


def _max_diff(original, imported, x):
    with torch.no_grad():
        return (original(x) - imported(x)).abs().max().item()


# --- source files --------------------------------------------------------------------------------

def cohen_file(path, depth=20, classes=10, arch="cifar_resnet20", dataparallel=False):
    torch.manual_seed(0)
    net = TheirCifarResNet(depth, classes)
    model = nn.Sequential(NormalizeLayer(list(COHEN_CIFAR10_MEAN), list(COHEN_CIFAR10_STD)),
                          nn.DataParallel(net) if dataparallel else net)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    model.train()
    nn.functional.cross_entropy(model(_inputs(count=4)), torch.tensor([0, 1, 2, 3]) % classes).backward()
    opt.step()
    _randomise_bn(model, 1)
    torch.save({"epoch": 3, "arch": arch, "state_dict": model.state_dict(), "optimizer": opt.state_dict()}, path)
    return model


def macer_file(path, depth=8, classes=10):
    torch.manual_seed(1)
    base_model = _randomise_bn(TheirCifarResNet(depth, classes, pool_stride=1), 2)
    torch.save({"net": base_model.state_dict(), "epoch": 440}, path)
    return base_model


def csrs_file(path, depth=20):
    torch.manual_seed(2)
    model = _randomise_bn(nn.Sequential(NormalizeLayer(list(COHEN_CIFAR10_MEAN), list(COHEN_CIFAR10_STD)),
                                        TheirCifarResNet(depth, 10)), 3)
    torch.save({"net": model.state_dict(), "epoch": 20}, path)
    return model


def torchvision_file(path, classes=10):
    import torchvision
    torch.manual_seed(3)
    net = _randomise_bn(torchvision.models.resnet18(weights=None, num_classes=classes), 4)
    torch.save(net.state_dict(), path)
    return TorchvisionPreprocessed(net).eval()


# --- round trips ---------------------------------------------------------------------------------

CASES = {
    # format: (builder, dataset, expected CSRS arch, expected mean, input size)
    "cohen": (cohen_file, "cifar10", "resnet20", COHEN_CIFAR10_MEAN, 32),
    "macer": (macer_file, "cifar10-jpeg", "resnet8", (0.0, 0.0, 0.0), 32),
    "cs-rs": (csrs_file, "cifar10", "resnet20", COHEN_CIFAR10_MEAN, 32),
    "torchvision": (torchvision_file, "imagenette", "resnet18", (0.485, 0.456, 0.406), 64),
}


@pytest.mark.parametrize("fmt", list(CASES))
@pytest.mark.parametrize("given", ["auto", "explicit"])
def test_import_gives_the_same_logits(tmp_path, fmt, given):
    build, dataset, arch, mean, size = CASES[fmt]
    src, out = tmp_path / "source.pth", tmp_path / "imported.pt"
    original = build(src)
    meta = import_checkpoint(src, out, None if given == "auto" else arch, dataset, 0.25,
                             fmt="auto" if given == "auto" else fmt)
    assert meta["source_format"] == fmt
    assert meta["arch"] == arch and meta["dataset"] == dataset and meta["sigma"] == 0.25
    assert tuple(meta["mean"]) == pytest.approx(mean)
    assert meta["source_file"] == "source.pth"
    assert meta["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    model, saved = load_model(out, num_classes=10)
    assert saved["source_sha256"] == meta["source_sha256"] and saved["method"] == "imported"
    assert _max_diff(original, model, _inputs(size)) <= 1e-5


def test_cohen_dataparallel_prefix_and_alias(tmp_path):
    src, out = tmp_path / "checkpoint.pth.tar", tmp_path / "imported.pt"
    original = cohen_file(src, dataparallel=True)
    assert any(k.startswith("1.module.") for k in torch.load(src, weights_only=True)["state_dict"])
    meta = import_checkpoint(src, out, "cifar_resnet20", "cifar10", 0.5)
    assert meta["arch"] == "resnet20" and meta["source_arch"] == "cifar_resnet20" and meta["source_epoch"] == 3
    model, _ = load_model(out)
    assert _max_diff(original, model, _inputs()) <= 1e-5


def test_mean_std_override(tmp_path):
    src, out = tmp_path / "macer.pth", tmp_path / "imported.pt"
    macer_file(src)
    meta = import_checkpoint(src, out, "resnet8", "cifar10", 0.25, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert meta["mean"] == [0.5] * 3 and meta["std"] == [0.25] * 3


@pytest.mark.parametrize("args, words", [
    (["--mean", "1e308,0,0", "--std", "1e-308,1,1"], "--mean = '1e308,0,0' is not allowed"),
    (["--mean", "0.5,0.5,0.5", "--std", "1e-308,1,1"], "--std = '1e-308,1,1' is not allowed"),
    (["--mean", "0.5,0.5", "--std", "0.2,0.2"], "3 values each"),
    (["--sigma", "1e308"], "--sigma = '1e308' is not allowed"),
])
def test_the_import_command_bounds_sigma_and_the_statistics(tmp_path, capsys, args, words):
    from csrs_core.cli import commands as cli
    src, out = tmp_path / "macer.pth", tmp_path / "imported.pt"
    macer_file(src)
    base = [str(src), "--out", str(out), "--arch", "resnet8", "--dataset", "cifar10"]
    code = cli.main(["import", *base, *(args if "--sigma" in args else ["--sigma", "0.25", *args])])
    assert code == 2 and words in capsys.readouterr().err and not out.exists()


def test_an_imported_model_with_non_finite_logits_is_refused(tmp_path):
    src, out = tmp_path / "macer.pth", tmp_path / "imported.pt"
    macer_file(src)
    payload = torch.load(src, weights_only=True)
    payload["net"] = {k: torch.full_like(v, float("nan")) if k == "fc.weight" else v for k, v in payload["net"].items()}
    torch.save(payload, src)
    with pytest.raises(CheckpointError, match="the imported model returns non-finite logits"):
        import_checkpoint(src, out, "resnet8", "cifar10", 0.25)
    assert not out.exists()


def test_detect_format(tmp_path):
    for fmt, (build, *_rest) in CASES.items():
        build(tmp_path / f"{fmt}.pth")
        assert detect_format(torch.load(tmp_path / f"{fmt}.pth", weights_only=True)) == fmt


def test_aliases_resolve_but_are_not_listed():
    assert canonical_arch("cifar_resnet110") == "resnet110" and canonical_arch("resnet20") == "resnet20"
    assert "cifar_resnet56" not in architectures()
    assert sum(p.numel() for p in build_model("cifar_resnet56", 10, [0] * 3, [1] * 3).parameters()) == \
        sum(p.numel() for p in build_model("resnet56", 10, [0] * 3, [1] * 3).parameters())


# --- refusals: a clear message and no output file ------------------------------------------------

def _refused(tmp_path, src, match, **kwargs):
    out = tmp_path / "refused.pt"
    args = dict(arch=None, dataset="cifar10", sigma=0.25) | kwargs
    with pytest.raises(CheckpointError, match=match):
        import_checkpoint(src, out, **args)
    assert not out.exists() and not list(tmp_path.glob(".refused.pt.*"))


def test_wrong_class_count_refused(tmp_path):
    cohen_file(tmp_path / "c.pth")
    _refused(tmp_path, tmp_path / "c.pth", r"10 output classes but data set ham10000 has 2", dataset="ham10000")


def test_wrong_arch_refused(tmp_path):
    cohen_file(tmp_path / "c.pth")
    _refused(tmp_path, tmp_path / "c.pth", r"saved for architecture 'cifar_resnet20' but 'resnet56'", arch="resnet56")
    csrs_file(tmp_path / "s.pth")
    _refused(tmp_path, tmp_path / "s.pth", r"plain CIFAR ResNet but architecture resnet18", arch="resnet18")
    _refused(tmp_path, tmp_path / "s.pth", r"adds layers the source network lacks", arch="resnet20-pool2")
    macer_file(tmp_path / "m.pth")
    _refused(tmp_path, tmp_path / "m.pth", r"\[1, 1, 1\] blocks per stage \(depth 8\) but resnet20 has 3",
             arch="resnet20")
    _refused(tmp_path, tmp_path / "m.pth", r"unknown architecture 'vgg16'", arch="vgg16")
    torchvision_file(tmp_path / "t.pth")
    _refused(tmp_path, tmp_path / "t.pth", r"torchvision ResNet but architecture resnet20", arch="resnet20",
             dataset="imagenette")


def test_unknown_missing_and_misshaped_keys_refused(tmp_path):
    cohen_file(tmp_path / "c.pth")
    payload = torch.load(tmp_path / "c.pth", weights_only=True)
    extra = dict(payload, state_dict=dict(payload["state_dict"], **{"1.extra.weight": torch.zeros(3)}))
    torch.save(extra, tmp_path / "extra.pth")
    _refused(tmp_path, tmp_path / "extra.pth", r"unexpected tensors extra\.weight")
    missing = dict(payload, state_dict={k: v for k, v in payload["state_dict"].items() if k != "1.layer2.0.bn1.bias"})
    torch.save(missing, tmp_path / "missing.pth")
    _refused(tmp_path, tmp_path / "missing.pth", r"missing tensors layer2\.0\.bn1\.bias")
    shaped = dict(payload, state_dict=dict(payload["state_dict"], **{"1.layer1.0.conv2.weight": torch.zeros(16, 16, 5, 5)}))
    torch.save(shaped, tmp_path / "shaped.pth")
    _refused(tmp_path, tmp_path / "shaped.pth", r"shape mismatches .* layer1\.0\.conv2\.weight \(16, 16, 5, 5\)")
    torch.save({"weights": [1, 2, 3]}, tmp_path / "foreign.pth")
    _refused(tmp_path, tmp_path / "foreign.pth", r"matches none of the formats")
    torch.save({"net": payload["state_dict"]}, tmp_path / "csrs-like.pth")
    _refused(tmp_path, tmp_path / "csrs-like.pth", r"use format cs-rs", fmt="macer")


def test_unsafe_and_unreadable_files_refused(tmp_path):
    torch.save({"net": {"conv1.weight": torch.zeros(1)}, "args": argparse.Namespace(lr=0.1)}, tmp_path / "p.pth")
    _refused(tmp_path, tmp_path / "p.pth", r"refused for safety.*argparse\.Namespace")
    (tmp_path / "g.pth").write_bytes(b"not a checkpoint at all")
    _refused(tmp_path, tmp_path / "g.pth", r"not a readable checkpoint")
    _refused(tmp_path, tmp_path / "absent.pth", r"does not exist")
    save_checkpoint(tmp_path / "own.pt", build_model("resnet8", 10, [0] * 3, [1] * 3),
                    dict(arch="resnet8", classes=list("abcdefghij"), dataset="cifar10", sigma=0.25,
                         method="gaussian", mean=[0] * 3, std=[1] * 3))
    _refused(tmp_path, tmp_path / "own.pt", r"already a CSRS checkpoint")


def test_imported_checkpoint_certifies(tmp_path):
    cohen_file(tmp_path / "c.pth")
    import_checkpoint(tmp_path / "c.pth", tmp_path / "imported.pt", "resnet20", "cifar10", 0.25)
    model, meta = load_model(tmp_path / "imported.pt")
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    counts0, counts = sample_counts(model, images, [0, 1], len(meta["classes"]), meta["sigma"], n0=5, n=20, batch=16)
    assert counts0.shape == counts.shape == (2, 10)
    assert counts0.sum(1).tolist() == [5, 5] and counts.sum(1).tolist() == [20, 20]
