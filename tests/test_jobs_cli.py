import subprocess
import sys

import pytest


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "csrs_core", *args], capture_output=True, text=True, timeout=300)


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
    assert rep.stdout.splitlines()[0].startswith("checkpoint,method,acc,rob_cs,rob_std,rob_non,")
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
