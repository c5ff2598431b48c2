"""Commands run from the repository root, stopped as a whole process group when they overrun."""
from __future__ import annotations

import os
import signal
import subprocess

from gpu_check_steps.framework import ROOT


def run_command(cmd: list[str], timeout: float, env: dict | None = None) -> tuple[int, str]:
    """(exit code, stdout+stderr) of `cmd` run from the repository root in its own process group,
    which is killed as a whole when it outlives `timeout` (exit code 124, what it printed so far
    kept) or the step is stopped (torchrun's workers included)."""
    env = {**os.environ, **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=max(timeout, 1.0))
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        _stop_group(proc)
        return 124, _rest(proc) + f"\n[stopped: still running after {max(timeout, 1.0):.0f} s]"
    except BaseException:
        _stop_group(proc)
        _rest(proc)
        raise


def _rest(proc) -> str:
    """What a stopped command printed; a stray grandchild holding the pipe open is not waited for."""
    try:
        return proc.communicate(timeout=5)[0] or ""
    except subprocess.TimeoutExpired:
        proc.stdout.close()
        return "[output pipe still held open by a leftover process]"


def _stop_group(proc) -> None:
    """SIGTERM to the command's process group (torchrun passes it on to its workers, which run in
    sessions of their own), then SIGKILL to whatever of the group is left after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        if wait:
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                pass
