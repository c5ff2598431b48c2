import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CSRS_CACHE", str(tmp_path_factory.getbasetemp() / "csrs-cache"))
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def shared_data():
    if not (SHARED_DATA / "cifar10-jpeg.zip").exists():
        pytest.skip(f"real data sets not present at {SHARED_DATA} (only on development machines)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def synthetic_checkpoint(tmp_path_factory):
    """A Gaussian-trained resnet8 on the synthetic set (trained once per session)."""
    from csrs_core.training import TrainConfig, train
    out = tmp_path_factory.mktemp("ckpt") / "synth"
    train(TrainConfig(method="gaussian", dataset="synthetic", out=str(out), arch="resnet8", epochs=2,
                      batch=32, lr=0.05, threads=2))
    return out.with_suffix(".pt")
