"""A cancelled orphan that ignores SIGTERM is killed once its grace period is over, though its runner is
gone; an orphan that finished reads "done"; SIGHUP stops `csrs dashboard` and its server."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from csrs_core import jobs

STUBBORN = ["sh", "-c", "trap '' TERM; exec sleep 120"]  # SIGTERM stays ignored across the exec


def _ended_identity() -> dict:
    """The identity of a process that has ended: a runner that died."""
    runner = subprocess.Popen(["true"])
    ident = jobs.process_identity(runner.pid)
    runner.wait()
    return ident


def _orphan(root, child_ident: dict, **files) -> str:
    """A job folder whose runner is gone and whose command has the identity `child_ident`; its id."""
    job_id = "20240101-000000-" + os.urandom(3).hex()
    folder = jobs.jobs_dir(root) / job_id
    folder.mkdir(parents=True)
    runner = _ended_identity()
    info = {"id": job_id, "kind": "train", "argv": ["train"], "out": str(root / "x"), "out_key": str(root / "x"),
            "created": time.time() - 3600, "cwd": str(root), "runner_pid": runner["pid"],
            "runner_create_time": runner["create_time"], "runner_start_ticks": runner.get("start_ticks")}
    (folder / "job.json").write_text(json.dumps(info))
    (folder / "child.json").write_text(json.dumps(child_ident))
    (folder / "started").touch()
    (folder / "log.txt").touch()
    for name, text in files.items():
        (folder / name).write_text(text)
    return job_id


def _backdate_cancel(root, job_id) -> None:
    """As if the cancel had been requested CANCEL_GRACE_S + 1 s ago."""
    past = time.time() - jobs.CANCEL_GRACE_S - 1
    os.utime(jobs.jobs_dir(root) / job_id / "cancelled", (past, past))


def _ignores_sigterm(pid: int) -> bool:
    """Whether the process `pid` has SIGTERM in its ignored set (Linux's /proc/PID/status SigIgn mask)."""
    with open(f"/proc/{pid}/status") as status:
        mask = next(line for line in status if line.startswith("SigIgn:")).split()[1]
    return bool(int(mask, 16) >> (signal.SIGTERM - 1) & 1)


@pytest.fixture
def stubborn():
    """A process that ignores SIGTERM, handed over only once the shell has set its trap and exec'd sleep."""
    proc = subprocess.Popen(STUBBORN)
    deadline = time.time() + 10
    while not (_ignores_sigterm(proc.pid) and psutil.Process(proc.pid).name() == "sleep"):
        assert time.time() < deadline, "the stubborn process did not start ignoring SIGTERM within 10 s"
        time.sleep(0.01)
    yield proc
    proc.kill()
    proc.wait()


def _gone(proc: subprocess.Popen, seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            return True
        time.sleep(0.1)
    return False


def test_a_cancelled_orphan_ignoring_sigterm_is_killed_after_the_grace_period_though_nobody_looks(tmp_path, stubborn):
    job = _orphan(tmp_path, jobs.process_identity(stubborn.pid))
    assert jobs.job_state(jobs.jobs_dir(tmp_path) / job) == "orphaned"
    jobs.cancel(tmp_path, job)
    assert not _gone(stubborn, 3)  # SIGTERM ignored; the grace period is not over
    _backdate_cancel(tmp_path, job)
    assert _gone(stubborn, 30)     # the watcher cancel started kills it; this test only polls the process
    assert stubborn.returncode == -signal.SIGKILL
    status = jobs.job_status(jobs.jobs_dir(tmp_path) / job)
    assert status["state"] == "cancelled"
    assert "did not stop within" in (jobs.jobs_dir(tmp_path) / job / "log.txt").read_text()


def test_reading_a_cancelled_orphans_status_after_the_grace_period_kills_it(tmp_path, stubborn):
    job = _orphan(tmp_path, jobs.process_identity(stubborn.pid), cancelled="")
    folder = jobs.jobs_dir(tmp_path) / job
    assert jobs.job_state(folder) == "orphaned" and not _gone(stubborn, 0.5)  # cancel requested just now
    _backdate_cancel(tmp_path, job)
    assert jobs.job_state(folder) == "cancelled" and _gone(stubborn, 5)


def test_the_overdue_kill_never_signals_a_process_that_reused_the_pid(tmp_path, stubborn):
    ident = jobs.process_identity(stubborn.pid)
    job = _orphan(tmp_path, dict(ident, create_time=ident["create_time"] - 5, start_ticks=None), cancelled="")
    _backdate_cancel(tmp_path, job)
    assert jobs.job_state(jobs.jobs_dir(tmp_path) / job) == "cancelled"  # not the job's: it is gone
    assert not _gone(stubborn, 1)


@pytest.mark.parametrize("last, state", [("done", "done"), ("epoch", "failed")])
def test_an_orphan_that_ended_reads_done_only_after_a_done_event(tmp_path, last, state):
    events = [{"event": "start", "time": 1.0}, {"event": "epoch", "time": 2.0}, {"event": last, "time": 3.0}]
    _orphan(tmp_path, _ended_identity(), **{"progress.jsonl": "".join(json.dumps(e) + "\n" for e in events)})
    [info] = jobs.list_jobs(tmp_path)
    assert info["state"] == state and "runner" in info["reason"], info["reason"]


# --- csrs dashboard --------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_sighup_to_csrs_dashboard_stops_its_streamlit_server(tmp_path):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "csrs_core", "dashboard", "--checkpoints", str(tmp_path),
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    servers = []
    try:
        assert _wait(lambda: _listening(port), 90), "the dashboard did not start"
        servers = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(30) == 128 + signal.SIGHUP
        assert _wait(lambda: not any(s.is_running() and s.status() != psutil.STATUS_ZOMBIE for s in servers), 15)
        assert not _listening(port), "the Streamlit server outlived `csrs dashboard`"
    finally:
        for p in [proc, *servers]:
            try:
                p.kill()
            except (psutil.Error, ProcessLookupError):
                pass
        proc.wait()


def test_a_server_that_ignores_sighup_is_killed_after_the_stop_grace(tmp_path):
    pid_file = tmp_path / "server.pid"
    code = ("import sys; from csrs_core.dashboard.launch import run_forwarding_signals; "
            "sys.exit(run_forwarding_signals(sys.argv[1:], None))")
    server = ["sh", "-c", f"trap '' HUP; echo $$ > {pid_file}; exec sleep 60"]
    proc = subprocess.Popen([sys.executable, "-c", code, *server])
    try:
        assert _wait(pid_file.exists, 30) and _wait(lambda: pid_file.read_text().strip(), 5)
        server_pid = int(pid_file.read_text())
        time.sleep(0.5)  # the server ignores SIGHUP from now on
        t0 = time.time()
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(30) == 128 + signal.SIGHUP
        assert time.time() - t0 >= 9 and not psutil.pid_exists(server_pid)
    finally:
        proc.kill()
        proc.wait()
