"""Starting the dashboard: folders fixed at launch, loopback only unless asked, no telemetry."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

LOOPBACK = ("127.0.0.1", "localhost", "::1")


FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # the signals that stop `csrs dashboard`
STOP_GRACE_S = 10  # how long the server may take to stop after a forwarded signal before it is killed


def app_path() -> Path:
    return Path(__file__).resolve().parent / "app.py"


def streamlit_command(address: str, port: int) -> list[str]:
    """The `streamlit run` command with the server settings that do not depend on a config file
    (the one in .streamlit/ is read only from the current folder)."""
    return [sys.executable, "-m", "streamlit", "run", str(app_path()),
            "--server.address", address, "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal",
            "--server.enableCORS", "true", "--server.enableXsrfProtection", "true",
            # no reload on file changes, and no full garbage collection after every rerun: it holds the
            # interpreter for a time that grows with what is loaded (torch, records) while the rerun's
            # last messages wait to be sent
            "--server.fileWatcherType", "none", "--runner.postScriptGC", "false"]


def launch(checkpoints: str | None, data: str | None, address: str = "127.0.0.1", port: int = 8501) -> int:
    """Run the dashboard in the foreground until it stops; its exit code."""
    env = dict(os.environ)
    if checkpoints:
        env["CSRS_CHECKPOINTS"] = str(Path(checkpoints).expanduser().resolve())
    if data:
        env["CSRS_DATA"] = str(Path(data).expanduser().resolve())
    env.pop("CSRS_EXPOSED", None)  # only this launch's own --address can turn the host guard off
    if address not in LOOPBACK:
        env["CSRS_EXPOSED"] = address
        print(f"warning: listening on {address}: anyone who can reach this address can use the dashboard",
              file=sys.stderr)
    return run_forwarding_signals(streamlit_command(address, port), env)


def run_forwarding_signals(command: list[str], env: dict) -> int:
    """Run `command` until it exits; SIGINT, SIGTERM and SIGHUP (a closed terminal) sent to this process
    are passed on to it (and it is killed when it has not stopped STOP_GRACE_S seconds later), so
    stopping `csrs dashboard` always stops its server. The server's exit code, or 128 + the first
    signal's number."""
    server = subprocess.Popen(command, env=env)
    received = []  # (signal number, when)

    def forward(signum, _frame):
        received.append((signum, time.monotonic()))
        if server.poll() is None:
            server.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        while server.poll() is None:
            if received and time.monotonic() - received[0][1] > STOP_GRACE_S:
                server.kill()
            time.sleep(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 + received[0][0] if received else server.returncode
