"""Background jobs never lie about their state and never signal a process that is not theirs."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from csrs_core import CSRSError, jobs
from csrs_core.runtime.locks import OutputBusyError, output_lock

TINY = ["train", "--method", "gaussian", "--dataset", "synthetic", "--arch", "resnet8", "--epochs", "1",
        "--batch", "32", "--threads", "1", "--max-steps-per-epoch", "3"]
LONG = ["train", "--method", "macer", "--dataset", "synthetic", "--arch", "resnet8", "--epochs", "50",
        "--batch", "32", "--threads", "1"]


def _wait_until(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _info(root, job_id):
    return [j for j in jobs.list_jobs(root) if j["id"] == job_id][0]


def _wait_for_a_step(root, job_id):
    _wait_until(lambda: any(e["event"] == "step" for e in _info(root, job_id)["events"]), 120, "a training step")


def _read(root, job_id, name):
    return json.loads((jobs.jobs_dir(root) / job_id / name).read_text())


@pytest.fixture(autouse=True)
def _kill_leftover_jobs(tmp_path):
    """Whatever a failing test leaves running (verified to be the job's own processes) is killed."""
    yield
    for folder in jobs.jobs_dir(tmp_path).glob("*"):
        for name, keys in (("job.json", ("runner_pid", "runner_create_time", "runner_start_ticks")),
                           ("child.json", ("pid", "create_time", "start_ticks"))):
            try:
                rec = json.loads((folder / name).read_text())
            except (OSError, ValueError):
                continue
            proc = jobs.own_process(*(rec.get(k) for k in keys)) if isinstance(rec, dict) else None
            if proc is not None:
                proc.kill()


# --- moved here from test_jobs_cli.py ----------------------------------------------------------------

def test_job_runs_lists_and_refuses_duplicates(tmp_path):
    out = tmp_path / "j"
    args = [*TINY, "--out", str(out)]
    job = jobs.start_job(tmp_path, "train", args, str(out))
    with pytest.raises(jobs.JobError, match="already writing"):
        jobs.start_job(tmp_path, "train", args, str(out) + ".pt")
    assert jobs.wait(tmp_path, job, 300) == "done"
    [info] = jobs.list_jobs(tmp_path)
    assert info["state"] == "done" and info["progress"]["event"] == "done" and info["exit_code"] == 0
    assert (out.with_suffix(".pt")).exists()
    child = _read(tmp_path, job, "child.json")
    assert child["pid"] > 1 and child["create_time"] > 0


def test_cancel_and_failed_job_keeps_its_log(tmp_path):
    job = jobs.start_job(tmp_path, "train", [*LONG, "--out", str(tmp_path / "long")], str(tmp_path / "long"))
    _wait_for_a_step(tmp_path, job)
    jobs.cancel(tmp_path, job)
    assert jobs.wait(tmp_path, job, 120) == "cancelled"
    bad = jobs.start_job(tmp_path, "train", [*TINY, "--cost", "seedwise:9", "--out", str(tmp_path / "bad")],
                         str(tmp_path / "bad"))
    assert jobs.wait(tmp_path, bad, 120) == "failed"
    info = _info(tmp_path, bad)
    assert "out of range" in info["log_tail"] and info["exit_code"] == 2 and info["reason"] == "exit code 2"


# --- (a) a recorded pid that now belongs to another process ------------------------------------------

def _fake_job(root, job_id, **fields):
    folder = jobs.jobs_dir(root) / job_id
    folder.mkdir(parents=True)
    info = {"id": job_id, "kind": "train", "argv": ["train"], "out": str(root / "x"),
            "out_key": str(root / "x"), "created": time.time() - 3600, "cwd": str(root), **fields}
    (folder / "job.json").write_text(json.dumps(info))
    return folder


@pytest.mark.parametrize("recorded", ["wrong", "absent"])
def test_cancel_leaves_a_process_that_reused_the_runner_pid_alone(tmp_path, recorded):
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        real = psutil.Process(stranger.pid).create_time()
        fields = {"runner_pid": stranger.pid}
        if recorded == "wrong":
            fields["runner_create_time"] = real - 5.0
        folder = _fake_job(tmp_path, "20240101-000000-aaaaaa", **fields)
        # the command's identity points at the stranger too, started at another time
        (folder / "child.json").write_text(json.dumps({"pid": stranger.pid, "create_time": real - 7.0}))
        assert jobs.own_process(stranger.pid, real) is not None
        assert jobs.own_process(stranger.pid, real - 5.0) is None and jobs.own_process(stranger.pid, None) is None
        [info] = jobs.list_jobs(tmp_path)
        assert info["state"] == "failed" and "runner died" in info["reason"]
        jobs.cancel(tmp_path, folder.name)
        time.sleep(0.3)
        assert stranger.poll() is None, "cancel signalled a process that is not the job's"
        assert not (folder / "cancelled").exists() and jobs.job_state(folder) == "failed"
    finally:
        stranger.kill()
        stranger.wait()


def test_a_job_whose_runner_never_recorded_itself(tmp_path):
    old = _fake_job(tmp_path, "20240101-000000-bbbbbb")
    assert jobs.job_status(old)["state"] == "failed" and "never started" in jobs.job_status(old)["reason"]
    fresh = _fake_job(tmp_path, "20240101-000000-cccccc", created=time.time())
    assert jobs.job_state(fresh) == "queued"  # start_job is between creating it and recording the runner


def test_runner_cancelled_before_it_starts_the_command(tmp_path):
    folder = _fake_job(tmp_path, "20240101-000000-dddddd", argv=["train", "--method", "nonsense"])
    (folder / "cancelled").touch()
    subprocess.run([sys.executable, "-m", "csrs_core.jobs", str(folder)], timeout=60)
    assert not (folder / "child.json").exists()
    status = jobs.job_status(folder)
    assert status["state"] == "cancelled" and status["reason"] == "cancelled before the command started"


# --- (b) the runner dies, the command goes on ---------------------------------------------------------

def test_runner_killed_leaves_an_orphan_that_cancel_stops(tmp_path):
    out = tmp_path / "orphan"
    job = jobs.start_job(tmp_path, "train", [*LONG, "--out", str(out)], str(out))
    _wait_for_a_step(tmp_path, job)
    runner = _read(tmp_path, job, "job.json")
    child = _read(tmp_path, job, "child.json")
    assert runner["runner_create_time"] and child["create_time"]
    assert jobs.job_state(jobs.jobs_dir(tmp_path) / job) == "running"
    psutil.Process(runner["runner_pid"]).kill()
    _wait_until(lambda: _info(tmp_path, job)["state"] == "orphaned", 20, "state orphaned")
    assert "still runs" in _info(tmp_path, job)["reason"]
    with pytest.raises(jobs.JobError, match="already writing"):  # the orphan still writes the output
        jobs.start_job(tmp_path, "train", [*LONG, "--out", str(out)], str(out))
    jobs.cancel(tmp_path, job)
    assert jobs.wait(tmp_path, job, 60) == "cancelled"
    _wait_until(lambda: jobs.own_process(child["pid"], child["create_time"], child.get("start_ticks")) is None,
                20, "the command to end")


# --- (c) the command is stopped by a signal nobody asked for ------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_command_stopped_by_a_signal_without_cancel_is_interrupted(tmp_path, sig):
    out = tmp_path / "victim"
    job = jobs.start_job(tmp_path, "train", [*LONG, "--out", str(out)], str(out))
    _wait_for_a_step(tmp_path, job)
    child = _read(tmp_path, job, "child.json")
    psutil.Process(child["pid"]).send_signal(sig)
    assert jobs.wait(tmp_path, job, 60) == "interrupted"
    info = _info(tmp_path, job)
    assert "without a cancel request" in info["reason"]
    if sig == signal.SIGKILL:
        assert info["exit_code"] == -signal.SIGKILL and info["signal"] == "SIGKILL"


@pytest.mark.parametrize("code, stopped, cancel, state", [
    (0, False, False, "done"), (0, False, True, "done"), (0, True, False, "interrupted"),
    (0, True, True, "cancelled"), (-15, False, False, "interrupted"), (-15, False, True, "cancelled"),
    (-9, False, False, "interrupted"), (130, False, False, "interrupted"), (143, False, True, "cancelled"),
    (1, False, False, "failed"), (2, False, True, "failed"),
])
def test_exit_codes_map_to_states(tmp_path, code, stopped, cancel, state):
    folder = _fake_job(tmp_path, "20240101-000000-eeeeee")
    (folder / "exit_code").write_text(str(code))
    if stopped:
        (folder / "progress.jsonl").write_text(json.dumps({"event": "stopped", "time": 0}) + "\n")
    if cancel:
        (folder / "cancelled").touch()
    assert jobs.job_state(folder) == state


# --- (d) two starts on one output at the same instant -------------------------------------------------

def test_simultaneous_starts_on_one_output_start_exactly_one(tmp_path, monkeypatch):
    slow_active = jobs._active_jobs

    def widened(root):  # widen the check-then-create window: without the lock both would pass it
        found = slow_active(root)
        time.sleep(0.5)
        return found
    monkeypatch.setattr(jobs, "_active_jobs", widened)
    out = tmp_path / "same"
    barrier = threading.Barrier(2)
    started, refused = [], []

    def start():
        barrier.wait()
        try:
            started.append(jobs.start_job(tmp_path, "train", [*LONG, "--out", str(out)], str(out)))
        except jobs.JobError as exc:
            refused.append(str(exc))
    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(started) == 1 and len(refused) == 1 and "already writing" in refused[0]
    assert len(jobs.list_jobs(tmp_path)) == 1
    jobs.cancel(tmp_path, started[0])
    assert jobs.wait(tmp_path, started[0], 60) == "cancelled"


# --- (e) a corrupt job folder -------------------------------------------------------------------------

def test_corrupt_job_folders_are_listed_as_broken_and_block_nothing(tmp_path):
    out = tmp_path / "after"
    base = jobs.jobs_dir(tmp_path)
    for name, text in [("bad-json", "{not json"), ("not-object", "[1, 2]"),
                       ("missing-fields", json.dumps({"id": "missing-fields", "out": str(out)}))]:
        (base / name).mkdir(parents=True)
        (base / name / "job.json").write_text(text)
    (base / "no-job-json").mkdir()
    code = _fake_job(tmp_path, "bad-exit-code", out=str(out), out_key=str(out))
    (code / "exit_code").write_text("garbage")
    listed = {j["id"]: j for j in jobs.list_jobs(tmp_path)}
    assert set(listed) == {"bad-json", "not-object", "missing-fields", "no-job-json", "bad-exit-code"}
    for j in listed.values():
        assert j["state"] == "broken" and j["error"] and {"kind", "created", "out"} <= set(j)
    assert "unreadable" in listed["bad-json"]["error"] and "lacks" in listed["missing-fields"]["error"]
    assert "missing" in listed["no-job-json"]["error"] and "garbage" in listed["bad-exit-code"]["error"]
    with pytest.raises(jobs.JobError, match="broken"):
        jobs.cancel(tmp_path, "bad-json")
    cli = subprocess.run([sys.executable, "-m", "csrs_core", "jobs", "list", "--root", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0 and cli.stdout.count("broken") == 5, cli.stderr
    job = jobs.start_job(tmp_path, "train", [*TINY, "--out", str(out)], str(out))
    assert jobs.wait(tmp_path, job, 120) == "done"


# --- (f) one writer per output ------------------------------------------------------------------------

_HOLD = "from csrs_core.runtime.locks import output_lock\nimport sys, time\nwith output_lock(sys.argv[1]):\n" \
        "    print('held', flush=True)\n    time.sleep(float(sys.argv[2]))\n"


def test_output_lock_refuses_a_second_holder_in_this_and_another_process(tmp_path):
    target = tmp_path / "model.pt"
    with output_lock(target) as lock_file:
        assert lock_file == tmp_path / "model.pt.lock"
        with pytest.raises(OutputBusyError, match="being written by another run") as err:
            with output_lock(target, timeout=0):
                pass
        assert isinstance(err.value, CSRSError) and "model.pt.lock" in str(err.value)
        other = subprocess.run([sys.executable, "-c", _HOLD, str(target), "0"], capture_output=True, text=True,
                               timeout=60)
        assert other.returncode != 0 and "being written by another run" in other.stderr
    with output_lock(target):  # released at the end of the block
        pass
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(target), "30"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputBusyError):
            with output_lock(target, timeout=0.2):
                pass
        holder.kill()  # the kernel drops a dead holder's lock
        holder.wait()
        with output_lock(target):
            pass
    finally:
        holder.kill()
        holder.wait()


def test_a_command_that_ignores_the_cancel_is_killed_after_the_grace_period(tmp_path, monkeypatch):
    """The runner forwards the cancel's SIGTERM; a command still running CANCEL_GRACE_S later is killed."""
    stubborn = tmp_path / "python"
    stubborn.write_text("#!/bin/sh\ntrap '' TERM\nsleep 120\n")
    stubborn.chmod(0o755)
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "job.json").write_text(json.dumps({"argv": ["train"], "cwd": str(tmp_path)}))
    monkeypatch.setattr(jobs.sys, "executable", str(stubborn))
    monkeypatch.setattr(jobs, "CANCEL_GRACE_S", 1.0)
    previous = signal.getsignal(signal.SIGTERM)
    threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
    try:
        t0 = time.time()
        assert jobs._run(folder) == 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert time.time() - t0 < 30 and (folder / "exit_code").read_text() == str(-signal.SIGKILL)
