import json

import pytest
import torch

from csrs_core.models.checkpoints import read_checkpoint
from csrs_core.runtime.progress import read_progress
from csrs_core.training.loop import TrainConfig, TrainingError, augment, train


def _cfg(tmp_path, name, **kw):
    base = dict(method="gaussian", dataset="synthetic", out=str(tmp_path / name), arch="resnet8", epochs=1,
                batch=32, lr=0.05, threads=2, cost="seedwise:1", gauss_num=4, log_every=2)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("method", ["gaussian", "cohen-r", "macer", "cs-macer"])
def test_each_method_reduces_its_loss(tmp_path, method):
    meta = train(_cfg(tmp_path, method, method=method, epochs=3, lr=0.02, max_steps_per_epoch=4))
    losses = [h["loss"] for h in meta["history"]]
    assert losses[-1] < losses[0], losses
    ckpt = read_checkpoint(tmp_path / f"{method}.pt")
    m = ckpt["meta"]
    assert m["method"] == method and m["epochs_done"] == 3 and m["sigma"] == 0.25
    assert m["hyperparameters"]["cost"] == "seedwise:1" and json.loads(m["cost"])["matrix"][1][0] == 1
    assert {"loss", "acc", "images_per_s", "seconds"} <= set(m["history"][0])
    assert all(h["noisy_images"] == 4 * 32 * 4 for h in m["history"])  # steps x batch x k: the training compute


def test_kill_and_resume_ends_in_the_same_state(tmp_path, monkeypatch):
    from csrs_core.training import loop as training
    train(_cfg(tmp_path, "straight", method="cs-macer", epochs=2, max_steps_per_epoch=3))
    real_epoch, calls = training._run_epoch, []

    def crash_in_second_epoch(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real_epoch(*args, **kw)
    monkeypatch.setattr(training, "_run_epoch", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tmp_path, "cut", method="cs-macer", epochs=2, max_steps_per_epoch=3))
    assert read_checkpoint(tmp_path / "cut.pt")["meta"]["epochs_done"] == 1
    monkeypatch.setattr(training, "_run_epoch", real_epoch)
    train(_cfg(tmp_path, "cut", method="cs-macer", epochs=2, max_steps_per_epoch=3))
    a = read_checkpoint(tmp_path / "straight.pt")["state_dict"]
    b = read_checkpoint(tmp_path / "cut.pt")["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    events = read_progress(tmp_path / "cut.progress.jsonl")
    assert [e["resumed"] for e in events if e["event"] == "start"] == [False, True]


def test_other_settings_refuse_to_resume(tmp_path):
    train(_cfg(tmp_path, "x", max_steps_per_epoch=2))
    with pytest.raises(TrainingError, match="other settings"):
        train(_cfg(tmp_path, "x", lr=0.5, max_steps_per_epoch=2))


def test_progress_file_format(tmp_path):
    train(_cfg(tmp_path, "p", max_steps_per_epoch=4))
    events = read_progress(tmp_path / "p.progress.jsonl")
    assert [e["event"] for e in events][0] == "start" and events[-1]["event"] == "done"
    steps = [e for e in events if e["event"] == "step"]
    assert steps and {"epoch", "step", "steps", "loss", "acc", "images_per_s", "eta_s", "lr"} <= set(steps[0])


def test_nan_loss_stops_with_clear_error(tmp_path):
    cfg = _cfg(tmp_path, "nan", lr=1e30, max_steps_per_epoch=6, epochs=2)
    with pytest.raises(TrainingError, match="loss became"):
        train(cfg)
    events = read_progress(tmp_path / "nan.progress.jsonl")
    assert events[-1]["event"] == "error" and "lower --lr" in events[-1]["message"]


def test_augment_keeps_shape_and_content():
    x = torch.rand(5, 3, 16, 16)
    y = augment(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1


def test_warm_start_records_its_origin(tmp_path, synthetic_checkpoint):
    meta = train(_cfg(tmp_path, "warm", method="macer", init=str(synthetic_checkpoint), max_steps_per_epoch=2))
    assert meta["init"]["method"] == "gaussian"


def test_a_warm_start_is_known_by_its_content_not_its_path(tmp_path, synthetic_checkpoint):
    """A finished warm-started run stays that run when its warm start is copied elsewhere (resuming
    goes on), and is refused when the file at that path holds other weights."""
    import shutil
    first = tmp_path / "a" / "init.pt"
    first.parent.mkdir()
    shutil.copy(synthetic_checkpoint, first)
    train(_cfg(tmp_path, "warm", method="macer", init=str(first), max_steps_per_epoch=2))
    moved = tmp_path / "b" / "init.pt"
    moved.parent.mkdir()
    shutil.move(first, moved)
    meta = train(_cfg(tmp_path, "warm", method="macer", init=str(moved), max_steps_per_epoch=2))
    assert meta["epochs_done"] == 1
    other = tmp_path / "other"
    train(_cfg(tmp_path, "other", max_steps_per_epoch=1, seed=5))
    shutil.copy(other.with_suffix(".pt"), moved)
    with pytest.raises(TrainingError, match="other settings"):
        train(_cfg(tmp_path, "warm", method="macer", init=str(moved), max_steps_per_epoch=2))


def test_ddp_two_processes_on_cpu(tmp_path):
    import subprocess
    import sys
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29544",
           "-m", "csrs_core", "--", "train", "--method", "cs-macer", "--dataset", "synthetic", "--arch", "resnet8",
           "--epochs", "1", "--batch", "32", "--gauss-num", "2", "--cost", "seedwise:0",
           "--max-steps-per-epoch", "3", "--threads", "1", "--device", "cpu", "--out", str(tmp_path / "ddp")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert read_checkpoint(tmp_path / "ddp.pt")["meta"]["epochs_done"] == 1


def test_output_names_with_dots_keep_their_full_name(tmp_path):
    assert _cfg(tmp_path, "cohen-r-w1.1").checkpoint_path.name == "cohen-r-w1.1.pt"
    assert _cfg(tmp_path, "m.pt").checkpoint_path.name == "m.pt"
    assert _cfg(tmp_path, "cohen-r-w1.1").progress_path.name == "cohen-r-w1.1.progress.jsonl"


def test_resuming_with_other_epochs_is_refused_for_cosine_and_continues_for_step(tmp_path):
    train(_cfg(tmp_path, "cos", epochs=1, max_steps_per_epoch=2))
    with pytest.raises(TrainingError, match="cosine schedule, which depends on the total"):
        train(_cfg(tmp_path, "cos", epochs=2, max_steps_per_epoch=2))
    train(_cfg(tmp_path, "step1", epochs=2, schedule="step", lr_step=1, max_steps_per_epoch=2))
    train(_cfg(tmp_path, "step2", epochs=1, schedule="step", lr_step=1, max_steps_per_epoch=2))
    extended = train(_cfg(tmp_path, "step2", epochs=2, schedule="step", lr_step=1, max_steps_per_epoch=2))
    assert extended["epochs_done"] == 2
    a = read_checkpoint(tmp_path / "step1.pt")["state_dict"]
    b = read_checkpoint(tmp_path / "step2.pt")["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_each_rank_draws_its_own_noise_and_no_two_purposes_share_a_stream():
    from csrs_core.training.loop import stream
    cpu = torch.device("cpu")
    draws = [torch.randn(64, generator=stream("noise", 0, 3, cpu, r)) for r in range(3)]
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])
    assert torch.equal(draws[0], torch.randn(64, generator=stream("noise", 0, 3, cpu, 0)))
    purposes = [torch.randn(64, generator=stream(p, 0, 3, cpu)) for p in ("order", "augment", "noise")]
    assert all(not torch.equal(a, b) for i, a in enumerate(purposes) for b in purposes[i + 1:])
    assert not torch.equal(purposes[2], torch.randn(64, generator=stream("noise", 0, 4, cpu)))  # another epoch


def test_fp16_training_uses_gradient_scaling(tmp_path, monkeypatch):
    scalers = []
    real = torch.amp.GradScaler

    def spy(*args, **kw):
        scalers.append(kw.get("enabled", True))
        return real(*args, **kw)
    monkeypatch.setattr(torch.amp, "GradScaler", spy)
    meta = train(_cfg(tmp_path, "half", precision="fp16", max_steps_per_epoch=2))
    assert scalers == [True] and meta["epochs_done"] == 1
    assert "scaler" in read_checkpoint(tmp_path / "half.pt")["train_state"]


def test_a_signal_exits_non_zero_says_interrupted_and_a_rerun_resumes(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    args = [sys.executable, "-m", "csrs_core", "train", "--method", "gaussian", "--dataset", "synthetic",
            "--arch", "resnet8", "--epochs", "40", "--batch", "32", "--threads", "1", "--log-every", "1",
            "--quiet", "--schedule", "step", "--out", str(tmp_path / "sig")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progress = tmp_path / "sig.progress.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not any(e["event"] == "epoch" for e in read_progress(progress)):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "interrupted by SIGTERM" in err
    events = read_progress(progress)
    assert events[-1]["event"] == "interrupted"
    done = read_checkpoint(tmp_path / "sig.pt")["meta"]["epochs_done"]
    assert 1 <= done < 40
    again = train(_cfg(tmp_path, "sig", epochs=done + 1, schedule="step", batch=32, lr=0.1, cost="none",
                       gauss_num=None, log_every=1))  # the command line's default: one copy for gaussian
    assert again["epochs_done"] == done + 1


def test_lambda_warm_up_rises_linearly_reaches_the_loss_and_is_logged(tmp_path, monkeypatch):
    from csrs_core.training import loop as training
    from csrs_core.training.loop import robustness_weight
    cfg = _cfg(tmp_path, "w", method="macer", lam=2.0, lam_warmup=2, epochs=2)
    assert [robustness_weight(cfg, e, s, 4) for e, s in ((0, 0), (0, 2), (1, 0), (1, 2), (2, 0), (5, 3))] == \
        [0.0, 0.5, 1.0, 1.5, 2.0, 2.0]
    assert robustness_weight(_cfg(tmp_path, "n", method="macer", lam=2.0), 0, 0, 4) == 2.0
    used, real_loss = [], training.macer_loss

    def recording_loss(*args, lam, **kw):
        used.append(lam)
        return real_loss(*args, lam=lam, **kw)
    monkeypatch.setattr(training, "macer_loss", recording_loss)
    train(_cfg(tmp_path, "w", method="macer", lam=2.0, lam_warmup=2, epochs=2, max_steps_per_epoch=4))
    assert used == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    logged = [e["lam"] for e in read_progress(tmp_path / "w.progress.jsonl") if e["event"] == "step"]
    assert logged == [0.25, 0.75, 1.25, 1.75]  # λ of the step that closes each log window


def test_a_warm_up_longer_than_the_run_is_refused_and_plain_methods_have_none(tmp_path):
    from csrs_core.settings import SettingError
    with pytest.raises(SettingError, match="--lam-warmup = 3 .* --epochs 2"):
        _cfg(tmp_path, "x", method="cs-macer", lam_warmup=3, epochs=2)
    assert _cfg(tmp_path, "g", method="gaussian", lam_warmup=3, epochs=2).lam_warmup == 0


def test_a_run_from_before_an_option_existed_resumes_at_its_default(tmp_path):
    train(_cfg(tmp_path, "old", max_steps_per_epoch=2))
    path = tmp_path / "old.pt"
    payload = read_checkpoint(path)
    del payload["meta"]["hyperparameters"]["lam_warmup"]
    torch.save(payload, path)
    meta = train(_cfg(tmp_path, "old", max_steps_per_epoch=2))
    assert meta["epochs_done"] == 1


def test_train_gives_back_the_signal_handlers_it_replaced(tmp_path):
    import signal

    from csrs_core.training.loop import TrainConfig, train

    def mine(signum, frame):
        pass
    previous, interrupt = signal.signal(signal.SIGTERM, mine), signal.getsignal(signal.SIGINT)
    try:
        train(TrainConfig(method="gaussian", dataset="synthetic", out=str(tmp_path / "h"), arch="resnet8", epochs=1,
                          batch=32, max_steps_per_epoch=2, threads=1))
        assert signal.getsignal(signal.SIGTERM) is mine and signal.getsignal(signal.SIGINT) is interrupt
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("method", ["cs-macer", "cohen-r"])
def test_a_cost_sensitive_method_without_a_costly_mistake_is_refused(tmp_path, capsys, method):
    from csrs_core.cli import commands as cli
    base = ["train", "--method", method, "--dataset", "synthetic", "--out", str(tmp_path / "m"), "--epochs", "1"]
    assert cli.main(base) == 2 and "needs --cost naming the costly mistakes" in capsys.readouterr().err
    assert cli.main(base + ["--cost", "none"]) == 2 and "needs --cost" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_each_epoch_records_a_val_measure_under_noise_and_tensorboard_is_asked_for_plainly(tmp_path, capsys):
    """The history holds val_acc and val_rob_cs (a fixed val subset at n = 64) per epoch, the same whatever
    else ran; --tensorboard without the package is refused before anything is written, naming it."""
    import importlib.util

    from csrs_core.cli import commands as cli
    from csrs_core.models.checkpoints import read_meta
    base = ["train", "--method", "cohen-r", "--dataset", "synthetic", "--arch", "resnet8", "--epochs", "2",
            "--batch", "32", "--cost", "seedwise:1", "--val-examples", "16", "--quiet"]
    assert cli.main(base + ["--out", str(tmp_path / "a")]) == 0
    history = read_meta(tmp_path / "a.pt")["history"]
    assert [sorted(k for k in h if k.startswith("val_")) for h in history] == [["val_acc", "val_rob_cs"]] * 2
    assert all(0 <= h["val_acc"] <= 1 for h in history)
    if importlib.util.find_spec("tensorboard") is None:
        assert cli.main(base + ["--out", str(tmp_path / "b"), "--tensorboard", str(tmp_path / "tb")]) == 2
        assert "the tensorboard package is not installed" in capsys.readouterr().err
        assert not (tmp_path / "b.pt").exists() and not (tmp_path / "tb").exists()
    else:
        assert cli.main(base + ["--out", str(tmp_path / "b"), "--tensorboard", str(tmp_path / "tb")]) == 0
        assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
