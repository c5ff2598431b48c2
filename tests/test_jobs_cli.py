import subprocess
import sys
import time

import pytest

from csrs_core import jobs


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "csrs_core", *args], capture_output=True, text=True, timeout=300)


def test_job_runs_lists_and_refuses_duplicates(tmp_path):
    out = tmp_path / "j"
    args = ["train", "--method", "gaussian", "--dataset", "synthetic", "--arch", "resnet8", "--epochs", "1",
            "--batch", "32", "--threads", "1", "--max-steps-per-epoch", "3", "--out", str(out)]
    job = jobs.start_job(tmp_path, "train", args, str(out))
    with pytest.raises(jobs.JobError, match="already writing"):
        jobs.start_job(tmp_path, "train", args, str(out) + ".pt")
    assert jobs.wait(tmp_path, job, 300) == "done"
    [info] = jobs.list_jobs(tmp_path)
    assert info["state"] == "done" and info["progress"]["event"] == "done"
    assert (out.with_suffix(".pt")).exists()


def test_cancel_and_failed_job_keeps_its_log(tmp_path):
    args = ["train", "--method", "macer", "--dataset", "synthetic", "--arch", "resnet8", "--epochs", "50",
            "--batch", "32", "--threads", "1", "--out", str(tmp_path / "long")]
    job = jobs.start_job(tmp_path, "train", args, str(tmp_path / "long"))
    deadline = time.time() + 120
    while time.time() < deadline and not any(e["event"] == "step" for e in jobs.list_jobs(tmp_path)[0]["events"]):
        time.sleep(0.3)
    jobs.cancel(tmp_path, job)
    assert jobs.wait(tmp_path, job, 120) == "cancelled"
    bad = jobs.start_job(tmp_path, "certify", ["certify", "--checkpoint", str(tmp_path / "none.pt"),
                                               "--dataset", "synthetic"], str(tmp_path / "none"))
    assert jobs.wait(tmp_path, bad, 120) == "failed"
    info = [j for j in jobs.list_jobs(tmp_path) if j["id"] == bad][0]
    assert "does not exist" in info["log_tail"]


def test_cli_certify_reuses_cache_and_report_csv(tmp_path, synthetic_checkpoint):
    import shutil
    folder = tmp_path / "ck"
    folder.mkdir()
    shutil.copy(synthetic_checkpoint, folder / "m.pt")
    base = ["certify", "--checkpoint", str(folder / "m.pt"), "--dataset", "synthetic", "--per-class", "4",
            "--n0", "10", "--n", "50", "--batch", "100", "--threads", "1"]
    first = _cli(*base, "--cost", "seedwise:1", "--out", str(tmp_path / "r.csv"))
    assert first.returncode == 0, first.stderr
    assert "sampled" in first.stdout and "Rob_cs" in first.stdout
    second = _cli(*base, "--cost", "pairwise:1>0", "--mode", "paper")
    assert second.returncode == 0 and "reused cached counts" in second.stdout
    assert (tmp_path / "r.csv").read_text().startswith("index,label,")
    rep = _cli("report", "--checkpoints", str(folder), "--cost", "seedwise:1", "--format", "csv")
    assert rep.returncode == 0, rep.stderr
    assert rep.stdout.splitlines()[0] == "checkpoint,method,acc,rob_cs,rob_std,rob_non"
    assert rep.stdout.splitlines()[1].startswith("m,gaussian,")
    latex = _cli("report", "--checkpoints", str(folder), "--cost", "seedwise:1", "--format", "latex")
    assert "\\begin{tabular}" in latex.stdout


@pytest.mark.parametrize("args, words", [
    (["certify", "--checkpoint", "nope.pt", "--dataset", "synthetic"], "does not exist"),
    (["certify", "--checkpoint", "x.pt", "--dataset", "mnist"], "unknown data set"),
    (["certify", "--checkpoint", "x.pt", "--dataset", "cifar10-jpeg", "--data-root", "/nonexistent"], "not found"),
    (["train", "--method", "gaussian", "--dataset", "synthetic", "--cost", "seedwise:9", "--out", "/tmp/x"],
     "out of range"),
])
def test_cli_bad_input_gives_a_message_not_a_traceback(args, words):
    out = _cli(*args)
    assert out.returncode == 2 and words in out.stderr and "Traceback" not in out.stderr
