"""Background jobs (training, certification) that outlive the page or shell that started them.

A job is a folder `<root>/.jobs/<id>/` holding
  job.json       command, output, creation time and the runner's identity (runner_pid, runner_create_time)
  child.json     the command's identity (pid, create_time), written by the runner right after starting it
  log.txt        the command's stdout and stderr
  progress.jsonl the command's progress events
  started        the command was started
  cancelled      a cancel was requested (at the file's modification time)
  exit_code      the command's return code (negative: killed by that signal), written by the runner at the end

A small runner process (this module's main) starts the CLI command, forwards a cancel (SIGTERM) to it,
kills it when it still runs CANCEL_GRACE_S later, and records its exit code. When the runner has died,
cancel signals the command itself, and reading the job's status kills a command that still runs
CANCEL_GRACE_S after the cancel (a detached watcher started by cancel keeps reading it meanwhile).
A process counts as the job's only if a process with the recorded pid exists *and* started at the
recorded time (psutil create_time): a pid reused by another program is never mistaken for the job,
and never signalled.

States: queued, running, orphaned (the runner died, its command still runs; cancellable), done (exit code
0, or the runner died and the command's last progress event is "done"), failed (non-zero exit, or the
runner died and the command is gone without an exit code or a "done" event), cancelled (stopped
after a cancel request), interrupted (stopped by a signal nobody asked for through `cancel`), broken (the
job folder cannot be read; it blocks nothing)."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil

from csrs_core import CSRSError
from csrs_core.runtime.atomic import atomic_write_text
from csrs_core.runtime.locks import OutputBusyError, output_lock
from csrs_core.runtime.progress import read_progress

ACTIVE = ("queued", "running", "orphaned")  # still writing (or about to write) their output; cancellable
FINISHED = ("done", "failed", "cancelled", "interrupted")
CANCEL_GRACE_S = 60.0  # after a cancel's SIGTERM, a command still running this much later is SIGKILLed
INTERRUPT_CODES = (130, 143)  # the CLI's exit codes when stopped by SIGINT / SIGTERM (128 + signal)
CREATE_TIME_TOLERANCE = 0.01  # seconds; psutil's create_time has clock-tick (1/100 s) resolution
STARTING_GRACE_S = 10.0  # a job.json without a runner yet is "queued" this long after its creation
REQUIRED_FIELDS = {"id": str, "kind": str, "argv": list, "out": str, "created": (int, float)}


class JobError(CSRSError):
    pass


def jobs_dir(root) -> Path:
    return Path(root) / ".jobs"


# --- process identity ---------------------------------------------------------------------------------

def process_identity(pid: int) -> dict | None:
    """{"pid", "create_time"[, "start_ticks"]} of a live process, or None if it cannot be read.
    create_time is seconds since the epoch; start_ticks is seconds since boot (immune to clock steps)."""
    try:
        proc = psutil.Process(int(pid))
        ident = {"pid": int(pid), "create_time": proc.create_time()}
        try:
            ident["start_ticks"] = proc.create_time(monotonic=True)
        except TypeError:  # psutil < 7
            pass
        return ident
    except (psutil.Error, ValueError, TypeError):
        return None


def own_process(pid, create_time, start_ticks=None) -> psutil.Process | None:
    """The live process `pid` if it is the recorded one (same start time, within 0.01 s); else None.

    None when the pid is absent, the process is gone, a zombie (reaped if it is our child), or the pid now
    belongs to a process that started at another time (pid reuse). With start_ticks recorded, the
    boot-relative start is compared exactly and the epoch start loosely (2 s), so a wall-clock step
    does not disown a live job while a reboot still does."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 1 or create_time is None:
        return None
    try:
        proc = psutil.Process(pid)
        if start_ticks is not None:
            try:
                same = (abs(proc.create_time(monotonic=True) - float(start_ticks)) <= CREATE_TIME_TOLERANCE
                        and abs(proc.create_time() - float(create_time)) <= 2.0)
            except TypeError:  # psutil < 7
                same = abs(proc.create_time() - float(create_time)) <= CREATE_TIME_TOLERANCE
        else:
            same = abs(proc.create_time() - float(create_time)) <= CREATE_TIME_TOLERANCE
        if not same:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            _reap(pid)
            return None
        return proc
    except (psutil.Error, ValueError, TypeError, OverflowError):
        return None


def _reap(pid: int) -> None:
    """Collect the exit status of a finished child of this process (a runner started here), if it is one."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass


def _signal_own(pid, create_time, start_ticks=None, sig=signal.SIGTERM) -> bool:
    """Send `sig` to the process only if it is verifiably the recorded one; True if sent."""
    proc = own_process(pid, create_time, start_ticks)
    if proc is None:
        return False
    try:
        if not proc.is_running():  # psutil re-checks (pid, create_time) right before the signal
            return False
        proc.send_signal(sig)
        return True
    except psutil.Error:
        return False


# --- reading a job folder ----------------------------------------------------------------------------

class _Broken(Exception):
    """The job folder cannot be interpreted; the message says why."""


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise _Broken(f"{path.name} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Broken(f"{path.name} is unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise _Broken(f"{path.name} is not a JSON object")
    return data


def _read_job_json(folder: Path) -> dict:
    """job.json, checked for the fields every job has; raises _Broken otherwise."""
    info = _read_json(folder / "job.json")
    missing = [k for k in REQUIRED_FIELDS if k not in info]
    if missing:
        raise _Broken(f"job.json lacks {', '.join(missing)}")
    wrong = [k for k, t in REQUIRED_FIELDS.items() if not isinstance(info[k], t) or isinstance(info[k], bool)]
    if wrong:
        raise _Broken(f"job.json has invalid {', '.join(wrong)}")
    if not all(isinstance(a, str) for a in info["argv"]):
        raise _Broken("job.json has invalid argv")
    return info


def _read_exit_code(folder: Path) -> int | None:
    try:
        text = (folder / "exit_code").read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _Broken(f"exit_code is unreadable: {exc}") from None
    try:
        return int(text)
    except ValueError:
        raise _Broken(f"exit_code holds {text[:20]!r}, not a number") from None


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _finished_state(folder: Path, code: int, cancel_requested: bool) -> tuple[str, str, str | None]:
    """(state, reason, signal name) for a command that ended with return code `code`."""
    if code < 0:
        sig = _signal_name(-code)
        if cancel_requested:
            return "cancelled", f"cancelled: the command was stopped by {sig}", sig
        return "interrupted", f"killed by {sig} without a cancel request", sig
    if code in INTERRUPT_CODES:
        sig = _signal_name(code - 128)
        if cancel_requested:
            return "cancelled", f"cancelled: the command exited with code {code} ({sig})", sig
        return "interrupted", f"exit code {code} ({sig}) without a cancel request", sig
    if code == 0:
        events = read_progress(folder / "progress.jsonl")
        if events and events[-1].get("event") == "stopped":  # a graceful stop that still exited 0
            if cancel_requested:
                return "cancelled", "cancelled: the command stopped early on request", None
            return "interrupted", "the command stopped early without a cancel request", None
        return "done", "", None
    return "failed", f"exit code {code}", None


def job_status(folder) -> dict:
    """{"state", "reason", "exit_code", "signal"} of a job folder; never raises for a bad folder
    (state "broken", reason the error). "running"/"queued" only while the recorded runner verifiably
    lives; "orphaned" while the runner is gone but the recorded command verifiably lives. Reading an
    orphan whose cancel is older than CANCEL_GRACE_S kills its command (_kill_overdue)."""
    folder = Path(folder)
    try:
        return _status(folder)
    except _Broken as exc:
        return {"state": "broken", "reason": str(exc), "exit_code": None, "signal": None}


def _status(folder: Path) -> dict:
    info = _read_job_json(folder)
    cancel_requested = (folder / "cancelled").exists()

    def finished(code):
        state, reason, sig = _finished_state(folder, code, cancel_requested)
        if state == "cancelled" and not ((folder / "started").exists() or (folder / "child.json").exists()):
            reason = "cancelled before the command started"
        return {"state": state, "reason": reason, "exit_code": code, "signal": sig}

    code = _read_exit_code(folder)
    if code is not None:
        return finished(code)
    runner_pid = info.get("runner_pid")
    if own_process(runner_pid, info.get("runner_create_time"), info.get("runner_start_ticks")):
        started = (folder / "started").exists() or (folder / "child.json").exists()
        return {"state": "running" if started else "queued", "reason": "", "exit_code": None, "signal": None}
    code = _read_exit_code(folder)  # the runner may have recorded it and exited since the first look
    if code is not None:
        return finished(code)
    if "runner_pid" not in info and time.time() - info["created"] < STARTING_GRACE_S:
        return {"state": "queued", "reason": "starting", "exit_code": None, "signal": None}
    child = _read_child(folder)
    if child and own_process(child.get("pid"), child.get("create_time"), child.get("start_ticks")):
        if not (cancel_requested and _kill_overdue(folder, child)):
            return {"state": "orphaned", "exit_code": None, "signal": None,
                    "reason": f"the runner (pid {runner_pid}) died; its command (pid {child['pid']}) still runs"}
    events = read_progress(folder / "progress.jsonl") if child else []
    if events and events[-1].get("event") == "done":  # the command finished after its runner died
        return {"state": "done", "exit_code": None, "signal": None,
                "reason": f"the runner (pid {runner_pid}) died; its command finished (its last progress event "
                          "is 'done'), exit code unknown"}
    if "runner_pid" not in info:
        died = "the runner never started"
    else:
        died = f"runner died: the runner (pid {runner_pid}) is gone without recording an exit code"
    if child:
        died += f"; its command (pid {child.get('pid')}) is gone too, exit code unknown"
        if events:
            died += f" (its last progress event: {events[-1].get('event')!r})"
    if cancel_requested:
        return {"state": "cancelled", "reason": f"cancelled; {died}", "exit_code": None, "signal": None}
    return {"state": "failed", "reason": died, "exit_code": None, "signal": None}


def _kill_overdue(folder: Path, child: dict) -> bool:
    """SIGKILL the job's command, verified by its recorded pid and start time, when the cancel was
    requested more than CANCEL_GRACE_S ago (by the time of the `cancelled` file) and no runner is left
    to do it; True when it was killed and is gone."""
    ident = (child.get("pid"), child.get("create_time"), child.get("start_ticks"))
    try:
        overdue = time.time() - (folder / "cancelled").stat().st_mtime > CANCEL_GRACE_S
    except OSError:
        return False
    if not overdue or not _signal_own(*ident, sig=signal.SIGKILL):
        return False
    with contextlib.suppress(OSError), open(folder / "log.txt", "a") as log:
        log.write(f"job: the command did not stop within {CANCEL_GRACE_S:g} s of the cancel; killed it\n")
    deadline = time.monotonic() + 5.0
    while own_process(*ident) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    return own_process(*ident) is None


def _read_child(folder: Path) -> dict | None:
    try:
        return _read_json(folder / "child.json")
    except _Broken:
        return None


def job_state(folder) -> str:
    """The job's state (see the module docstring); "broken" for an unreadable folder."""
    return job_status(folder)["state"]


def job_info(folder) -> dict:
    """job.json plus state, reason, exit_code, signal, the progress events (last one as "progress") and
    the log's tail. A broken folder gives id (the folder name), kind "?", out "", created (its mtime),
    argv [] and error, so listings still work."""
    folder = Path(folder)
    status = job_status(folder)
    try:
        info = _read_job_json(folder)
    except _Broken:
        try:
            created = folder.stat().st_mtime
        except OSError:
            created = 0.0
        info = {"id": folder.name, "kind": "?", "out": "", "argv": [], "created": created}
    info.update(status)
    if status["state"] == "broken":
        info["error"] = status["reason"]
    events = read_progress(folder / "progress.jsonl")
    info["progress"] = events[-1] if events else None
    info["events"] = events
    try:
        info["log_tail"] = (folder / "log.txt").read_text(errors="replace")[-4000:]
    except OSError:
        info["log_tail"] = ""
    return info


def list_jobs(root) -> list[dict]:
    """Every job folder under root (broken ones included, as state "broken"), newest first."""
    base = jobs_dir(root)
    if not base.is_dir():
        return []
    folders = [p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted((job_info(p) for p in folders), key=lambda j: -float(j["created"]))


# --- starting, cancelling, waiting -------------------------------------------------------------------

def _out_key(out) -> str:
    key = str(Path(out).resolve())
    return key[:-3] if key.endswith(".pt") else key


def start_job(root, kind: str, args: list[str], out: str) -> str:
    """Start `python -m csrs_core <args> --progress ...` in the background; returns the job id.

    Refuses (JobError) while another active job (queued, running, orphaned) writes the same output;
    the check and the creation happen under a lock on the jobs folder, so of two simultaneous starts
    on one output exactly one succeeds. Broken job folders block nothing."""
    out_key = _out_key(out)
    base = jobs_dir(root)
    base.mkdir(parents=True, exist_ok=True)
    try:
        with output_lock(base / "start", timeout=30):
            for job in _active_jobs(root):
                if (job.get("out_key") or _out_key(job["out"])) == out_key:
                    raise JobError(f"job {job['id']} is already writing {out}; wait for it or cancel it")
            return _create_and_launch(base, kind, args, out, out_key)
    except OutputBusyError:
        raise JobError(f"another job is being started under {base}; try again") from None


def _active_jobs(root) -> list[dict]:
    return [j for j in list_jobs(root) if j["state"] in ACTIVE]


def _create_and_launch(base: Path, kind: str, args: list[str], out: str, out_key: str) -> str:
    job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    folder = base / job_id
    tmp = base / f".new-{job_id}"  # the folder appears complete (job.json inside) in one rename
    tmp.mkdir()
    argv = [*args, "--progress", str((folder / "progress.jsonl").resolve())]
    info = {"id": job_id, "kind": kind, "argv": argv, "out": str(out), "out_key": out_key,
            "created": time.time(), "cwd": os.getcwd()}
    atomic_write_text(tmp / "job.json", json.dumps(info))
    (tmp / "log.txt").touch()
    os.rename(tmp, folder)
    try:
        with open(folder / "log.txt", "ab") as log:
            runner = subprocess.Popen([sys.executable, "-m", "csrs_core.jobs", str(folder.resolve())],
                                      stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True, cwd=os.getcwd())
    except OSError as exc:
        with open(folder / "log.txt", "a") as log:
            log.write(f"job: could not start the runner: {exc}\n")
        atomic_write_text(folder / "exit_code", "127")
        raise JobError(f"could not start the job: {exc}") from None
    ident = process_identity(runner.pid) or {}  # our unreaped child: its pid cannot be reused yet
    info.update(runner_pid=runner.pid, runner_create_time=ident.get("create_time"),
                runner_start_ticks=ident.get("start_ticks"))
    atomic_write_text(folder / "job.json", json.dumps(info))
    return job_id


def cancel(root, job_id: str) -> None:
    """Ask an active job to stop: training stops at the next step (its last epoch checkpoint stays);
    certification stops at once (its partial counts stay and a rerun resumes).

    Signals (SIGTERM) only the job's own processes, verified by pid and start time: the runner, which
    forwards it to the command and kills the command if it still runs CANCEL_GRACE_S later, or, when
    the runner died, the orphaned command itself, with a detached watcher that reads the job's status
    until it ends (reading it kills the command CANCEL_GRACE_S after the cancel). A finished job is
    left alone; a broken one raises JobError."""
    folder = jobs_dir(root) / str(job_id)
    if not folder.is_dir():
        raise JobError(f"no job {job_id} under {root}")
    status = job_status(folder)
    if status["state"] == "broken":
        raise JobError(f"job {job_id} is broken ({status['reason']}); nothing can be cancelled: delete {folder}")
    if status["state"] not in ACTIVE:
        return
    with contextlib.suppress(FileExistsError):  # kept from the first request: the grace period runs from it
        (folder / "cancelled").touch(exist_ok=False)  # a runner yet to start its command will not start it
    info = _read_job_json_or_empty(folder)
    if _signal_own(info.get("runner_pid"), info.get("runner_create_time"), info.get("runner_start_ticks")):
        return
    child = _read_child(folder) or {}
    if _signal_own(child.get("pid"), child.get("create_time"), child.get("start_ticks")):
        _watch_in_background(folder)


def _watch_in_background(folder: Path) -> None:
    """Start `python -m csrs_core.jobs --watch FOLDER` detached (see _watch); when it cannot be
    started, the next look at the job's status escalates instead."""
    with contextlib.suppress(OSError):
        subprocess.Popen([sys.executable, "-m", "csrs_core.jobs", "--watch", str(folder.resolve())],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)


def _watch(folder: Path) -> int:
    """Read the job's status every second until it is no longer active, so that an orphaned command
    that ignores its cancel is killed CANCEL_GRACE_S after it (see _kill_overdue) though nobody looks;
    gives up CANCEL_GRACE_S + 60 s after starting."""
    deadline = time.monotonic() + CANCEL_GRACE_S + 60.0
    while job_state(folder) in ACTIVE and time.monotonic() < deadline:
        time.sleep(1.0)
    return 0


def _read_job_json_or_empty(folder: Path) -> dict:
    try:
        return _read_job_json(folder)
    except _Broken:
        return {}


def wait(root, job_id: str, timeout: float = 600.0) -> str:
    """Block until the job is no longer active (queued, running, orphaned); its final state."""
    folder = jobs_dir(root) / str(job_id)
    deadline = time.time() + timeout
    while True:
        state = job_state(folder)
        if state not in ACTIVE:
            return state
        if time.time() >= deadline:
            raise JobError(f"job {job_id} still {state} after {timeout} s")
        time.sleep(0.2)


# --- the runner --------------------------------------------------------------------------------------

def _run(folder: Path) -> int:
    """Runner: start the command, record its identity (child.json), forward SIGTERM to it, record its
    return code (exit_code) atomically. A cancel that arrives before the command starts prevents it."""
    folder = Path(folder)
    box: dict = {"cancel": False, "child": None, "cancelled_at": None}

    def on_term(signum, frame):
        box["cancel"] = True
        box["cancelled_at"] = box["cancelled_at"] or time.monotonic()
        child = box["child"]
        if child is not None and child.returncode is None:
            child.send_signal(signal.SIGTERM)  # our unreaped child: its pid is still its own
    signal.signal(signal.SIGTERM, on_term)

    info = json.loads((folder / "job.json").read_text())
    if box["cancel"] or (folder / "cancelled").exists():
        print("job: cancelled before the command started", file=sys.stderr, flush=True)
        atomic_write_text(folder / "exit_code", str(-signal.SIGTERM))
        return 1
    try:
        child = subprocess.Popen([sys.executable, "-m", "csrs_core", *info["argv"]], cwd=info["cwd"])
    except OSError as exc:
        print(f"job: could not start the command: {exc}", file=sys.stderr, flush=True)
        atomic_write_text(folder / "exit_code", "127")
        return 1
    box["child"] = child
    ident = process_identity(child.pid)
    if ident:
        atomic_write_text(folder / "child.json", json.dumps(ident))
    (folder / "started").touch()
    if box["cancel"] or (folder / "cancelled").exists():  # a cancel that raced with the start
        box["cancelled_at"] = box["cancelled_at"] or time.monotonic()
        child.send_signal(signal.SIGTERM)
    while (code := child.poll()) is None:  # a command that ignores the cancel is killed after the grace period
        if box["cancelled_at"] is not None and time.monotonic() - box["cancelled_at"] > CANCEL_GRACE_S:
            print(f"job: the command did not stop within {CANCEL_GRACE_S} s of the cancel; killing it",
                  file=sys.stderr, flush=True)
            child.kill()
        time.sleep(0.2)
    atomic_write_text(folder / "exit_code", str(code))
    if code < 0:
        print(f"job: the command was killed by {_signal_name(-code)}", file=sys.stderr, flush=True)
    elif code:
        print(f"job: the command exited with code {code}", file=sys.stderr, flush=True)
    return 0 if code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(_watch(Path(sys.argv[2])) if sys.argv[1] == "--watch" else _run(Path(sys.argv[1])))
