"""Results you can trust: records tied to the checkpoint content that made them, settings checked
before any work, corrupt records reported truthfully, clear messages for bad files."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from csrs_core.cli import commands as cli
from csrs_core.reports import report_table
from csrs_core.data import load_dataset
from csrs_core.models.checkpoints import CheckpointError, load_model, read_checkpoint, save_checkpoint
from csrs_core.sampling.stage_a import counts_record
from csrs_core.sampling.store import cert_dir, choose_records, list_records


@pytest.fixture
def folder(tmp_path, synthetic_checkpoint):
    """A case folder with one certified checkpoint 'cohen' and a different model 'other' (no record)."""
    case = tmp_path / "case"
    case.mkdir()
    shutil.copy(synthetic_checkpoint, case / "cohen.pt")
    model, meta = load_model(synthetic_checkpoint)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_checkpoint(case / "other.pt", model, {**meta, "method": "macer"})
    data = load_dataset("synthetic", "test").subset(np.arange(16))
    counts_record(case / "cohen.pt", data, n0=10, n=40, batch=64)
    return case


def test_a_record_of_other_checkpoint_content_is_stale_not_shown(folder):
    before = report_table(folder, "seedwise:1", eps=0.1)
    assert before.table.checkpoint.tolist() == ["cohen"]
    shutil.copy(folder / "other.pt", folder / "cohen.pt")          # the file now holds another model
    [info] = list_records(folder / "cohen.pt")
    assert info.status == "stale"
    after = report_table(folder, "seedwise:1", eps=0.1)
    assert after.table.empty
    [note] = after.notes
    assert "cohen.pt" in note and "other checkpoint content" in note and "csrs certify" in note


def test_choice_among_records_is_same_data_then_largest_n_then_most_examples(folder):
    data = load_dataset("synthetic", "test")
    counts_record(folder / "cohen.pt", data, n0=1, n=2, batch=64)              # degenerate, more examples
    counts_record(folder / "other.pt", data.subset(np.arange(16)), n0=10, n=40, batch=64)
    listings = {c: list_records(c) for c in (folder / "cohen.pt", folder / "other.pt")}
    chosen = choose_records(listings)
    record, same = chosen[folder / "cohen.pt"]
    assert record.meta["n"] == 40 and record.meta["num_examples"] == 16 and same
    # alone, the checkpoint still prefers its largest n over its most examples
    alone = choose_records({folder / "cohen.pt": listings[folder / "cohen.pt"]})
    assert alone[folder / "cohen.pt"][0].meta["n"] == 40


def test_a_corrupt_record_is_reported_and_the_next_valid_one_used(folder):
    data = load_dataset("synthetic", "test").subset(np.arange(16))
    counts_record(folder / "cohen.pt", data, n0=10, n=20, batch=64)
    main = next(r for r in list_records(folder / "cohen.pt") if r.meta["n"] == 40)
    raw = bytearray(main.path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    main.path.write_bytes(bytes(raw))
    report = report_table(folder, "seedwise:1", eps=0.1)
    assert report.table.checkpoint.tolist() == ["cohen"] and report.table.examples.tolist() == [16]
    assert any("corrupt" in note and main.path.name in note and "not used" in note for note in report.notes)
    assert not any("recomputed" in note for note in report.notes)


BAD_CERTIFY = [
    (["--n", "0"], "--n = '0'"), (["--n0", "0"], "--n0"), (["--n", "-5"], "--n = '-5'"),
    (["--sigma", "-0.25"], "--sigma"), (["--sigma", "0"], "--sigma"), (["--eps", "-1"], "--eps"),
    (["--eps", "nan"], "--eps"), (["--num-examples", "-995"], "--num-examples"), (["--batch", "0"], "--batch"),
    (["--alpha", "1.5"], "--alpha"), (["--alpha", "0"], "--alpha"), (["--per-class", "0"], "--per-class"),
    (["--cost", "pairwise:3>"], "names no target"), (["--cost", "seedwise:"], "names no seed"),
    (["--cost", "/no/such/cost.json"], "does not exist"), (["--split", "valid"], "--split"),
]


@pytest.mark.parametrize("extra, words", BAD_CERTIFY)
def test_certify_refuses_bad_settings_before_any_work(folder, capsys, extra, words):
    args = ["certify", "--checkpoint", str(folder / "other.pt"), "--dataset", "synthetic", "--num-examples", "4",
            "--n0", "5", "--n", "10", "--quiet", *extra]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert not cert_dir(folder / "other.pt").exists()  # nothing sampled, nothing cached


def test_settings_are_checked_in_the_python_api_too(folder):
    from csrs_core.settings import SettingError
    data = load_dataset("synthetic", "test").subset(np.arange(4))
    for bad in ({"n": 0}, {"n0": -1}, {"batch": 0}, {"sigma": float("nan")}, {"seed": -1}):
        with pytest.raises(SettingError, match="is not allowed"):
            counts_record(folder / "other.pt", data, **{"n0": 5, "n": 10, **bad})
    assert not cert_dir(folder / "other.pt").exists()


@pytest.mark.parametrize("field, value, words", [
    ("sigma", -0.25, "'sigma' must be a finite number > 0"), ("sigma", "0.25", "'sigma' must be"),
    ("classes", "ab", "'classes' must be a list"), ("mean", [0.5, "x", 0.5], "'mean' must be"),
    ("std", [0.0, 1.0, 1.0], "'std' must be"), ("arch", 3, "'arch' must be text"),
])
def test_checkpoint_metadata_of_the_wrong_type_is_refused(tmp_path, synthetic_checkpoint, field, value, words):
    payload = torch.load(synthetic_checkpoint, weights_only=True)
    meta = json.loads(payload["meta_json"])
    meta[field] = value
    payload["meta_json"] = json.dumps(meta)
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=words):
        read_checkpoint(tmp_path / "bad.pt")


def test_checkpoint_without_weights_is_refused(tmp_path, synthetic_checkpoint):
    payload = torch.load(synthetic_checkpoint, weights_only=True)
    payload["state_dict"] = [1, 2]
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="no state dict of tensors"):
        read_checkpoint(tmp_path / "bad.pt")


def test_refused_pickle_and_random_bytes_get_their_own_message(tmp_path):
    import os

    class Exploit:
        def __reduce__(self):
            return (os.system, ("true",))
    torch.save({"x": Exploit()}, tmp_path / "evil.pt")
    (tmp_path / "noise.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match="refused for safety: it holds objects other than tensors"):
        read_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint(tmp_path / "noise.pt")


def _torchrun(*args, port):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
           "-m", "csrs_core", "--", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_torchrun_with_a_rank_that_has_nothing_to_sample(folder):
    base = ["certify", "--checkpoint", str(folder / "other.pt"), "--dataset", "synthetic", "--n0", "5", "--n", "10",
            "--batch", "64", "--threads", "1", "--quiet", "--precision", "fp32", "--device", "cpu"]
    one = _torchrun(*base, "--num-examples", "1", port=29541)
    assert one.returncode == 0, one.stderr[-3000:]
    assert "Acc" in one.stdout
    # everything reused from an overlapping record: no rank samples anything
    from csrs_core.data import select_examples
    data = load_dataset("synthetic", "test")
    for position in select_examples(data.labels.numpy(), 2):  # two one-example records
        counts_record(folder / "other.pt", data.subset([position]), n0=5, n=10, batch=64, sigma=0.3,
                       precision="fp32")
    grow = _torchrun(*base, "--num-examples", "2", "--sigma", "0.3", port=29542)
    assert grow.returncode == 0, grow.stderr[-3000:]
    assert "2 examples reused" in grow.stdout
    infos = list_records(folder / "other.pt")
    assert len(infos) == 4 and all(i.status == "valid" for i in infos)
    assert not list(cert_dir(folder / "other.pt").glob("*rank*-of-*.npz"))


@pytest.mark.parametrize("args, words", [
    (["train", "--method", "gaussian", "--dataset", "synthetic", "--out", "x", "--seed", "99999999999999999999"],
     "--seed"),
    (["train", "--method", "gaussian", "--dataset", "synthetic", "--out", "x", "--lr", "0"], "--lr"),
    (["train", "--method", "macer", "--dataset", "synthetic", "--out", "x", "--lam", "-1"], "--lam"),
    (["train", "--method", "macer", "--dataset", "synthetic", "--out", "x", "--gamma", "0"], "--gamma"),
    (["train", "--method", "cs-macer", "--dataset", "synthetic", "--out", "x", "--beta", "inf"], "--beta"),
    (["train", "--method", "macer", "--dataset", "synthetic", "--out", "x", "--gauss-num", "0"], "--gauss-num"),
    (["train", "--method", "gaussian", "--dataset", "synthetic", "--out", "x", "--device", "gpu"], "--device"),
    (["import", "x.pth", "--out", "y.pt", "--arch", "resnet20", "--dataset", "cifar10", "--sigma", "0.25",
      "--mean", "0.5,abc"], "--mean"),
])
def test_training_and_import_settings_are_refused_with_a_message(tmp_path, capsys, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_booleans_and_fractional_numbers_are_not_whole_numbers():
    import numpy as np

    from csrs_core.settings import CERTIFY, SettingError
    for bad in (True, 2.5, np.float32(2.5)):
        with pytest.raises(SettingError):
            CERTIFY["n"].check(bad)
    assert CERTIFY["n"].check(np.int64(7)) == 7 and CERTIFY["n"].check(3.0) == 3
    with pytest.raises(SettingError):
        CERTIFY["alpha"].check(True)


def test_a_left_over_exposed_variable_does_not_turn_the_guard_off(monkeypatch):
    from csrs_core.dashboard import launch as dashboard_launch
    seen = {}
    monkeypatch.setenv("CSRS_EXPOSED", "0.0.0.0")
    monkeypatch.setattr(dashboard_launch, "run_forwarding_signals", lambda cmd, env: seen.update(env) or 0)
    dashboard_launch.launch(None, None, "127.0.0.1", 8501)
    assert "CSRS_EXPOSED" not in seen
