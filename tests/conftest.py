import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# the real data sets (cifar10-jpeg.zip, ham10000.zip, imagenette.zip), where a machine has them
REAL_DATA = Path(os.environ["CSRS_TEST_DATA"]) if os.environ.get("CSRS_TEST_DATA") else None


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CSRS_CACHE", str(tmp_path_factory.getbasetemp() / "csrs-cache"))
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def real_data():
    if REAL_DATA is None or not (REAL_DATA / "cifar10-jpeg.zip").exists():
        pytest.skip("the real data sets are not here: set CSRS_TEST_DATA to the folder holding their zips")
    return REAL_DATA


@pytest.fixture(scope="session")
def synthetic_checkpoint(tmp_path_factory):
    """A Gaussian-trained resnet8 on the synthetic set (trained once per session)."""
    from csrs_core.training.loop import TrainConfig, train
    out = tmp_path_factory.mktemp("ckpt") / "synth"
    train(TrainConfig(method="gaussian", dataset="synthetic", out=str(out), arch="resnet8", epochs=2,
                      batch=32, lr=0.05, threads=2))
    return out.with_suffix(".pt")


@pytest.fixture(scope="session")
def wheel(tmp_path_factory):
    """The project built as a wheel, as `pip wheel --no-deps .` builds it."""
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(out), str(Path(__file__).resolve().parents[1])],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    [path] = out.glob("csrs-*.whl")
    return path


@pytest.fixture(scope="session")
def installed_package(wheel, tmp_path_factory):
    """A folder the wheel was installed into (put it on PYTHONPATH to use the installed package)."""
    target = tmp_path_factory.mktemp("site")
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                                str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-2000:]
    return target
