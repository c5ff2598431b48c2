"""Uploads and deletions on the Checkpoints page: no folder the checkpoint list would misread, nothing
written over a job's output, and a file-system refusal (a name too long, a read-only folder) said in
words that name only what the user typed or chose."""
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from csrs_core import jobs
from csrs_core.dashboard.checkpoint_files import add_uploaded_checkpoint, delete_checkpoint
from csrs_core.models.checkpoints import list_checkpoints, read_meta
from csrs_core.runtime.locks import output_lock

TINY = ["train", "--method", "gaussian", "--dataset", "synthetic", "--arch", "resnet8", "--epochs", "1",
        "--batch", "32", "--threads", "1", "--max-steps-per-epoch", "3"]


@pytest.fixture
def content(synthetic_checkpoint) -> bytes:
    return synthetic_checkpoint.read_bytes()


@pytest.mark.parametrize("target", ["x.pt", "case/x.pt", "x.pt/case"])
def test_a_case_folder_named_like_a_checkpoint_is_refused(tmp_path, content, target):
    with pytest.raises(ValueError, match=r"must not end in \.pt"):
        add_uploaded_checkpoint(tmp_path, target, "m.pt", content)
    assert list(tmp_path.iterdir()) == [] and list_checkpoints(tmp_path) == []


def test_an_upload_onto_a_training_jobs_output_is_refused_and_the_job_ends_well(tmp_path, content):
    out = tmp_path / "case" / "run"
    job = jobs.start_job(tmp_path, "train", [*TINY, "--out", str(out)], str(out))
    try:
        with pytest.raises(ValueError, match=f"case/run.pt is used by the train job {job}") as refused:
            add_uploaded_checkpoint(tmp_path, "case", "run.pt", content)
        assert str(tmp_path) not in str(refused.value)
        assert jobs.wait(tmp_path, job, 300) == "done"
    finally:
        jobs.cancel(tmp_path, job)
    assert read_meta(out.with_suffix(".pt"))["epochs_done"] == 1  # the job's own checkpoint, not the upload


def test_an_upload_onto_what_a_run_outside_the_jobs_writes_is_refused(tmp_path, content):
    (tmp_path / "case").mkdir()
    with output_lock(tmp_path / "case" / "run.pt"):  # `csrs train --out case/run` in a shell
        with pytest.raises(ValueError, match="case/run.pt is being written by a running job"):
            add_uploaded_checkpoint(tmp_path, "case", "run.pt", content)
    assert list_checkpoints(tmp_path) == []


def test_a_case_folder_name_too_long_for_the_file_system_is_said(tmp_path, content):
    with pytest.raises(ValueError, match="too long for this file system") as refused:
        add_uploaded_checkpoint(tmp_path, "a" * 300, "m.pt", content)
    assert str(tmp_path) not in str(refused.value) and list(tmp_path.iterdir()) == []


def _run_read_only(folder, code: str, *args: str) -> subprocess.CompletedProcess:
    """Python `code` run while `folder` is read-only: made so with chmod for a user that is not root
    (EACCES), else a read-only bind mount in a private mount namespace (EROFS)."""
    python = " ".join(shlex.quote(a) for a in (sys.executable, "-c", code, *args))
    where = shlex.quote(str(folder))
    if os.geteuid() != 0:
        command = ["sh", "-c", f"chmod a-w {where} && {python}; chmod u+w {where}"]
    elif shutil.which("unshare") and subprocess.run(["unshare", "-rm", "true"]).returncode == 0:
        command = ["unshare", "-rm", "sh", "-c",
                   f"mount --bind {where} {where} && mount -o remount,bind,ro {where} && {python}"]
    else:
        pytest.skip("no way to make a folder read-only for root here (unshare -rm is not available)")
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_deleting_in_a_read_only_folder_says_so_naming_only_the_checkpoint(tmp_path, synthetic_checkpoint):
    case = tmp_path / "case"
    case.mkdir()
    shutil.copy(synthetic_checkpoint, case / "m.pt")
    code = ("import sys; from pathlib import Path; from csrs_core.dashboard.checkpoint_files import delete_checkpoint\n"
            "try:\n    delete_checkpoint(Path(sys.argv[1]), 'case/m.pt')\n"
            "except ValueError as exc:\n    print(exc)")
    done = _run_read_only(case, code, str(case / "m.pt"))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stdout.startswith("Cannot delete case/m.pt: its folder is not writable"), done.stdout
    assert str(tmp_path) not in done.stdout and (case / "m.pt").exists()
    delete_checkpoint(case / "m.pt", "case/m.pt")  # writable again: deleted
    assert not (case / "m.pt").exists()


@pytest.mark.parametrize("target, words", [("a" * 300, "too long for this file system"),
                                           ("x.pt", "must not end in .pt")])
def test_the_checkpoints_page_says_why_an_upload_is_refused(tmp_path, synthetic_checkpoint, monkeypatch, target, words):
    from dashboard_fixtures import open_app
    (tmp_path / "synth").mkdir()
    shutil.copy(synthetic_checkpoint, tmp_path / "synth" / "cohen.pt")
    at = open_app(tmp_path, monkeypatch).switch_page("views/checkpoints.py").run()
    next(t for t in at.text_input if t.label == "Into case folder").input(target)
    uploader = next(u for u in at.file_uploader if u.label == "CSRS checkpoint (.pt)")
    uploader.upload("m.pt", synthetic_checkpoint.read_bytes()).run()
    next(b for b in at.button if b.label == "Add uploaded checkpoint").click().run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any(words in e for e in errors) and not any(str(tmp_path) in e for e in errors), errors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synth"]
