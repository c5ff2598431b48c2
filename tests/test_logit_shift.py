"""The cohen-shift baseline: a model's logits plus a fixed vector, saved as data (never code), certified
like any checkpoint; and `csrs report --examples` comparing the records of one sample's examples."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from csrs_core.data import load_dataset
from csrs_core.models.architectures import build_model
from csrs_core.models.checkpoints import (CheckpointError, file_digest, load_model, read_checkpoint, save_checkpoint,
                                          save_shifted)
from csrs_core.reports import report_table
from csrs_core.sampling.stage_a import counts_record
from csrs_core.settings import SettingError

META = {"arch": "resnet8", "classes": ["red", "green", "blue", "grey"], "dataset": "synthetic", "sigma": 0.25,
        "method": "gaussian", "mean": [0.5] * 3, "std": [0.25] * 3}


def _base(tmp_path) -> Path:
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "cohen.pt", build_model("resnet8", 4, META["mean"], META["std"]), META)
    return tmp_path / "cohen.pt"


def test_shifted_model_adds_the_vector_to_the_base_logits(tmp_path):
    base = _base(tmp_path)
    save_shifted(base, tmp_path / "shift.pt", [0.0, 2.5, 0.0, 0.0])
    shifted, meta = load_model(tmp_path / "shift.pt")
    model, base_meta = load_model(base)
    x = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(shifted(x) - model(x), torch.tensor([[0.0, 2.5, 0.0, 0.0]]).expand(5, 4))
    assert meta["method"] == "cohen-shift" and meta["logit_shift"] == [0.0, 2.5, 0.0, 0.0]
    assert meta["init"]["sha256"] == file_digest(base) and meta["tensors_sha256"] == base_meta["tensors_sha256"]
    assert set(read_checkpoint(tmp_path / "shift.pt")["state_dict"]) == set(read_checkpoint(base)["state_dict"])


def test_a_shift_moves_the_votes_of_the_smoothed_classifier(tmp_path):
    base = _base(tmp_path)
    save_shifted(base, tmp_path / "towards-c.pt", [0.0, 0.0, 50.0, 0.0])  # far beyond any logit gap: every vote is c
    data = load_dataset("synthetic", "test").subset(np.arange(4))
    plain = counts_record(base, data, n0=8, n=16, precision="fp32")
    moved = counts_record(tmp_path / "towards-c.pt", data, n0=8, n=16, precision="fp32")
    assert (moved.counts[:, 2] == 16).all() and not (plain.counts[:, 2] == 16).all()


@pytest.mark.parametrize("shift", [[0.0, 1.0], [0.0, float("inf"), 0.0, 0.0], "1,2,3,4", [True, 0.0, 0.0, 0.0]])
def test_a_malformed_shift_is_refused_naming_the_field(tmp_path, shift):
    model = build_model("resnet8", 4, META["mean"], META["std"])
    save_checkpoint(tmp_path / "bad.pt", model, dict(META, logit_shift=shift) if isinstance(shift, (list, str)) else META)
    with pytest.raises(CheckpointError, match="logit_shift"):
        load_model(tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="4 finite numbers"):
        save_shifted(_base(tmp_path), tmp_path / "s.pt", [0.0, 1.0])


def test_report_examples_compares_the_records_of_that_sample(tmp_path):
    folder = tmp_path / "case"
    folder.mkdir()
    base = _base(folder)
    save_shifted(base, folder / "cohen-shift.pt", [0.0, 1.0, 0.0, 0.0])
    test = load_dataset("synthetic", "test")
    small, large = test.subset(np.arange(6)), test.subset(np.arange(6, 20))
    small.save_sample(tmp_path / "small.npz")
    for data in (small, large):
        for ckpt in ("cohen", "cohen-shift"):
            counts_record(folder / f"{ckpt}.pt", data, n0=8, n=16, precision="fp32")
    default = report_table(folder, "seedwise:1", 0.1)
    assert set(default.table["examples"]) == {14}  # the policy: more examples
    chosen = report_table(folder, "seedwise:1", 0.1, examples=tmp_path / "small.npz")
    assert set(chosen.table["examples"]) == {6} and set(chosen.table["checkpoint"]) == {"cohen", "cohen-shift"}
    assert chosen.baseline == "cohen"  # the one Gaussian model
    with pytest.raises(SettingError, match="--examples"):
        report_table(folder, "seedwise:1", 0.1, examples=tmp_path / "missing.npz")


def test_default_baseline_among_several_gaussian_models_is_cohen(tmp_path):
    folder = tmp_path / "case"
    folder.mkdir()
    _base(folder)
    shutil.copy(folder / "cohen.pt", folder / "a-extra.pt")
    data = load_dataset("synthetic", "test").subset(np.arange(5))
    for ckpt in ("a-extra", "cohen"):
        counts_record(folder / f"{ckpt}.pt", data, n0=8, n=16, precision="fp32")
    assert report_table(folder, "seedwise:1", 0.1).baseline == "cohen"
