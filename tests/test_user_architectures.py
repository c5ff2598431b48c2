"""Researchers' own architectures: registered by an installed entry point, by `--arch MODULE:FACTORY`
or by $CSRS_ARCHITECTURES, wrapped with CSRS's Normalize like the built-in ones; a checkpoint that names
an architecture nobody allowed is refused with the way to allow it, and its module is never imported."""
import importlib.metadata
import sys

import pytest
import torch

from csrs_core import CSRSError
from csrs_core.cli import commands as cli
import csrs_core.models.architectures as arch_module
from csrs_core.models.architectures import Normalize, architectures, build_model, use_architecture
from csrs_core.models.checkpoints import load_model, save_checkpoint

MODULE = '''
from pathlib import Path
from torch import nn
from csrs_core.models import register_architecture
from csrs_core.models.architectures import CifarResNet

Path(__file__).with_suffix(".imported").touch()  # what importing this module leaves behind


def net(num_classes):
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, num_classes))


@register_architecture("tiny-net")
def tiny(num_classes):
    return net(num_classes)


def not_a_module(num_classes):
    return "logits"


def resnet14(num_classes):
    return CifarResNet(14, num_classes)


NOT_CALLABLE = 3
'''
META = {"classes": ["red", "green", "blue", "grey"], "dataset": "synthetic", "sigma": 0.25, "method": "gaussian",
        "mean": [0.5] * 3, "std": [0.25] * 3}


@pytest.fixture(autouse=True)
def registry(monkeypatch, tmp_path):
    """Each test starts from the built-in architectures and no entry points, with tmp_path importable;
    the modules it wrote are forgotten afterwards (as in a fresh process)."""
    monkeypatch.setattr(arch_module, "_REGISTRY", dict(arch_module._REGISTRY))
    monkeypatch.setattr(arch_module, "_ALIASES", dict(arch_module._ALIASES))
    monkeypatch.setattr(arch_module, "_ALLOWED", set())
    install(monkeypatch, [])
    monkeypatch.delenv("CSRS_ARCHITECTURES", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    arch_module._entry_points.cache_clear()
    for name in [m for m in sys.modules if m.startswith("userarch_")]:
        del sys.modules[name]


def install(monkeypatch, points: list) -> None:
    """`points` as the installed packages' csrs.architectures entry points (other groups as they are)."""
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kw: [p for p in points if p.group == kw["group"]]
                        if kw.get("group") == "csrs.architectures" else real(**kw))
    arch_module._entry_points.cache_clear()


def user_module(tmp_path, name: str):
    """The module `name` (MODULE's text) in tmp_path, not imported yet; the path of its import marker."""
    (tmp_path / f"{name}.py").write_text(MODULE)
    return tmp_path / f"{name}.imported"


def forget(monkeypatch, name: str) -> None:
    """What a new process knows: the built-in architectures only, module `name` not imported."""
    monkeypatch.setattr(arch_module, "_REGISTRY", {k: v for k, v in arch_module._REGISTRY.items()
                                                   if v.__module__ == arch_module.__name__})
    monkeypatch.setattr(arch_module, "_ALLOWED", set())
    sys.modules.pop(name, None)


def train_args(arch: str, out) -> list[str]:
    return ["train", "--method", "gaussian", "--dataset", "synthetic", "--arch", arch, "--epochs", "1", "--batch",
            "32", "--max-steps-per-epoch", "2", "--threads", "1", "--device", "cpu", "--quiet", "--out", str(out)]


def certify_args(checkpoint) -> list[str]:
    return ["certify", "--checkpoint", str(checkpoint), "--dataset", "synthetic", "--num-examples", "8", "--n0",
            "10", "--n", "40", "--batch", "64", "--precision", "fp32", "--device", "cpu", "--quiet"]


def test_a_module_allowed_by_the_variable_trains_certifies_and_reports_by_name(tmp_path, monkeypatch, capsys):
    user_module(tmp_path, "userarch_a")
    monkeypatch.setenv("CSRS_ARCHITECTURES", "userarch_a")
    assert "tiny-net" in architectures()
    case = tmp_path / "case"
    assert cli.main(train_args("tiny-net", case / "tiny")) == 0
    model, meta = load_model(case / "tiny.pt")
    assert meta["arch"] == "tiny-net" and isinstance(model[0], Normalize)
    assert model[0].mean.flatten().tolist() == [0.5] * 3 and model[1][-1].out_features == 4
    assert cli.main(certify_args(case / "tiny.pt")) == 0
    assert cli.main(["report", "--checkpoints", str(case), "--cost", "seedwise:1", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("tiny,gaussian,")


def test_a_checkpoint_naming_a_module_nobody_allowed_is_refused_and_the_module_never_imported(tmp_path, monkeypatch,
                                                                                            capsys):
    marker = user_module(tmp_path, "userarch_b")
    monkeypatch.setenv("CSRS_ARCHITECTURES", "userarch_b:net")
    assert cli.main(train_args("userarch_b:net", tmp_path / "b")) == 0
    monkeypatch.delenv("CSRS_ARCHITECTURES")
    forget(monkeypatch, "userarch_b")
    marker.unlink()
    capsys.readouterr()
    assert cli.main(certify_args(tmp_path / "b.pt")) == 2
    err = capsys.readouterr().err
    assert "'userarch_b:net' is not registered: it names module userarch_b" in err
    assert "CSRS_ARCHITECTURES=userarch_b:net" in err and "'csrs.architectures' entry-point group" in err
    assert "userarch_b" not in sys.modules and not marker.exists()
    with pytest.raises(CSRSError, match="CSRS_ARCHITECTURES=userarch_b:net"):
        load_model(tmp_path / "b.pt")
    assert "userarch_b" not in sys.modules and not marker.exists()

    monkeypatch.setenv("CSRS_ARCHITECTURES", "userarch_b:net")  # the user allows it: now it certifies
    assert cli.main(certify_args(tmp_path / "b.pt")) == 0 and marker.exists()


def test_a_plain_name_nobody_registered_is_refused_with_the_ways_to_allow_it(tmp_path):
    save_checkpoint(tmp_path / "c.pt", build_model("resnet8", 4, META["mean"], META["std"]),
                    {**META, "arch": "someones-net"})
    with pytest.raises(CSRSError, match=r"unknown architecture 'someones-net': registered are .*resnet8.* "
                                        r"naming its module in CSRS_ARCHITECTURES .* entry point"):
        load_model(tmp_path / "c.pt")


def test_module_factory_asked_for_with_arch_is_imported_and_known_by_that_name(tmp_path):
    marker = user_module(tmp_path, "userarch_d")
    assert not marker.exists() and "userarch_d:net" not in architectures()
    assert cli.main(train_args("userarch_d:net", tmp_path / "d")) == 0
    assert marker.exists() and "userarch_d:net" in architectures()
    model, meta = load_model(tmp_path / "d.pt")
    assert meta["arch"] == "userarch_d:net" and isinstance(model[0], Normalize)


def test_what_the_user_names_is_checked_with_a_message(tmp_path, monkeypatch):
    user_module(tmp_path, "userarch_e")
    assert use_architecture("cifar_resnet20") == "resnet20" and use_architecture("userarch_e:net") == "userarch_e:net"
    for arch, words in [("vgg", "unknown architecture 'vgg'; choose one of .*resnet20.* MODULE:FACTORY"),
                        ("userarch_e:missing", "cannot be loaded .AttributeError"),
                        ("userarch_nowhere:net", "cannot be loaded .ModuleNotFoundError"),
                        ("userarch_e:NOT_CALLABLE", "is not callable .type 'int'.: a factory must be")]:
        with pytest.raises(CSRSError, match=words):
            use_architecture(arch)
    use_architecture("userarch_e:not_a_module")
    with pytest.raises(CSRSError, match="returned a str: a factory must be a function of the number of classes"):
        build_model("userarch_e:not_a_module", 4, META["mean"], META["std"])
    with pytest.raises(CSRSError, match="name 'resnet20' is taken by csrs_core.models.architectures:resnet20"):
        arch_module.register_architecture("resnet20")(lambda n: None)
    with pytest.raises(CSRSError, match="name 'a:b' is not allowed"):
        arch_module.register_architecture("a:b")
    for value, words in [("userarch_e, not a module", "is neither a module"),
                         ("userarch_nowhere", "entry 'userarch_nowhere' cannot be loaded")]:
        monkeypatch.setenv("CSRS_ARCHITECTURES", value)
        with pytest.raises(CSRSError, match=words):
            architectures()


def test_an_installed_entry_point_is_listed_without_importing_and_built_when_asked(tmp_path, monkeypatch):
    marker = user_module(tmp_path, "userarch_f")
    points = [importlib.metadata.EntryPoint("pkg-net", "userarch_f:net", "csrs.architectures"),
              importlib.metadata.EntryPoint("resnet20", "userarch_f:net", "csrs.architectures")]
    install(monkeypatch, points)
    with pytest.warns(UserWarning, match="entry point resnet20 = userarch_f:net is not used: the name is taken"):
        names = architectures()
    assert "pkg-net" in names and not marker.exists()
    save_checkpoint(tmp_path / "f.pt", build_model("pkg-net", 4, META["mean"], META["std"]), {**META, "arch": "pkg-net"})
    assert marker.exists()
    model, meta = load_model(tmp_path / "f.pt")
    assert meta["arch"] == "pkg-net" and isinstance(model[0], Normalize)
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 4)
    assert isinstance(build_model("resnet20", 4, META["mean"], META["std"])[1], arch_module.CifarResNet)


def test_a_checkpoint_of_the_field_imports_into_an_architecture_asked_for_with_arch(tmp_path, capsys):
    from test_import import macer_file
    user_module(tmp_path, "userarch_g")
    macer_file(tmp_path / "macer.pth", depth=14)
    out = tmp_path / "imported.pt"
    assert cli.main(["import", str(tmp_path / "macer.pth"), "--out", str(out), "--arch", "userarch_g:resnet14",
                     "--dataset", "cifar10", "--sigma", "0.25"]) == 0, capsys.readouterr().err
    model, meta = load_model(out)
    assert meta["arch"] == "userarch_g:resnet14" and isinstance(model[1], arch_module.CifarResNet)
