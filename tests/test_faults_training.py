"""Training on a disk that fills up ends in a message naming the checkpoint, with the previous one intact;
a resumed warm-started run keeps its warm start's identity."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from csrs_core.cli import commands as cli
from csrs_core.models.checkpoints import read_meta
from csrs_core.runtime.progress import read_progress
from csrs_core.training.loop import TrainConfig, train

TINY = ["train", "--method", "gaussian", "--dataset", "synthetic", "--arch", "resnet8", "--epochs", "2",
        "--batch", "32", "--threads", "1", "--max-steps-per-epoch", "2", "--quiet"]
TORCH_WRITE_FAILURE = ("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                       "data/3: file write failed")


def test_a_failed_checkpoint_write_names_the_file_and_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch):
    real_save, saves = torch.save, []

    def save_once_then_fail(*args, **kwargs):
        saves.append(args[1])
        if len(saves) > 1:
            raise RuntimeError(TORCH_WRITE_FAILURE)
        return real_save(*args, **kwargs)
    monkeypatch.setattr(torch, "save", save_once_then_fail)
    out = tmp_path / "m"
    assert cli.main([*TINY, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"could not write the checkpoint {out}.pt after epoch 2" in err and "disk is full" in err
    assert "the checkpoint of epoch 1 is intact" in err
    assert "inline_container" not in err and "PytorchStreamWriter" not in err and "Traceback" not in err
    assert read_meta(out.with_suffix(".pt"))["epochs_done"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.progress.jsonl", "m.pt"]
    [error] = [e for e in read_progress(tmp_path / "m.progress.jsonl") if e["event"] == "error"]
    assert error["message"] in err


def test_training_onto_a_full_tmpfs_says_the_disk_is_full(tmp_path, synthetic_checkpoint):
    """A real full disk: a tmpfs with room for one checkpoint and a half, in a private mount namespace."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode:
        pytest.skip("unshare -rm (a private mount namespace) is not available here")
    disk = tmp_path / "disk"
    disk.mkdir()
    size_k = synthetic_checkpoint.stat().st_size * 3 // 2 // 1024
    check = ("from csrs_core.models.checkpoints import read_meta; import sys; "
             "print(read_meta(sys.argv[1])['epochs_done'])")
    script = (f"mount -t tmpfs -o size={size_k}k tmpfs {disk} || exit 99; "
              f"{sys.executable} -m csrs_core {' '.join(TINY)} --out {disk}/m; echo exit=$?; "
              f"{sys.executable} -c \"{check}\" {disk}/m.pt")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    if done.returncode == 99:
        pytest.skip("a tmpfs cannot be mounted in a private mount namespace here")
    assert done.stdout.split() == ["exit=1", "1"], done.stdout + done.stderr
    assert f"could not write the checkpoint {disk}/m.pt after epoch 2" in done.stderr
    assert "the checkpoint of epoch 1 is intact" in done.stderr and "inline_container" not in done.stderr


def test_resuming_a_warm_started_run_keeps_its_warm_start(tmp_path, synthetic_checkpoint):
    settings = dict(method="gaussian", dataset="synthetic", arch="resnet8", batch=32, threads=1,
                    max_steps_per_epoch=2, schedule="step", init=str(synthetic_checkpoint), out=str(tmp_path / "w"))
    first = train(TrainConfig(epochs=1, **settings))
    assert first["init"]["checkpoint"] == str(synthetic_checkpoint)
    train(TrainConfig(epochs=2, **settings))  # resumes the run and extends it by one epoch
    meta = read_meta(Path(tmp_path / "w.pt"))
    assert meta["epochs_done"] == 2 and meta["init"] == first["init"]
