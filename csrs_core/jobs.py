"""Background jobs (training, certification) that outlive the page or shell that started them.

A job is a folder `<root>/.jobs/<id>/` with job.json (command, output, state stamps), log.txt,
progress.jsonl and, when it ends, exit_code. A small runner process (this module's main) starts the
CLI command, forwards a cancel (SIGTERM) to it and records its exit code."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from csrs_core import CSRSError
from csrs_core.atomic import atomic_write_text
from csrs_core.progress import read_progress

ACTIVE = ("queued", "running")


class JobError(CSRSError):
    pass


def jobs_dir(root) -> Path:
    return Path(root) / ".jobs"


def _pid_alive(pid) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a zombie child of this process counts as finished
        done, _ = os.waitpid(int(pid), os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def job_state(folder: Path) -> str:
    info = json.loads((folder / "job.json").read_text())
    code_file = folder / "exit_code"
    if code_file.exists():
        if (folder / "cancelled").exists():
            return "cancelled"
        return "done" if code_file.read_text().strip() == "0" else "failed"
    if _pid_alive(info.get("runner_pid")):
        return "running" if (folder / "started").exists() else "queued"
    return "failed"  # the runner died without recording an exit code


def job_info(folder: Path) -> dict:
    """job.json plus state, the last progress event and the log's tail."""
    info = json.loads((folder / "job.json").read_text())
    info["state"] = job_state(folder)
    events = read_progress(folder / "progress.jsonl")
    info["progress"] = events[-1] if events else None
    info["events"] = events
    log = folder / "log.txt"
    info["log_tail"] = log.read_text()[-4000:] if log.exists() else ""
    return info


def list_jobs(root) -> list[dict]:
    """Every job under root, newest first."""
    folders = [p for p in jobs_dir(root).glob("*") if (p / "job.json").exists()]
    return sorted((job_info(p) for p in folders), key=lambda j: -j["created"])


def start_job(root, kind: str, args: list[str], out: str) -> str:
    """Start `python -m csrs_core <args> --progress ...` in the background; refuses a second active
    job writing the same output. Returns the job id."""
    out_key = str(Path(out).resolve())
    out_key = out_key[:-3] if out_key.endswith(".pt") else out_key
    for job in list_jobs(root):
        if job["state"] in ACTIVE and job.get("out_key") == out_key:
            raise JobError(f"job {job['id']} is already writing {out}; wait for it or cancel it")
    job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    folder = jobs_dir(root) / job_id
    folder.mkdir(parents=True)
    argv = [*args, "--progress", str((folder / "progress.jsonl").resolve())]
    info = {"id": job_id, "kind": kind, "argv": argv, "out": str(out), "out_key": out_key,
            "created": time.time(), "cwd": os.getcwd()}
    atomic_write_text(folder / "job.json", json.dumps(info))
    with open(folder / "log.txt", "ab") as log:
        runner = subprocess.Popen([sys.executable, "-m", "csrs_core.jobs", str(folder.resolve())],
                                  stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  start_new_session=True, cwd=os.getcwd())
    info["runner_pid"] = runner.pid
    atomic_write_text(folder / "job.json", json.dumps(info))
    return job_id


def cancel(root, job_id: str) -> None:
    """Ask a job to stop: training stops at the next step (its last epoch checkpoint stays);
    certification stops at once (its partial counts stay and a rerun resumes)."""
    folder = jobs_dir(root) / str(job_id)
    if not (folder / "job.json").exists():
        raise JobError(f"no job {job_id} under {root}")
    if job_state(folder) not in ACTIVE:
        return
    (folder / "cancelled").touch()
    pid = json.loads((folder / "job.json").read_text()).get("runner_pid")
    try:
        os.kill(int(pid), signal.SIGTERM)
    except (ProcessLookupError, TypeError):
        pass


def wait(root, job_id: str, timeout: float = 600.0) -> str:
    """Block until the job is no longer active; its final state."""
    folder = jobs_dir(root) / str(job_id)
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = job_state(folder)
        if state not in ACTIVE:
            return state
        time.sleep(0.2)
    raise JobError(f"job {job_id} still {state} after {timeout} s")


def _run(folder: Path) -> int:
    """Runner: start the command, forward SIGTERM to it, record its exit code atomically."""
    info = json.loads((folder / "job.json").read_text())
    child = subprocess.Popen([sys.executable, "-m", "csrs_core", *info["argv"]], cwd=info["cwd"])

    def forward(signum, frame):
        child.send_signal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, forward)
    (folder / "started").touch()
    code = child.wait()
    atomic_write_text(folder / "exit_code", str(code))
    return code


if __name__ == "__main__":
    raise SystemExit(_run(Path(sys.argv[1])))
